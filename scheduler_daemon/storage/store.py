"""PostgreSQL access: the pool, job sync, batched execution writes (the schema: schema.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage import rows

# Where statements run: one connection (plain or from a pool), or a pool.
Conn: TypeAlias = "asyncpg.Connection | asyncpg.pool.PoolConnectionProxy"  # one, for a transaction
Db: TypeAlias = "asyncpg.Pool | Conn"


@contextlib.asynccontextmanager
async def transaction(db: Db) -> AsyncIterator[Conn]:
    """A transaction on ``db``, or on a connection taken from it when it is a pool."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


# A row as asyncpg returns it, or one written out by hand (tests, the API's stand-ins).
Row: TypeAlias = "asyncpg.Record | Mapping[str, Any]"

# What a query raises when the database is away, slow or restarting (not a bug, not bad data).
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
CONNECT_TIMEOUT = 5.0
SERVER_SETTINGS = {"application_name": "scheduler_daemon"}  # who we are, in pg_stat_activity
COMMAND_TIMEOUT = 30.0

COLUMNS = rows.COLUMNS
_STAGE_DDL = rows.staging_ddl("executions_stage")
_COLS = ", ".join(COLUMNS)
# Listeners get one JSON event per attempt that reached a final status (README: Events).
EVENTS_CHANNEL = "scheduler_executions"
# NOTIFY payloads must stay under 8000 bytes: the error is cut, the output and result left out
# (`result_bytes` says there is one: GET /executions/{id} has it).
_EVENT_ERROR_CHARS = 2000
_NOT_IN_EVENTS = ("output", "result")


def _event_fields() -> str:
    """The event's keys and values: every column but ``_NOT_IN_EVENTS``; ``job_name`` is called
    ``job``."""
    keys = {"job_name": "job"}
    values = {"error": f"left(error, {_EVENT_ERROR_CHARS})"}
    fields = [f"'{keys.get(c, c)}', {values.get(c, c)}" for c in COLUMNS if c not in _NOT_IN_EVENTS]
    return ", ".join(["'id', id", *fields])  # the row's id: GET /executions/{id}, the run page


_EVENT_FIELDS = _event_fields()


def _merge_sql(*, announce: bool) -> str:
    """A final row replaces a `running` placeholder; any other duplicate (a replay) is ignored,
    and only rows actually written are announced, so a replayed batch publishes nothing twice.
    With ``announce`` off the `announced` CTE selects nothing: the statement keeps its shape."""
    announced_rows = "status <> 'running'" if announce else "false"
    return f"""
WITH merged AS (
    INSERT INTO executions ({_COLS})
    SELECT {_COLS} FROM executions_stage
    ON CONFLICT (fire_id, attempt) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in rows.OUTCOME)}
    WHERE executions.status = 'running'
    RETURNING id, {_COLS}
), announced AS (
    SELECT pg_notify('{EVENTS_CHANNEL}', json_build_object({_EVENT_FIELDS})::text)
    FROM merged WHERE {announced_rows}
)
SELECT (SELECT count(*) FROM merged) AS written, (SELECT count(*) FROM announced) AS announced
"""


_MERGE = _merge_sql(announce=True)
_MERGE_QUIETLY = _merge_sql(announce=False)
# Every statement that updates several rows of `jobs` locks them first in name order, so two
# writers (the recorder, next-run publishing, a config sync, other replicas) wait for each other
# instead of deadlocking: an UPDATE ... FROM locks rows in whatever order its plan visits them.
LOCK_JOBS_IN_ORDER = "SELECT FROM jobs WHERE {where} ORDER BY name FOR NO KEY UPDATE"
SYNC_CHUNK = 5000  # jobs rendered and upserted at a time by sync_jobs
STAGE_CHUNK = 250  # attempts' rows per COPY (_stage)
_LOCK_TOUCHED_JOBS = LOCK_JOBS_IN_ORDER.format(
    where="name IN (SELECT job_name FROM executions_stage)"
)
_TOUCH_JOBS = """
UPDATE jobs SET last_run_at = GREATEST(jobs.last_run_at, s.last_run),
                last_scheduled_at = GREATEST(jobs.last_scheduled_at, s.last_scheduled)
FROM (SELECT job_name, max(started_at) AS last_run,
             max(scheduled_at) FILTER (WHERE trigger <> 'manual') AS last_scheduled
      FROM executions_stage GROUP BY job_name) AS s
WHERE jobs.name = s.job_name
"""
# An attempt's items are staged as one row (its elements as one JSON array, their keys as an
# array) and split here: ~5x less work for the daemon than a row per element.
_ITEMS_STAGE = ("job_name", "fire_id", "attempt", "scheduled_at", "keys", "items")
_ITEMS_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS job_items_stage (job_name text, fire_id uuid, attempt"
    " integer, scheduled_at timestamptz, keys text[], items jsonb) ON COMMIT DELETE ROWS"
)
_MERGE_ITEMS = """
INSERT INTO job_items (job_name, fire_id, attempt, scheduled_at, idx, key, item)
SELECT s.job_name, s.fire_id, s.attempt, s.scheduled_at, e.n - 1, e.key, e.item
FROM job_items_stage s,
     -- Side by side (NULL keys when there are none); `s.keys[n]` would detoast the array n times.
     ROWS FROM (jsonb_array_elements(s.items), unnest(s.keys)) WITH ORDINALITY AS e(item, key, n)
ORDER BY s.fire_id, s.attempt, e.n  -- ids in element order (the API pages by them)
ON CONFLICT (fire_id, attempt, idx) DO NOTHING"""
ABANDONED_ERROR = "the daemon stopped before this attempt finished (crash, kill -9 or power loss)"


async def connect(dsn: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A small pool: the recorder writes on one connection, queries use the others."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings=SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


def job_spec(job: JobSpec) -> dict[str, Any]:
    """What ``jobs.spec`` holds: the job as configured, secrets redacted."""
    return job.redacted()


async def sync_jobs(
    pool: asyncpg.Pool,
    jobs: Sequence[JobSpec],
    next_runs: Mapping[str, datetime | None],
    *,
    removed: Sequence[str] | None = None,
) -> None:
    """Make ``jobs`` mirror the config file: upsert every job, mark the file's others removed
    (the API's jobs' rows are written by the API: job_store.py).

    A removed job's row stays, marked ``removed_at`` (its executions stay too): a job that comes
    back (a config switched back, a job renamed back) keeps its last instants and catches up.
    With ``removed`` given, ``jobs`` is only what changed (a reload): those are upserted and the
    ``removed`` names marked, and every other row is left as it is.
    """
    names = [job.name for job in jobs]
    # In chunks, each its own transaction: a start with 100k jobs held 64 MB of rendered rows at
    # once (kept by the process after), and the rows' locks for the whole upsert.
    for at in range(0, len(jobs), SYNC_CHUNK):
        # Rendering thousands of specs takes long enough to delay fires: off the event loop.
        rows = await asyncio.to_thread(_job_rows, jobs[at : at + SYNC_CHUNK], next_runs)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                LOCK_JOBS_IN_ORDER.format(where="name = ANY($1::text[])"), [r[0] for r in rows]
            )
            await conn.executemany(
                # A live API job's row is the API's (a daemon never schedules a file job of its
                # name); a removed one's is taken over.
                """INSERT INTO jobs (name, spec, enabled, next_run_at, updated_at)
                   VALUES ($1, $2::jsonb, $3, $4, now())
                   ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec,
                       enabled = EXCLUDED.enabled, next_run_at = EXCLUDED.next_run_at,
                       updated_at = now(), removed_at = NULL, source = 'config', definition = NULL
                   WHERE jobs.source = 'config' OR jobs.removed_at IS NOT NULL""",
                rows,
            )
    if removed is not None and not removed:
        return
    # The rows marked removed: the file's others (a start), or the names given (a reload).
    marked_names = names if removed is None else list(removed)
    others = "NOT (name = ANY($1::text[]))" if removed is None else "name = ANY($1::text[])"
    marked = f"removed_at IS NULL AND source = 'config' AND {others}"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_JOBS_IN_ORDER.format(where=marked), marked_names)
        await conn.execute(
            "UPDATE jobs SET removed_at = now(), next_run_at = NULL, updated_at = now() "
            f"WHERE {marked}",
            marked_names,
        )


def _job_rows(
    jobs: Sequence[JobSpec], next_runs: Mapping[str, datetime | None]
) -> list[tuple[str, str, bool, datetime | None]]:
    return [
        (job.name, json.dumps(job_spec(job), default=str), job.enabled, next_runs.get(job.name))
        for job in jobs
    ]


async def write_executions(
    conn: Conn, records: Sequence[ExecutionRecord], *, events: bool = True
) -> int:
    """Write a batch in one transaction (COPY, then merge); replaying a batch is harmless.
    ``events``: NOTIFY each final attempt written (off: COPY is ~20% faster)."""
    latest = _last_per_attempt(records)
    if not latest:
        return 0
    async with conn.transaction():
        await _stage(conn, latest.values())
        written = await conn.fetchval(_MERGE if events else _MERGE_QUIETLY)
        await conn.execute(_LOCK_TOUCHED_JOBS)
        await conn.execute(_TOUCH_JOBS)
        items = _item_rows(latest.values())
        if items:
            await conn.execute(_ITEMS_STAGE_DDL)
            await conn.copy_records_to_table("job_items_stage", records=items, columns=_ITEMS_STAGE)
            await conn.execute(_MERGE_ITEMS)
    return int(written)


def _item_rows(records: Iterable[ExecutionRecord]) -> list[tuple[Any, ...]]:
    return [
        (rec.job_name, rec.fire_id, rec.attempt, rec.scheduled_at, rec.items.keys, rec.items.array)
        for rec in records
        if rec.items is not None
    ]


def _last_per_attempt(records: Sequence[ExecutionRecord]) -> dict[tuple[Any, int], ExecutionRecord]:
    # One row per (fire_id, attempt): ON CONFLICT cannot touch a row twice in one statement. A
    # later record of an attempt supersedes an earlier one, but `running` never replaces a final
    # status (the same rule the database applies across batches).
    latest: dict[tuple[Any, int], ExecutionRecord] = {}
    for rec in records:
        key = (rec.fire_id, rec.attempt)
        seen = latest.get(key)
        if seen is None or seen.status == Status.RUNNING or rec.status != Status.RUNNING:
            latest[key] = rec
    return latest


async def _stage(conn: Conn, records: Collection[ExecutionRecord]) -> None:
    """Fill this transaction's staging table with ``records`` (COPY: the fast way in), STAGE_CHUNK
    rows per COPY: asyncpg encodes all of a COPY's rows in one go on the event loop (~20 µs a
    row here), and a 1,000-row batch held every fire back for 20-26 ms."""
    await conn.execute(_STAGE_DDL)
    pending = list(records)
    for at in range(0, len(pending), STAGE_CHUNK):
        staged = [_row(r) for r in pending[at : at + STAGE_CHUNK]]
        await conn.copy_records_to_table("executions_stage", records=staged, columns=COLUMNS)


def _row(rec: ExecutionRecord) -> tuple[Any, ...]:
    if _has_nul(rec.error) or _has_nul(rec.output):
        rec = dataclasses.replace(rec, error=_text(rec.error), output=_text(rec.output))
    return rows.values(rec)


def _has_nul(value: str | None) -> bool:
    return value is not None and "\x00" in value


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL bytes; a command's output may.
    return value.replace("\x00", "\ufffd") if value else value


async def insert_started(conn: Conn, records: Sequence[ExecutionRecord]) -> int:
    """Rows for attempts known to have started (the start log): each attempt with no row gets
    its record (`running`: ``abandon_running`` settles it next); a row already there is kept.
    ``jobs`` is left alone: rows written before these may have been lost with the crash, and
    the catch-up must still see their instants as unhandled."""
    latest = _last_per_attempt(records)
    if not latest:
        return 0
    async with conn.transaction():
        await _stage(conn, latest.values())
        status = await conn.execute(
            f"INSERT INTO executions ({_COLS}) SELECT {_COLS} FROM executions_stage"
            " ON CONFLICT (fire_id, attempt) DO NOTHING"
        )
    return int(status.rsplit(" ", 1)[-1])


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
