"""PostgreSQL access: schema, job sync, batched execution writes and the queries built on them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from scheduler_daemon.config import JobSpec
from scheduler_daemon.records import ExecutionRecord

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
_SCHEMA_LOCK = 0x5C4ED  # advisory lock id: concurrent starts apply the schema one at a time

COLUMNS = (
    "fire_id",
    "job_name",
    "scheduled_at",
    "attempt",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "drift_ms",
    "duration_ms",
    "http_status",
    "exit_code",
    "error",
    "output",
    "node",
)
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS executions_stage (
    fire_id uuid, job_name text, scheduled_at timestamptz, attempt integer, trigger text,
    status text, started_at timestamptz, finished_at timestamptz, drift_ms double precision,
    duration_ms double precision, http_status integer, exit_code integer, error text,
    output text, node text
) ON COMMIT DELETE ROWS
"""
_COLS = ", ".join(COLUMNS)
# A final row replaces a `running` placeholder; any other duplicate (a replay) is ignored.
_MERGE = f"""
INSERT INTO executions ({_COLS})
SELECT {_COLS} FROM executions_stage
ON CONFLICT (fire_id, attempt) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[5:])}
WHERE executions.status = 'running'
"""
_TOUCH_JOBS = """
UPDATE jobs SET last_run_at = GREATEST(jobs.last_run_at, s.last_run),
                last_scheduled_at = GREATEST(jobs.last_scheduled_at, s.last_scheduled)
FROM (SELECT job_name, max(started_at) AS last_run,
             max(scheduled_at) FILTER (WHERE trigger <> 'manual') AS last_scheduled
      FROM executions_stage GROUP BY job_name) AS s
WHERE jobs.name = s.job_name
"""
ABANDONED_ERROR = "the daemon stopped before this attempt finished (crash, kill -9 or power loss)"


def schema_sql() -> str:
    packaged = resources.files("scheduler_daemon").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # Editable install / source checkout: the file lives at the top of the repository.
    return (Path(__file__).resolve().parent.parent / "schema.sql").read_text(encoding="utf-8")


async def connect(dsn: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
    )
    assert pool is not None
    return pool


async def apply_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(schema_sql())


async def sync_jobs(
    pool: asyncpg.Pool, jobs: Sequence[JobSpec], next_runs: Mapping[str, datetime | None]
) -> None:
    """Make ``jobs`` mirror the configuration: upsert every job, delete the ones removed."""
    rows = [
        (job.name, json.dumps(job.redacted(), default=str), job.enabled, next_runs.get(job.name))
        for job in jobs
    ]
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            """INSERT INTO jobs (name, spec, enabled, next_run_at, updated_at)
               VALUES ($1, $2::jsonb, $3, $4, now())
               ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, enabled = EXCLUDED.enabled,
                   next_run_at = EXCLUDED.next_run_at, updated_at = now()""",
            rows,
        )
        await conn.execute(
            "DELETE FROM jobs WHERE NOT (name = ANY($1::text[]))", [job.name for job in jobs]
        )


async def write_executions(conn: asyncpg.Connection, records: Sequence[ExecutionRecord]) -> int:
    """Write a batch in one transaction (COPY, then merge); replaying a batch is harmless."""
    latest: dict[tuple[Any, int], ExecutionRecord] = {}
    for rec in records:
        latest[(rec.fire_id, rec.attempt)] = rec  # a later record of an attempt supersedes
    async with conn.transaction():
        await conn.execute(_STAGE_DDL)
        await conn.copy_records_to_table(
            "executions_stage", records=[_row(r) for r in latest.values()], columns=COLUMNS
        )
        status = await conn.execute(_MERGE)
        await conn.execute(_TOUCH_JOBS)
    return int(status.split()[-1])


def _row(rec: ExecutionRecord) -> tuple[Any, ...]:
    return (
        rec.fire_id,
        rec.job_name,
        rec.scheduled_at,
        rec.attempt,
        str(rec.trigger),
        str(rec.status),
        rec.started_at,
        rec.finished_at,
        rec.drift_ms,
        rec.duration_ms,
        rec.http_status,
        rec.exit_code,
        _text(rec.error),
        _text(rec.output),
        rec.node,
    )


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL bytes; a command's output may.
    return value.replace("\x00", "\ufffd") if value else value


async def fetch_executions(
    pool: asyncpg.Pool, *, job: str | None = None, limit: int = 100
) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            """SELECT * FROM executions WHERE ($1::text IS NULL OR job_name = $1)
           ORDER BY scheduled_at DESC, attempt DESC LIMIT $2""",
            job,
            limit,
        )
    )


async def abandon_running(pool: asyncpg.Pool, node: str) -> list[asyncpg.Record]:
    """Mark this node's attempts left `running` by a previous process as `abandoned`."""
    return list(
        await pool.fetch(
            """UPDATE executions SET status = 'abandoned', error = $2,
               finished_at = COALESCE(finished_at, now())
           WHERE status = 'running' AND node = $1
           RETURNING fire_id, job_name, scheduled_at, attempt, trigger""",
            node,
            ABANDONED_ERROR,
        )
    )


async def last_scheduled(pool: asyncpg.Pool) -> dict[str, datetime]:
    """The newest scheduled instant each job handled (run, skipped or missed)."""
    rows = await pool.fetch(
        "SELECT name, last_scheduled_at FROM jobs WHERE last_scheduled_at IS NOT NULL"
    )
    return {r["name"]: r["last_scheduled_at"] for r in rows}
