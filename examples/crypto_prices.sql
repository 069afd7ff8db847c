-- Summary views over what examples/crypto_prices.yaml keeps (README: "## Examples").
-- Create them once the daemon has created its schema (it does at its first start):
--   psql "$SCHEDULER_DATABASE_URL" -f examples/crypto_prices.sql
-- Safe to run again (after an upgrade, or an edit here): the views are dropped and made anew.
-- They are yours, not the daemon's: before `scheduler-daemon db upgrade`, if it says a view
-- stands in its way, drop them (the DROP line below) and run this file again after.
BEGIN;
DROP VIEW IF EXISTS crypto_prices_per_minute, crypto_latest_prices, crypto_prices;

-- One row per price: every coin row of the seven price jobs, its symbol and its price in USD
-- (Binance's USDT pairs taken as USD). Rows keep job_items' fire_id/attempt/scheduled_at, so a
-- filter on scheduled_at uses job_items' (job_name, scheduled_at) index.
CREATE VIEW crypto_prices AS
SELECT source, symbol, key, price_usd, scheduled_at, fire_id, attempt
FROM (
    SELECT
        i.job_name AS source,
        CASE i.job_name
            WHEN 'binance_prices' THEN left(i.key, -4)          -- BTCUSDT → BTC
            WHEN 'binance_ticker_24h' THEN left(i.key, -4)
            WHEN 'cryptocompare_pricemulti' THEN i.key
            WHEN 'cryptocompare_top' THEN i.key
            ELSE upper(i.item ->> 'symbol')                     -- CoinGecko: lower case
        END AS symbol,
        i.key,
        CASE i.job_name
            WHEN 'coingecko_simple_price' THEN i.item ->> 'usd'
            WHEN 'coingecko_markets' THEN i.item ->> 'current_price'
            WHEN 'coingecko_trending' THEN i.item #>> '{data,price}'
            WHEN 'binance_prices' THEN i.item ->> 'price'       -- a string: "67190.01000000"
            WHEN 'binance_ticker_24h' THEN i.item ->> 'lastPrice'
            WHEN 'cryptocompare_pricemulti' THEN i.item ->> 'usd'
            WHEN 'cryptocompare_top' THEN i.item #>> '{RAW,USD,PRICE}'
        END AS price_text,
        i.scheduled_at, i.fire_id, i.attempt
    FROM job_items AS i
    WHERE i.job_name IN ('coingecko_simple_price', 'coingecko_markets', 'coingecko_trending',
                         'binance_prices', 'binance_ticker_24h',
                         'cryptocompare_pricemulti', 'cryptocompare_top')
) AS raw
-- Not a number (an API that changed a field to "$0.01"): left out, never an error for the whole
-- query. Binance lists pairs that do not trade with a price of "0.00000000": left out too.
CROSS JOIN LATERAL (
    SELECT CASE WHEN price_text ~ '^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$'
                THEN price_text::numeric END AS price_usd
) AS parsed
WHERE price_usd > 0;

-- The latest price of each coin from each source: the rows of each job's latest fire.
CREATE VIEW crypto_latest_prices AS
SELECT p.source, p.symbol, p.key, p.price_usd, p.scheduled_at
FROM (VALUES ('coingecko_simple_price'), ('coingecko_markets'), ('coingecko_trending'),
             ('binance_prices'), ('binance_ticker_24h'),
             ('cryptocompare_pricemulti'), ('cryptocompare_top')) AS s (source)
CROSS JOIN LATERAL (
    SELECT fire_id, attempt FROM job_items
    WHERE job_name = s.source
    ORDER BY scheduled_at DESC, id DESC
    LIMIT 1
) AS latest
JOIN crypto_prices AS p
    ON p.source = s.source AND p.fire_id = latest.fire_id AND p.attempt = latest.attempt;

-- Per minute and coin over the last day: how many sources quoted it, and the range of prices
-- (spread_pct: (high - low) / average; sources disagreeing, or the price moving in the minute).
CREATE VIEW crypto_prices_per_minute AS
SELECT
    date_trunc('minute', scheduled_at) AS minute,
    symbol,
    array_agg(DISTINCT source ORDER BY source) AS sources,
    count(*) AS samples,
    min(price_usd) AS low,
    round(avg(price_usd), 8) AS average,
    max(price_usd) AS high,
    round(100 * (max(price_usd) - min(price_usd)) / avg(price_usd), 3) AS spread_pct
FROM crypto_prices
WHERE scheduled_at > now() - interval '1 day'
GROUP BY 1, 2;
COMMIT;
