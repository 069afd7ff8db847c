"""examples/crypto_prices.yaml as written, against a local server replaying the eight APIs'
responses (tests/pg/fixtures/crypto/; Binance's two, ~2,000 pairs between them, are generated
below in the real shape), and examples/crypto_prices.sql's views over what it kept."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.specs import load_config
from tests.helpers import serve_locally, wait_until

ROOT = Path(__file__).parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "crypto"
JOBS = {  # job → the path it asks for, and the recorded answer
    "coingecko_simple_price": ("/api/v3/simple/price", "coingecko_simple_price.json"),
    "coingecko_markets": ("/api/v3/coins/markets", "coingecko_markets.json"),
    "coingecko_trending": ("/api/v3/search/trending", "coingecko_trending.json"),
    "coingecko_global": ("/api/v3/global", "coingecko_global.json"),
    "binance_prices": ("/api/v3/ticker/price", None),
    "binance_ticker_24h": ("/api/v3/ticker/24hr", None),
    "cryptocompare_pricemulti": ("/data/pricemulti", "cryptocompare_pricemulti.json"),
    "cryptocompare_top": ("/data/top/mktcapfull", "cryptocompare_top_mktcapfull.json"),
}
# Binance's base and quote assets: pairs are every base with every quote but itself.
BASES = (  # lines of names
    "BTC ETH BNB SOL XRP DOGE TON ADA AVAX SHIB DOT LINK TRX MATIC BCH NEAR LTC UNI ICP APT",
    "FET ETC XLM ATOM FIL ARB IMX OP INJ HBAR VET MKR GRT RNDR SUI TIA SEI STX AAVE ALGO EGLD",
    "SAND MANA AXS THETA FTM FLOW CHZ XTZ EOS KAVA NEO IOTA ZEC DASH COMP SNX CRV 1INCH ENJ BAT",
    "ZIL QTUM ONT WAVES ICX RVN ANKR CELO KSM LRC YFI SUSHI GALA APE PEPE WIF BONK FLOKI JUP PYTH",
)
QUOTES = ("USDT", "BTC", "ETH", "BNB", "FDUSD", "TRY", "EUR", "BRL", "TUSD", "USDC")
USD = {"BTC": 67190.01, "ETH": 3456.2, "BNB": 581.2, "SOL": 146.19, "XRP": 0.5218, "TRY": 0.031,
       "EUR": 1.08, "BRL": 0.187, "DOGE": 0.1582, "TON": 6.921, "ADA": 0.4419}  # fmt: skip
SECRETS = {"COINGECKO_API_KEY": "cg-key", "CRYPTOCOMPARE_API_KEY": "cc-key"}


def binance_24hr() -> list[dict[str, Any]]:
    """GET /api/v3/ticker/24hr with no symbol: every pair, 21 fields, decimals as strings; a pair
    that does not trade has zero prices and ids of -1."""
    rnd = random.Random(14)
    usd = dict(USD)  # and the other bases' prices, made up
    rows: list[dict[str, Any]] = []
    first_id = 3_512_345_678
    for base in (name for line in BASES for name in line.split()):
        for quote in QUOTES:
            if quote == base:
                continue
            base_usd = usd.get(base) or usd.setdefault(base, rnd.uniform(0.00001, 60))
            price = round(base_usd / usd.get(quote, 1.0), 8)
            trades = rnd.randrange(0, 8) and rnd.randrange(100, 3_000_000)
            change = round(price * rnd.uniform(-0.06, 0.06), 8) if trades else 0.0
            volume = round(rnd.uniform(10, 9e6), 8) if trades else 0.0
            rows.append(
                {
                    "symbol": base + quote,
                    "priceChange": f"{change:.8f}",
                    "priceChangePercent": f"{100 * change / price if trades else 0:.3f}",
                    "weightedAvgPrice": _dec(price * 1.001, trades),
                    "prevClosePrice": _dec(price - change, trades),
                    "lastPrice": _dec(price, trades),
                    "lastQty": _dec(rnd.uniform(0.001, 500), trades),
                    "bidPrice": _dec(price * 0.9999, trades),
                    "bidQty": _dec(rnd.uniform(0.1, 900), trades),
                    "askPrice": _dec(price * 1.0001, trades),
                    "askQty": _dec(rnd.uniform(0.1, 900), trades),
                    "openPrice": _dec(price - change, trades),
                    "highPrice": _dec(price * 1.03, trades),
                    "lowPrice": _dec(price * 0.97, trades),
                    "volume": f"{volume:.8f}",
                    "quoteVolume": f"{volume * price:.8f}",
                    "openTime": 1_718_098_887_115,
                    "closeTime": 1_718_185_287_115,
                    "firstId": first_id if trades else -1,
                    "lastId": first_id + trades - 1 if trades else -1,
                    "count": trades,
                }
            )
            first_id += trades
    return rows


def _dec(value: float, trades: int) -> str:
    return f"{value if trades else 0:.8f}"


def binance_prices(ticker: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """GET /api/v3/ticker/price with no symbol: every pair's last price."""
    return [{"symbol": t["symbol"], "price": t["lastPrice"]} for t in ticker]


def recorded() -> dict[str, bytes]:
    """Each API path's body, as the APIs send it (compact JSON)."""
    ticker = binance_24hr()
    bodies = {path: (FIXTURES / name).read_bytes() for path, name in JOBS.values() if name}
    compact: Callable[[Any], bytes] = lambda v: json.dumps(v, separators=(",", ":")).encode()  # noqa: E731
    bodies["/api/v3/ticker/24hr"] = compact(ticker)
    bodies["/api/v3/ticker/price"] = compact(binance_prices(ticker))
    return bodies


class Replay:
    """A local server answering each API path with its recording, noting each request."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.requests: dict[str, list[web.Request]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.setdefault(request.path, []).append(request)
        body = self.bodies.get(request.path)
        if body is None:
            return web.json_response({"error": "not found"}, status=404)
        # Each API's own content type: Binance's has no space before its charset.
        kind = "application/json;charset=UTF-8" if "ticker" in request.path else None
        headers = {"Content-Type": kind or "application/json; charset=utf-8"}
        return web.Response(body=body, headers=headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return app


@asynccontextmanager
async def example_daemon(tmp_path: Path, database_url: str, base: str) -> AsyncIterator[Daemon]:
    """The example file as it is, its state_dir (../var) under tmp_path, its URLs at ``base``."""
    config = tmp_path / "examples" / "crypto_prices.yaml"
    config.parent.mkdir()
    shutil.copy(ROOT / "examples" / "crypto_prices.yaml", config)
    environ = {
        "SCHEDULER_DATABASE_URL": database_url,
        "COINGECKO_URL": base,
        "BINANCE_URL": base,
        "CRYPTOCOMPARE_URL": base,
        **SECRETS,
    }
    daemon = Daemon(load_config(config, environ=environ))
    task = asyncio.create_task(daemon.run())
    try:

        async def synced() -> bool:
            if task.done():
                task.result()
            pool = daemon.recorder.pool
            return pool is not None and await pool.fetchval("SELECT count(*) FROM jobs") == 8

        await wait_until(synced)
        yield daemon
    finally:
        daemon.request_stop("test")
        assert await asyncio.wait_for(task, 30) == 0


def trigger_all(daemon: Daemon, names: Iterable[str]) -> None:
    """Fire the jobs now rather than at their next 10 s mark (a scheduled fire may come too)."""
    for name in names:
        daemon.trigger(daemon.config.job(name), None)


async def finished(dsn: str, names: Iterable[str], status: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        done = await conn.fetchval(
            "SELECT count(DISTINCT job_name) FROM executions"
            " WHERE job_name = ANY($1) AND status = $2",
            list(names),
            status,
        )
    finally:
        await conn.close()
    return bool(done == len(list(names)))


async def latest_success(conn: asyncpg.Connection, job: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT fire_id, attempt, result, result_bytes, error FROM executions"
        " WHERE job_name = $1 AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
        job,
    )
    assert row is not None, job
    return row


async def test_the_crypto_example_keeps_each_response_whole_and_a_row_per_coin(
    tmp_path: Path, database_url: str
) -> None:
    replay = Replay(recorded())
    async with (
        serve_locally(replay.app()) as base,
        example_daemon(tmp_path, database_url, base) as daemon,
    ):
        trigger_all(daemon, JOBS)
        await wait_until(lambda: finished(database_url, JOBS, "succeeded"), timeout=20)
    # The API keys travelled in the headers each API reads them from.
    [simple, *_] = replay.requests["/api/v3/simple/price"]
    assert simple.headers["x-cg-demo-api-key"] == "cg-key"
    assert simple.query["ids"] == "bitcoin,ethereum"
    [multi, *_] = replay.requests["/data/pricemulti"]
    assert multi.headers["authorization"] == "Apikey cc-key"

    ticker = binance_24hr()
    conn = await asyncpg.connect(database_url)
    try:
        # Every response kept whole: the very document served, its size in result_bytes.
        for job, (path, _) in JOBS.items():
            row = await latest_success(conn, job)
            body = replay.bodies[path]
            assert row["error"] is None, job
            assert row["result_bytes"] == len(body), job
            assert await conn.fetchval("SELECT $1::jsonb = $2::jsonb", row["result"], body.decode())

        # The ~400 KB one, queryable with jsonb operators.
        fire = (await latest_success(conn, "binance_ticker_24h"))["fire_id"]
        assert len(replay.bodies["/api/v3/ticker/24hr"]) > 400_000
        length, first, btc = await conn.fetchrow(
            "SELECT jsonb_array_length(result), result -> 0 ->> 'symbol',"
            " jsonb_path_query_first(result, '$[*] ? (@.symbol == \"BTCUSDT\").lastPrice') #>> '{}'"
            " FROM executions WHERE fire_id = $1 AND status = 'succeeded'",
            fire,
        )
        by_symbol = {t["symbol"]: t for t in ticker}
        assert (length, first, btc) == (len(ticker), "BTCUSDT", by_symbol["BTCUSDT"]["lastPrice"])

        # One row per coin, keyed, in the order of the response.
        usdt = [t["symbol"] for t in ticker if t["symbol"].endswith("USDT")]
        expected_keys = {
            "coingecko_simple_price": ["bitcoin", "ethereum"],
            "coingecko_markets": [c["id"] for c in _fixture("coingecko_markets.json")],
            "coingecko_trending": [
                c["item"]["id"] for c in _fixture("coingecko_trending.json")["coins"]
            ],
            "coingecko_global": [
                *("total_market_cap_usd", "total_volume_usd", "btc_dominance_pct"),
                *("eth_dominance_pct", "market_cap_change_24h_pct"),
            ],
            "binance_prices": usdt,
            "binance_ticker_24h": usdt,
            "cryptocompare_pricemulti": ["BTC", "ETH", "BNB"],
            "cryptocompare_top": [
                c["CoinInfo"]["Name"] for c in _fixture("cryptocompare_top_mktcapfull.json")["Data"]
            ],
        }
        for job, keys in expected_keys.items():
            row = await latest_success(conn, job)
            items = await conn.fetch(
                "SELECT idx, key, item FROM job_items WHERE fire_id = $1 AND attempt = $2"
                " ORDER BY idx",
                row["fire_id"],
                row["attempt"],
            )
            assert [r["key"] for r in items] == keys, job
            assert [r["idx"] for r in items] == list(range(len(keys))), job
        btc_row = await conn.fetchval(
            "SELECT item FROM job_items WHERE fire_id = $1 AND key = 'BTCUSDT'", fire
        )
        assert json.loads(btc_row) == by_symbol["BTCUSDT"]  # the element whole, all 21 fields

        # The views of examples/crypto_prices.sql, and the README's queries over it all.
        await conn.execute((ROOT / "examples" / "crypto_prices.sql").read_text())
        try:
            await _check_views(conn, ticker)
            for query in readme_queries():
                await conn.fetch(query)
        finally:  # the database is reused by the next test: only its tables are emptied
            await conn.execute(
                "DROP VIEW crypto_prices_per_minute, crypto_latest_prices, crypto_prices"
            )
    finally:
        await conn.close()


async def _check_views(conn: asyncpg.Connection, ticker: list[dict[str, Any]]) -> None:
    latest = {
        (r["source"], r["key"]): (r["symbol"], float(r["price_usd"]))
        for r in await conn.fetch("SELECT source, key, symbol, price_usd FROM crypto_latest_prices")
    }
    trading = [t for t in ticker if t["symbol"].endswith("USDT") and float(t["lastPrice"]) > 0]
    counts: dict[str, int] = {}
    for source, _ in latest:
        counts[source] = counts.get(source, 0) + 1
    assert counts == {
        "coingecko_simple_price": 2,
        "coingecko_markets": 10,
        "coingecko_trending": 7,
        "binance_prices": len(trading),
        "binance_ticker_24h": len(trading),
        "cryptocompare_pricemulti": 3,
        "cryptocompare_top": 10,
    }
    assert latest["coingecko_simple_price", "bitcoin"] == ("BTC", 67187.34)
    assert latest["coingecko_markets", "ethereum"] == ("ETH", 3456.78)
    assert latest["coingecko_trending", "pepe"] == ("PEPE", 0.0000123)
    btcusdt = next(t for t in trading if t["symbol"] == "BTCUSDT")
    assert latest["binance_ticker_24h", "BTCUSDT"] == ("BTC", float(btcusdt["lastPrice"]))
    assert latest["binance_prices", "BTCUSDT"] == ("BTC", float(btcusdt["lastPrice"]))
    assert latest["cryptocompare_pricemulti", "BNB"] == ("BNB", 581.3)
    assert latest["cryptocompare_top", "BTC"] == ("BTC", 67201.5)

    # The fires may straddle a minute: BTC's rows of the last day together.
    rows = await conn.fetch(
        "SELECT sources, low, high FROM crypto_prices_per_minute WHERE symbol = 'BTC'"
    )
    sources = {s for r in rows for s in r["sources"]}
    assert sources == {
        *("coingecko_simple_price", "coingecko_markets", "binance_prices", "binance_ticker_24h"),
        *("cryptocompare_pricemulti", "cryptocompare_top"),
    }
    prices = [67187.34, 67201.5, float(btcusdt["lastPrice"])]
    assert min(float(r["low"]) for r in rows) == min(prices)
    assert max(float(r["high"]) for r in rows) == max(prices)


async def test_an_error_answered_with_http_200_fails_the_attempt_and_is_retried(
    tmp_path: Path, database_url: str
) -> None:
    # CryptoCompare's rate limit: HTTP 200, {"Response": "Error", ..., "Data": {}}.
    error = (FIXTURES / "cryptocompare_error.json").read_bytes()
    replay = Replay({"/data/top/mktcapfull": error, "/data/pricemulti": error})
    jobs = ("cryptocompare_top", "cryptocompare_pricemulti")
    async with (
        serve_locally(replay.app()) as base,
        example_daemon(tmp_path, database_url, base) as daemon,
    ):
        trigger_all(daemon, jobs)
        await wait_until(lambda: retried(database_url, jobs), timeout=20)
    conn = await asyncpg.connect(database_url)
    try:
        # The fires with a second attempt (a scheduled fire may have run in place of the manual
        # one: `overlap: skip`).
        rows = await conn.fetch(
            "SELECT fire_id, job_name, attempt, status, error, result ->> 'Response' AS response"
            " FROM executions WHERE fire_id IN (SELECT fire_id FROM executions"
            "   WHERE job_name = ANY($1) AND attempt = 2 AND status = 'failed')"
            " ORDER BY attempt",
            list(jobs),
        )
        fires: dict[Any, list[tuple[str, int, str]]] = {}
        for r in rows:
            fires.setdefault(r["fire_id"], []).append((r["job_name"], r["attempt"], r["status"]))
        assert {attempts[0][0] for attempts in fires.values()} == set(jobs)
        for attempts in fires.values():
            assert [(a, status) for _, a, status in attempts] == [(1, "failed"), (2, "failed")]
        # The error reply is kept, so it can be read; no coin row came of it.
        assert {r["response"] for r in rows} == {"Error"}
        assert all(r["error"].startswith("items not found:") for r in rows)
        top = {r["error"] for r in rows if r["job_name"] == "cryptocompare_top"}
        assert top == {"items not found: `Data` found an object, not a list"}
        assert await conn.fetchval("SELECT count(*) FROM job_items") == 0
    finally:
        await conn.close()


async def retried(dsn: str, jobs: Iterable[str]) -> bool:
    """Whether each of ``jobs`` has a fire with a second attempt."""
    sql = (
        "SELECT count(DISTINCT job_name) FROM executions WHERE job_name = ANY($1)"
        " AND attempt = 2 AND status = 'failed'"
    )
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(sql, list(jobs)) == len(list(jobs)))
    finally:
        await conn.close()


def readme_queries() -> list[str]:
    """The statements of the SQL block in the README's crypto walkthrough."""
    readme = (ROOT / "README.md").read_text()
    walkthrough = readme[readme.index("### Walkthrough: a crypto price pipeline") :]
    block = walkthrough[walkthrough.index("```sql\n") + 7 :]
    block = block[: block.index("```")]
    code = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    queries = [q.strip() for q in code.split(";") if q.strip()]
    assert len(queries) == 6
    return queries


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())
