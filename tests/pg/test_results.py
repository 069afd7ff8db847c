"""Results as data on a running daemon: JSON results kept whole, items, chained jobs.

A daemon runs in the test's loop (real PostgreSQL, its admin API on 127.0.0.1) against an HTTP
server here; each job is started through the API (`trigger`), and the test reads the rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from bench.target import tickers
from tests.helpers import (
    Running,
    free_port,
    listening,
    next_event,
    running_daemon,
    serve_locally,
    wait_until,
)

# A Binance /api/v3/ticker/24hr-shaped list: 900 tickers, ~400 KB (the benchmarks' own).
TICKERS = json.loads(tickers(900))
PRICES = {"data": [{"symbol": "BTC", "price": "97000.5"}, {"symbol": "ETH", "price": "3600.25"}]}


class Target:
    def __init__(self) -> None:
        self.posted: list[Any] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/ticker/24hr":
            return web.Response(body=json.dumps(TICKERS).encode(), content_type="application/json")
        if request.path == "/prices":
            return web.json_response(PRICES)
        if request.path == "/store":
            self.posted.append(await request.json())
            return web.json_response({"stored": True}, status=201)
        return web.Response(status=404)


CONFIG = """\
database: {{url: "{dsn}"}}
state_dir: ./state
admin: {{listen: "{listen}", token: "${{ADMIN_TOKEN}}"}}
jobs:
  tickers:
    every: 1h
    http: {{url: "{target}/ticker/24hr"}}
    items: {{path: "[*]", key: symbol}}
  wrong_path:
    every: 1h
    http: {{url: "{target}/prices"}}
    items: {{path: "coins", key: symbol}}
  wrong_path_required:
    every: 1h
    http: {{url: "{target}/prices"}}
    items: {{path: "coins", required: true}}
    retry: {{attempts: 2, delay: 10ms}}
  fetch:
    every: 1h
    http: {{url: "{target}/prices"}}
    then: [summarise]
  summarise:
    every: 1h
    enabled: false
    python: tests.e2e_jobs:summarise
    then: [store]
  store:
    every: 1h
    enabled: false
    http: {{url: "{target}/store", method: POST, json: {{summary: "$result", source: prices}}}}
"""


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Running, Target]]:
    target = Target()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    async with serve_locally(app) as url:
        listen = f"127.0.0.1:{free_port()}"
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(dsn=database_url, listen=listen, target=url))
        async with running_daemon(config, f"http://{listen}", jobs=6) as running:
            yield running, target


async def _final(dsn: str, job: str, attempts: int = 1) -> list[asyncpg.Record]:
    """The job's final rows, once ``attempts`` of them are written."""
    query = "SELECT * FROM executions WHERE job_name = $1 AND status <> 'running' ORDER BY attempt"
    conn = await asyncpg.connect(dsn)
    try:

        async def written() -> bool:
            return len(await conn.fetch(query, job)) >= attempts

        await wait_until(written, timeout=15)
        return list(await conn.fetch(query, job))
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_a_400kb_json_response_is_kept_whole_and_queryable_with_items_by_key(
    daemon: tuple[Running, Target], database_url: str
) -> None:
    running, _ = daemon
    body = json.dumps(TICKERS).encode()
    assert 350_000 < len(body) < 450_000
    async with listening(database_url) as events:
        assert (await running.call("POST", "/jobs/tickers/trigger"))[0] == 202
        event = await next_event(events, job="tickers")
    # Its event (a NOTIFY: under 8,000 bytes) says there is a result, without it.
    assert event["result_bytes"] == len(body) and "result" not in event
    [row] = await _final(database_url, "tickers")
    assert row["status"] == "succeeded" and row["error"] is None
    assert row["result_bytes"] == len(body)
    assert row["output"].endswith(f"[truncated: {len(body)} bytes total]")  # output: the head
    [found] = await _fetch(
        database_url,
        """SELECT jsonb_array_length(result) AS n, result -> 0 ->> 'symbol' AS first,
                  (SELECT count(*) FROM jsonb_array_elements(result) e
                   WHERE (e ->> 'count')::int >= 100600) AS busy
           FROM executions WHERE id = $1""",
        row["id"],
    )
    assert (found["n"], found["first"], found["busy"]) == (900, "C00000USDT", 300)
    items = await _fetch(
        database_url,
        "SELECT idx, key, item, scheduled_at FROM job_items WHERE fire_id = $1 ORDER BY idx",
        row["fire_id"],
    )
    assert [(r["idx"], r["key"]) for r in items] == [
        (i, t["symbol"]) for i, t in enumerate(TICKERS)
    ]
    assert json.loads(items[42]["item"]) == TICKERS[42]
    assert {r["scheduled_at"] for r in items} == {row["scheduled_at"]}


async def test_a_path_that_finds_no_list_records_its_own_error_and_retries_only_if_required(
    daemon: tuple[Running, Target], database_url: str
) -> None:
    running, _ = daemon
    for job in ("wrong_path", "wrong_path_required"):
        assert (await running.call("POST", f"/jobs/{job}/trigger"))[0] == 202
    [loose] = await _final(database_url, "wrong_path")
    assert loose["status"] == "succeeded" and json.loads(loose["result"]) == PRICES
    assert loose["error"] == "items not found: `coins` found nothing, not a list"
    strict = await _final(database_url, "wrong_path_required", attempts=2)
    assert [(r["attempt"], r["status"]) for r in strict] == [(1, "failed"), (2, "failed")]
    assert all(r["error"] == loose["error"] for r in strict)
    assert await _fetch(database_url, "SELECT * FROM job_items") == []


async def test_a_chain_of_three_jobs_passes_each_result_to_the_next(
    daemon: tuple[Running, Target], database_url: str
) -> None:
    running, target = daemon
    assert (await running.call("POST", "/jobs/fetch/trigger"))[0] == 202
    [stored] = await _final(database_url, "store")
    [summarised] = await _final(database_url, "summarise")
    [fetched] = await _final(database_url, "fetch")
    summary = {"currency": "USD", "coins": 2, "top": "BTC"}
    assert target.posted == [{"summary": summary, "source": "prices"}]
    assert json.loads(summarised["result"]) == summary
    assert json.loads(stored["result"]) == {"stored": True}
    assert [r["trigger"] for r in (fetched, summarised, stored)] == ["manual", "chain", "chain"]
    assert summarised["parent_fire_id"] == fetched["fire_id"]
    assert stored["parent_fire_id"] == summarised["fire_id"]
    assert fetched["parent_fire_id"] is None
    assert all(r["status"] == "succeeded" for r in (fetched, summarised, stored))
