"""Retention: old executions, results and items removed in batches, on the clock, by one replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.errors import DatabaseUnavailable
from scheduler_daemon.operation import retention as loop
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.retention import FIRST_AFTER, RETRY_AFTER, Pruner
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Items, Status
from scheduler_daemon.specs import load_config
from scheduler_daemon.specs.results import RetentionSpec
from scheduler_daemon.storage import store
from scheduler_daemon.storage.retention import RETENTION_LOCK
from tests.helpers import FakeClock, query_value, wait_until

DAY = 86400.0
Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


def connector(dsn: str) -> Connect:
    @asynccontextmanager
    async def connect() -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(dsn)
        try:
            yield conn
        finally:
            await conn.close()

    return connect


def settings(**ages: object) -> RetentionSpec:
    return RetentionSpec.model_validate({"executions": "30d", "results": "7d", **ages})


def attempt(
    clock: FakeClock, days_ago: float, *, job: str = "j", items: int = 2, **kw: Any
) -> ExecutionRecord:
    """A succeeded attempt (with a result and ``items`` items) that finished ``days_ago``."""
    at = datetime.fromtimestamp(clock.time() - days_ago * DAY, UTC)
    fields: dict[str, Any] = dict(
        fire_id=uuid.uuid4(), job_name=job, scheduled_at=at, attempt=1,
        trigger=FireKind.SCHEDULE, status=Status.SUCCEEDED, started_at=at,
        finished_at=at + timedelta(seconds=1), drift_ms=0.0, duration_ms=1000.0,
        result=json.dumps({"price": 1.5, "pad": "x" * 100}), result_bytes=130,
        items=Items(json.dumps([{"i": i} for i in range(items)]), items,
                    tuple(f"k{i}" for i in range(items))) if items else None,
    )  # fmt: skip
    fields.update(kw)
    return ExecutionRecord(**fields)


async def write(dsn: str, *records: ExecutionRecord) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await store.write_executions(conn, records)
    finally:
        await conn.close()


async def ages(dsn: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def pruner(dsn: str, clock: FakeClock, spec: RetentionSpec, **kw: Any) -> Pruner:
    return Pruner(
        clock=clock, connect=connector(dsn), ready=lambda: True, settings=lambda: spec, **kw
    )


async def test_old_history_goes_and_recent_history_stays(database_url: str) -> None:
    clock = FakeClock()
    old, week_old, recent = attempt(clock, 40), attempt(clock, 10), attempt(clock, 1)
    running = attempt(
        clock, 40, status=Status.RUNNING, finished_at=None, result=None, result_bytes=None, items=0
    )
    await write(database_url, old, week_old, recent, running)

    with capture_logs() as logs:
        removed = await pruner(database_url, clock, settings(items="30d")).prune()

    assert removed is not None
    assert removed["executions"][0] == 1 and removed["executions"][1] > 0
    assert removed["results"][0] == 1 and removed["results"][1] > 0
    assert removed["items"][0] == 2 and removed["items"][1] > 0
    rows = await query_value(
        database_url,
        "SELECT json_agg(json_build_array(fire_id, status, result IS NOT NULL, result_bytes)"
        " ORDER BY id) FROM executions",
    )
    assert json.loads(rows) == [
        [str(week_old.fire_id), "succeeded", False, 130],  # result cleared, the row kept
        [str(recent.fire_id), "succeeded", True, 130],
        [str(running.fire_id), "running", False, None],  # never removed while running
    ]
    items = await ages(database_url, "SELECT DISTINCT fire_id FROM job_items")
    assert sorted(items) == sorted([week_old.fire_id, recent.fire_id])
    [done] = [e for e in logs if e["event"] == "history_pruned"]
    assert (done["executions_rows"], done["results_rows"], done["items_rows"]) == (1, 1, 2)
    assert done["executions_bytes"] == removed["executions"][1]


async def test_zero_keeps_that_kind_forever(database_url: str) -> None:
    clock = FakeClock()
    ancient = attempt(clock, 3650)
    await write(database_url, ancient)

    removed = await pruner(
        database_url, clock, settings(executions=0, results="7d", items=0)
    ).prune()

    assert removed == {"results": (1, removed["results"][1])}  # only results were asked for
    assert await query_value(database_url, "SELECT count(*) FROM executions") == 1
    assert await query_value(database_url, "SELECT count(*) FROM job_items") == 2
    assert await query_value(database_url, "SELECT result FROM executions") is None
    nothing = pruner(database_url, clock, settings(executions=0, results=0, items=0))
    assert await nothing.prune() == {}


async def test_a_backlog_goes_in_batches_and_writes_go_on_between_them(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 0.0)  # a progress line after every batch
    clock = FakeClock()
    backlog = [attempt(clock, 60 + n / 100, job=f"j{n % 3}") for n in range(35)]
    await write(database_url, *backlog)
    work = pruner(database_url, clock, settings(items="30d"), batch=10, pause=1.0)

    with capture_logs() as logs:
        round_ = asyncio.create_task(work.prune())
        await wait_until(lambda: _pruner_pid(database_url))  # the first batch is done: it waits
        await clock.settle()
        assert await query_value(database_url, "SELECT count(*) FROM executions") == 25
        # Between two batches the pruner holds no lock on a table: the recorder's next batch,
        # with its items, goes straight in.
        pid = await _pruner_pid(database_url)
        held = await query_value(
            database_url,
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'relation'",
            pid,
        )
        assert held == 0
        await asyncio.wait_for(write(database_url, attempt(clock, 0), attempt(clock, 0)), 10)
        while not round_.done():
            await clock.advance(1.0)
            await asyncio.sleep(0.01)
        removed = round_.result()

    assert removed is not None and removed["executions"][0] == 35 and removed["items"][0] == 70
    assert await query_value(database_url, "SELECT count(*) FROM executions") == 2
    assert await query_value(database_url, "SELECT count(*) FROM job_items") == 4
    [done] = [e for e in logs if e["event"] == "history_pruned"]
    # executions 10+10+10+5; results: none left (their rows went); items 10 x7 then 0
    assert done["batches"] == 4 + 1 + 8
    progress = [e for e in logs if e["event"] == "history_pruning"]
    assert [e["executions_rows"] for e in progress][:3] == [10, 20, 30]
    assert progress[-1]["kind"] == "items" and progress[-1]["items_rows"] == 70


async def _pruner_pid(dsn: str) -> int | None:
    pid = await query_value(
        dsn,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted",
        RETENTION_LOCK,
    )
    return int(pid) if pid is not None else None


async def test_only_one_replica_prunes_at_a_time(database_url: str) -> None:
    clock = FakeClock()
    await write(database_url, *(attempt(clock, 60 + n / 100) for n in range(5)))
    first = pruner(database_url, clock, settings(items="30d"), batch=2, pause=1.0)
    second = pruner(database_url, clock, settings(items="30d"), batch=2, pause=0.0)

    round_ = asyncio.create_task(first.prune())
    await wait_until(lambda: _pruner_pid(database_url))
    with capture_logs() as logs:
        assert await second.prune() is None  # the other one is pruning: this round is skipped
    assert [e["event"] for e in logs] == ["history_prune_skipped"]
    while not round_.done():
        await clock.advance(1.0)
        await asyncio.sleep(0.01)
    assert round_.result() is not None
    assert await _pruner_pid(database_url) is None  # released at the end of the round
    assert await second.prune() == {"executions": (0, 0), "results": (0, 0), "items": (0, 0)}


async def test_the_loop_prunes_on_the_clock_and_survives_failures(database_url: str) -> None:
    clock = FakeClock()
    spec = settings(items="30d", every="10m")
    ready = False
    broken = False
    working = connector(database_url)

    @asynccontextmanager
    async def connect() -> AsyncIterator[asyncpg.Connection]:
        if broken:
            raise DatabaseUnavailable("cannot connect to the test database: refused")
        async with working() as conn:
            yield conn

    work = Pruner(clock=clock, connect=connect, ready=lambda: ready, settings=lambda: spec)
    await write(database_url, attempt(clock, 40))

    async def pruned() -> bool:
        return await query_value(database_url, "SELECT count(*) FROM executions") == 0

    with capture_logs() as logs:
        task = asyncio.create_task(work.run())
        try:
            await clock.advance(FIRST_AFTER)  # the database is away: no round
            assert work.totals().last_round_at is None
            ready = True
            await clock.advance(RETRY_AFTER)
            await wait_until(pruned)
            await wait_until(lambda: _is(work.totals().last_round_at is not None))
            await write(database_url, attempt(clock, 40))
            broken = True
            await clock.advance(spec.every)  # this round fails: logged, the loop goes on
            await wait_until(lambda: _is(any(e["event"] == "history_prune_failed" for e in logs)))
            broken = False
            await clock.advance(spec.every - 1)
            assert not await pruned()
            await clock.advance(1)
            await wait_until(pruned)
            # Executions go first in a round, items last: the round ends when its items are.
            await wait_until(lambda: _is(work.totals().rows["items"] == 4))
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # its connection closed before the test's database is dropped
    [failed] = [e for e in logs if e["event"] == "history_prune_failed"]
    assert "refused" in failed["error"]
    assert work.totals().rows == {"executions": 2, "results": 0, "items": 4}


async def _is(value: bool) -> bool:
    return value


async def test_metrics_count_what_was_pruned(database_url: str) -> None:
    clock = FakeClock()
    await write(database_url, attempt(clock, 40, items=3), attempt(clock, 10, items=0))
    metrics = Metrics()
    work = pruner(database_url, clock, settings(items="30d"))
    metrics.pruned = work.totals
    text = metrics.exposition().decode()
    assert 'scheduler_history_pruned_rows_total{kind="executions"} 0.0' in text
    assert "scheduler_history_prune_last_timestamp_seconds" not in text  # no round yet

    removed = await work.prune()

    assert removed is not None
    text = metrics.exposition().decode()
    for kind, rows in (("executions", 1), ("results", 1), ("items", 3)):
        assert f'scheduler_history_pruned_rows_total{{kind="{kind}"}} {rows}.0' in text
        size = removed[kind][1]
        assert size > 0
        assert f'scheduler_history_pruned_bytes_total{{kind="{kind}"}} {size}.0' in text
    assert "scheduler_history_prune_last_timestamp_seconds 1.7672256e+09" in text  # clock.time()
    assert "scheduler_history_prune_last_duration_seconds" in text


async def test_the_daemon_prunes_what_its_config_says(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "FIRST_AFTER", 0.05)
    monkeypatch.setattr(loop, "RETRY_AFTER", 0.05)  # until the start's recovery is done
    now = FakeClock(datetime.now(UTC).timestamp())
    await write(database_url, attempt(now, 3, items=1), attempt(now, 1, items=1))
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{database_url}"}}\nstate_dir: ./state\n'
        "retention: {executions: 2d, results: 0, items: 0}\n"
        'jobs:\n  ping: {every: 1h, command: ["true"]}\n'
    )
    daemon = Daemon(load_config(config))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: _is_value(database_url, "SELECT count(*) FROM executions", 1), timeout=30
        )
    finally:
        daemon.request_stop("test")
        assert await asyncio.wait_for(task, 30) == 0
    assert await query_value(database_url, "SELECT count(*) FROM job_items") == 2


async def _is_value(dsn: str, sql: str, expected: object) -> bool:
    return bool(await query_value(dsn, sql) == expected)
