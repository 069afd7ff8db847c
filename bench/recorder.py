"""Recorder throughput: rows/s into PostgreSQL and how far behind it falls at each load.

    python -m bench.recorder --rates 5000 20000 50000 --seconds 10     # prints one JSON object

Both sides get the same execution records, produced every 10 ms at a steady rate on the same
loop, against the same throwaway embedded PostgreSQL:
- ours: scheduler_daemon's Recorder (batches, COPY into a staging table, merge);
- baseline: one INSERT per record through an asyncpg pool of 10 — what an APScheduler
  EVENT_JOB_EXECUTED listener that stores executions does (APScheduler itself records none).
Lag is the most rows waiting at any moment; drain is how long the last rows took after the load
stopped. "burst" hands each side 100,000 rows at once and times until all are committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog
import uvloop

from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status
from scheduler_daemon.storage import schema, store
from scheduler_daemon.storage.database import Database
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from scheduler_daemon.storage.recorder import Recorder

TICK = 0.01
_PLACEHOLDERS = ", ".join(f"${i + 1}" for i in range(len(store.COLUMNS)))
_INSERT = f"INSERT INTO executions ({', '.join(store.COLUMNS)}) VALUES ({_PLACEHOLDERS})"


def make_records(n: int) -> list[ExecutionRecord]:
    now = datetime.now(UTC)
    return [
        ExecutionRecord(
            uuid.uuid4(), f"j{i % 1000:04d}", now, 1, FireKind.SCHEDULE, Status.SUCCEEDED,
            now, now, 0.5, 0.1, node="bench",
        )
        for i in range(n)
    ]  # fmt: skip


class PerRowInsert:
    """The baseline: each record is its own INSERT, started at once, on a pool of 10."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._tasks: set[asyncio.Task[None]] = set()
        self.written = 0

    def record(self, rec: ExecutionRecord) -> None:
        task = asyncio.ensure_future(self._insert(rec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _insert(self, rec: ExecutionRecord) -> None:
        await self._pool.execute(_INSERT, *store._row(rec))
        self.written += 1

    @property
    def pending(self) -> int:
        return len(self._tasks)


async def drive(
    record: Callable[[ExecutionRecord], None],
    pending: Callable[[], int],
    records: list[ExecutionRecord],
    rate: float | None,
) -> dict[str, float]:
    """Feed ``records`` at ``rate`` per second (None: all at once); time until none is pending."""
    began = time.monotonic()
    most = 0
    if rate is None:
        for rec in records:
            record(rec)
    else:
        per_tick = max(1, round(rate * TICK))
        for start in range(0, len(records), per_tick):
            for rec in records[start : start + per_tick]:
                record(rec)
            most = max(most, pending())
            next_tick = began + (start // per_tick + 1) * TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    fed = time.monotonic()
    while pending():
        most = max(most, pending())
        await asyncio.sleep(TICK)
    done = time.monotonic()
    return {
        "rows": len(records),
        "rows_per_s": round(len(records) / (done - began)),
        "max_lag_rows": most,
        "drain_s": round(done - fed, 3),
    }


def _pending(sink: Recorder | PerRowInsert) -> Callable[[], int]:
    return lambda: sink.pending


async def run(
    dsn: str, rates: list[int], seconds: float, burst: int, batch_size: int
) -> dict[str, object]:
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    await schema.upgrade(pool)
    results: dict[str, object] = {}
    for label, rate in [*((f"{r}/s", r) for r in rates), (f"burst {burst}", None)]:
        n = burst if rate is None else int(rate * seconds)
        recorder = Recorder(database=Database(dsn=dsn), batch_size=batch_size)
        await recorder.start()
        ours = await drive(recorder.record, _pending(recorder), make_records(n), rate)
        await recorder.close(30)
        await recorder.database.close()
        baseline = PerRowInsert(pool)
        theirs = await drive(baseline.record, _pending(baseline), make_records(n), rate)
        results[label] = {"ours": ours, "per_row_insert": theirs}
        await pool.execute("TRUNCATE executions")
    await pool.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="the recorder's")
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: JSON
    with tempfile.TemporaryDirectory(prefix="sd-recorder-") as tmp:
        server = None
        dsn = args.database_url
        if not dsn:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            dsn = server.start()
        try:
            result = uvloop.run(run(dsn, args.rates, args.seconds, args.burst, args.batch_size))
        finally:
            if server is not None:
                server.remove()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
