"""Retention under load: what pruning a backlog costs the writes going on meanwhile.

    python -m bench.retention --runs 3 --backlog 1000000     # prints one JSON object

Against a throwaway embedded PostgreSQL. A writer does what the recorder does at ~10k rows/s:
every 200 ms one ``store.write_executions`` batch (COPY into the staging tables, merge) of 1,000
attempts, each with one item (1,000 executions rows + 1,000 job_items rows). Each run:
1. fills a backlog with SQL: ``--backlog`` executions finished 40 days ago (with a result), half
   as many 10 days ago with a result, ``--backlog`` job_items 40 days old (then VACUUM ANALYZE);
2. "without": the writer alone for ``--seconds``;
3. "with": the writer while the daemon's Pruner (operation/retention.py: defaults 30d/7d/30d)
   removes the backlog in one round, batch ``--batch`` rows, ``--pause`` s between batches.
Each figure is the median over the runs: write-batch latency p50/p99/max (ms) in each phase,
and rows pruned per second by kind (rows removed / time that kind took).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
import uvloop

from scheduler_daemon.operation.retention import Pruner
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Items, Status
from scheduler_daemon.specs.results import RetentionSpec
from scheduler_daemon.storage import schema, store
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from scheduler_daemon.timing.clock import SystemClock

TICK = 0.2
SAMPLE = 0.01
PER_TICK = 1000  # attempts per batch, each with one item: 2 rows
RESULT = json.dumps({"coin": "btc", "price": 43_210.5, "volume": 1.2e9, "pad": "x" * 150})

_FILL_EXECUTIONS = """
INSERT INTO executions (fire_id, job_name, scheduled_at, attempt, trigger, status, started_at,
                        finished_at, duration_ms, node, result, result_bytes)
SELECT gen_random_uuid(), 'j' || (g % 1000), t, 1, 'schedule', 'succeeded', t,
       t + interval '1 second', 1000, 'bench', $3::text::jsonb, length($3::text)
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - make_interval(days => $2) + g * interval '10 ms' AS t) AS at
"""
_FILL_ITEMS = """
INSERT INTO job_items (job_name, fire_id, attempt, scheduled_at, idx, key, item)
SELECT 'j' || (g % 1000), gen_random_uuid(), 1, t, 0, 'btc', '{"price": 43210.5}'::jsonb
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - make_interval(days => $2) + g * interval '10 ms' AS t) AS at
"""


def batch() -> list[ExecutionRecord]:
    now = datetime.now(UTC)
    item = Items('[{"price": 43210.5}]', 1, ("btc",))
    return [
        ExecutionRecord(
            uuid.uuid4(), f"j{i % 1000:04d}", now, 1, FireKind.SCHEDULE, Status.SUCCEEDED,
            now, now, 0.5, 0.1, node="bench", result=RESULT, result_bytes=len(RESULT), items=item,
        )
        for i in range(PER_TICK)
    ]  # fmt: skip


async def fill(dsn: str, backlog: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_FILL_EXECUTIONS, backlog, 41, RESULT)
        await conn.execute(_FILL_EXECUTIONS, backlog // 2, 11, RESULT)
        await conn.execute(_FILL_ITEMS, backlog, 41)
        await conn.execute("VACUUM ANALYZE executions")
        await conn.execute("VACUUM ANALYZE job_items")
    finally:
        await conn.close()


async def write_until(
    dsn: str, done: asyncio.Event, seconds: float | None
) -> tuple[list[float], int, int]:
    """Write a batch every TICK until ``done`` (or ``seconds``): each batch's latency (ms), and
    how many of the samples taken every SAMPLE seconds found the writer waiting for a lock."""
    conn = await asyncpg.connect(dsn)
    latencies: list[float] = []
    began = time.monotonic()
    writing = asyncio.Event()
    waits = asyncio.create_task(lock_waits(dsn, conn.get_server_pid(), writing))
    try:
        while not done.is_set() and (seconds is None or time.monotonic() - began < seconds):
            records = batch()
            start = time.monotonic()
            await store.write_executions(conn, records)
            latencies.append((time.monotonic() - start) * 1000)
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - start)))
    finally:
        writing.set()
        samples, waiting = await waits
        await conn.close()
    return latencies, samples, waiting


async def lock_waits(dsn: str, pid: int, stop: asyncio.Event) -> tuple[int, int]:
    """(samples, samples where ``pid`` waited for a heavyweight lock: a row or table lock)."""
    conn = await asyncpg.connect(dsn)
    samples = waiting = 0
    try:
        while not stop.is_set():
            event = await conn.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
            )
            samples += 1
            waiting += event == "Lock"
            await asyncio.sleep(SAMPLE)
    finally:
        await conn.close()
    return samples, waiting


def percentiles(phase: tuple[list[float], int, int]) -> dict[str, float]:
    values, samples, waiting = phase
    ordered = sorted(values)
    return {
        "lock_wait_samples": waiting,
        "samples": samples,
        "p50": round(ordered[len(ordered) // 2], 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
        "batches": len(ordered),
    }


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, command_timeout=store.COMMAND_TIMEOUT)
    try:
        yield conn
    finally:
        await conn.close()


async def one_run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    await fill(dsn, args.backlog)
    alone = await write_until(dsn, asyncio.Event(), args.seconds)
    pruner = Pruner(
        clock=SystemClock(),
        connect=lambda: connection(dsn),
        ready=lambda: True,
        settings=lambda: RetentionSpec(),
        batch=args.batch,
        pause=args.pause,
        rest=args.rest,
    )
    done = asyncio.Event()
    writer = asyncio.create_task(write_until(dsn, done, None))
    began = time.monotonic()
    removed = await pruner.prune()
    assert removed is not None
    kinds = pruner.kind_seconds
    seconds = time.monotonic() - began
    done.set()
    during = await writer
    return {
        "without": percentiles(alone),
        "with": percentiles(during),
        "round_s": round(seconds, 1),
        "rows": {kind: rows for kind, (rows, _) in removed.items()},
        "mb": {kind: round(size / 1e6, 1) for kind, (_, size) in removed.items()},
        "rows_per_s": {kind: round(removed[kind][0] / kinds[kind]) for kind in removed},
    }


async def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    await schema.upgrade(conn)
    await conn.close()
    runs = []
    for n in range(args.runs):
        runs.append(await one_run(dsn, args))
        print(f"run {n + 1}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
        conn = await asyncpg.connect(dsn)
        await conn.execute("TRUNCATE executions, job_items")
        await conn.close()
    return {
        "backlog": args.backlog,
        "batch": args.batch,
        "pause_s": args.pause,
        "rest": args.rest,
        "runs": args.runs,
        "write_ms_without": _median_of(runs, "without"),
        "write_ms_with": _median_of(runs, "with"),
        "round_s": statistics.median(r["round_s"] for r in runs),
        "rows": runs[0]["rows"],
        "mb": runs[0]["mb"],
        "rows_per_s": {
            kind: statistics.median(r["rows_per_s"][kind] for r in runs)
            for kind in runs[0]["rows_per_s"]
        },
    }


def _median_of(runs: list[dict[str, Any]], phase: str) -> dict[str, float]:
    return {key: statistics.median(r[phase][key] for r in runs) for key in runs[0][phase]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20, help="the writer alone, per run")
    parser.add_argument("--batch", type=int, default=5000, help="rows per pruning statement")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between batches")
    parser.add_argument("--rest", type=float, default=1.0, help="x a batch's time, after it")
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: JSON
    with tempfile.TemporaryDirectory(prefix="sd-retention-") as tmp:
        server = None
        dsn = args.database_url
        if not dsn:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            dsn = server.start()
        try:
            result = uvloop.run(run(dsn, args))
        finally:
            if server is not None:
                server.remove()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
