"""The read side and the operator's writes: execution history, job statistics, pauses, one-off runs.

Used by the admin API and by the CLI when it talks to PostgreSQL directly; every function takes a
pool or a connection, so both share one set of queries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import asyncpg

from scheduler_daemon.running.records import Status
from scheduler_daemon.storage import rows
from scheduler_daemon.storage.store import Db, Row

# A page of attempts leaves out `result` (up to result_max_bytes, 1 MiB, each): one attempt's
# comes with it alone (history.execution). result_bytes says whether there is one, and how big.
DETAIL_ONLY = frozenset({"result"})
EXECUTION_COLUMNS = ", ".join(("id", *(c for c in rows.COLUMNS if c not in DETAIL_ONLY)))
EXECUTION_WITH_RESULT = ", ".join(("id", *rows.COLUMNS))
RunState: TypeAlias = Literal["pending", "started", "cancelled"]
FAILED = tuple(s.value for s in (Status.FAILED, Status.TIMED_OUT, Status.ABANDONED, Status.MISSED))


_MAX_ID = 2**63 - 1  # executions.id is a bigint


class BadCursor(ValueError):
    """A pagination cursor that this version did not hand out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last row's (scheduled_at, id); the next page starts strictly past
    it (older attempts, newer items)."""

    scheduled_at: datetime
    id: int

    def encode(self) -> str:
        micros = round(self.scheduled_at.timestamp() * 1_000_000)
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        micros, dot, ident = text.partition(".")
        try:
            if not dot:
                raise ValueError(text)
            at = datetime.fromtimestamp(int(micros) / 1_000_000, UTC)
            if not 0 < int(ident) <= _MAX_ID:
                raise ValueError(ident)  # ids are bigserial: anything else was never handed out
            return cls(at, int(ident))
        except (ValueError, OverflowError, OSError):
            raise BadCursor(f"not a cursor from this API: {text!r}") from None


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    job: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None  # scheduled at or after
    until: datetime | None = None  # scheduled before
    fire_id: uuid.UUID | None = None  # one fire's attempts (a one-off run's: its id)


async def executions(
    db: Db,
    where: ExecutionFilter,
    *,
    after: Cursor | None = None,
    limit: int = 50,
    with_result: bool = False,
) -> tuple[list[asyncpg.Record], Cursor | None]:
    """One page of attempts, newest scheduled first, and the cursor of the next page (or None).
    ``with_result``: with each one's `result` (JSON text), for a few attempts only."""
    columns = EXECUTION_WITH_RESULT if with_result else EXECUTION_COLUMNS
    rows = await db.fetch(
        f"""SELECT {columns} FROM executions
            WHERE ($1::text IS NULL OR job_name = $1)
              AND ($2::text IS NULL OR status = $2)
              AND ($3::text IS NULL OR trigger = $3)
              AND ($4::timestamptz IS NULL OR scheduled_at >= $4)
              AND ($5::timestamptz IS NULL OR scheduled_at < $5)
              AND ($6::uuid IS NULL OR fire_id = $6)
              AND ($7::timestamptz IS NULL OR (scheduled_at, id) < ($7, $8))
            ORDER BY scheduled_at DESC, id DESC
            LIMIT $9""",
        where.job,
        where.status,
        where.trigger,
        where.since,
        where.until,
        where.fire_id,
        after.scheduled_at if after else None,
        after.id if after else None,
        limit + 1,
    )
    return page_of(rows, limit)


def page_of(
    rows: Sequence[asyncpg.Record], limit: int
) -> tuple[list[asyncpg.Record], Cursor | None]:
    """The first ``limit`` of ``limit + 1`` rows asked for, and a cursor if there were more."""
    page = list(rows[:limit])
    more = len(rows) > limit
    return page, Cursor(page[-1]["scheduled_at"], page[-1]["id"]) if more else None


async def jobs(db: Db, name: str | None = None) -> list[asyncpg.Record]:
    """The configured jobs' rows (not removed ones), by name (one, when ``name`` is given)."""
    return list(
        await db.fetch(
            "SELECT * FROM jobs WHERE removed_at IS NULL AND ($1::text IS NULL OR name = $1)"
            " ORDER BY name",
            name,
        )
    )


async def job_stats(db: Db, since: datetime, job: str | None = None) -> list[asyncpg.Record]:
    """Per job since ``since``: attempts by outcome, success rate, duration and drift figures,
    and the last final attempt. Running rows are left out; skipped fires do not count as runs.
    Drift is the scheduler's lateness: scheduled fires only. A catch-up run is late by design
    (by the downtime) and a manual one has no schedule to be late for: catch-up delay apart."""
    return list(
        await db.fetch(
            """SELECT job_name,
                  count(*) FILTER (WHERE status <> 'skipped') AS runs,
                  count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                  count(*) FILTER (WHERE status = ANY($3::text[])) AS failed,
                  count(*) FILTER (WHERE status = 'skipped') AS skipped,
                  round((count(*) FILTER (WHERE status = 'succeeded'))::numeric
                        / NULLIF(count(*) FILTER (WHERE status <> 'skipped'), 0), 4)::float8
                      AS success_rate,
                  avg(duration_ms) AS avg_duration_ms,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms,
                  avg(drift_ms) FILTER (WHERE trigger = 'schedule') AS avg_drift_ms,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY drift_ms)
                      FILTER (WHERE trigger = 'schedule') AS p95_drift_ms,
                  max(drift_ms) FILTER (WHERE trigger = 'schedule') AS max_drift_ms,
                  max(drift_ms) FILTER (WHERE trigger = 'catchup') AS max_catchup_delay_ms,
                  (array_agg(status ORDER BY scheduled_at DESC, id DESC))[1] AS last_status,
                  max(finished_at) AS last_finished_at
               FROM executions
               WHERE scheduled_at >= $1 AND status <> 'running'
                 AND ($2::text IS NULL OR job_name = $2)
               GROUP BY job_name ORDER BY job_name""",
            since,
            job,
            list(FAILED),
        )
    )


async def runs_per_minute(db: Db, since: datetime) -> list[asyncpg.Record]:
    """Final attempts per minute since ``since``: all of them and the failed ones."""
    return list(
        await db.fetch(
            """SELECT date_trunc('minute', finished_at) AS minute, count(*) AS attempts,
                      count(*) FILTER (WHERE status = ANY($2::text[])) AS failed
               FROM executions WHERE finished_at >= $1 AND status <> 'running'
               GROUP BY 1 ORDER BY 1""",
            since,
            list(FAILED),
        )
    )


async def last_attempts(db: Db, job: str, limit: int = 5) -> list[asyncpg.Record]:
    page, _ = await executions(db, ExecutionFilter(job=job), limit=limit)
    return page


# -- pauses ------------------------------------------------------------------------------------


async def set_paused(db: Db, job: str, paused: bool) -> datetime | None:
    """Persist a pause (or resume); the pause time, or None when resumed.

    Raises LookupError when the job has no row (not configured, or not synced yet)."""
    row = await db.fetchrow(
        """UPDATE jobs SET paused_at = CASE WHEN $2 THEN COALESCE(paused_at, now()) END
           WHERE name = $1 RETURNING paused_at""",
        job,
        paused,
    )
    if row is None:
        raise LookupError(job)
    paused_at: datetime | None = row["paused_at"]
    return paused_at


async def set_next_runs(db: Db, next_runs: Mapping[str, datetime | None]) -> None:
    """Write each job's next fire (``jobs.next_run_at``), in one statement that locks only the
    rows it changes, in name order (store.LOCK_JOBS_IN_ORDER's rule; locking every row given
    dirtied every page of `jobs` when 100k unchanged jobs were passed)."""
    await db.execute(
        """WITH changed AS (
               SELECT jobs.name, n.at FROM jobs
               JOIN unnest($1::text[], $2::timestamptz[]) AS n(name, at) ON jobs.name = n.name
               WHERE jobs.next_run_at IS DISTINCT FROM n.at
               ORDER BY jobs.name FOR NO KEY UPDATE OF jobs)
           UPDATE jobs SET next_run_at = changed.at FROM changed
           WHERE jobs.name = changed.name""",
        list(next_runs),
        list(next_runs.values()),
    )


async def paused_jobs(db: Db) -> dict[str, datetime]:
    rows = await db.fetch("SELECT name, paused_at FROM jobs WHERE paused_at IS NOT NULL")
    return {r["name"]: r["paused_at"] for r in rows}


# -- one-off runs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OneOffRun:
    id: uuid.UUID
    job_name: str
    run_at: datetime
    overrides: Mapping[str, Any] | None
    created_at: datetime | None = None
    started_at: datetime | None = None
    cancelled_at: datetime | None = None
    job: Any = None  # an ad-hoc run's job as written (`runs.job`); None: a configured job's run
    options: Any = None  # its own priority and retry (`runs.options`), checked when it starts

    @property
    def state(self) -> RunState:
        if self.cancelled_at is not None:
            return "cancelled"
        return "started" if self.started_at is not None else "pending"

    @classmethod
    def from_row(cls, row: Row) -> OneOffRun:
        return cls(
            id=row["id"],
            job_name=row["job_name"],
            run_at=row["run_at"],
            overrides=_json(row["overrides"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            cancelled_at=row["cancelled_at"],
            job=_json(row.get("job")),
            options=_json(row.get("options")),
        )


@dataclass(frozen=True, slots=True)
class RunSetup:
    """A new run's id, and what it carries besides its job's name: an ad-hoc job's definition,
    its own options (JSON objects, or None)."""

    id: uuid.UUID = field(default_factory=uuid.uuid4)
    job: Mapping[str, Any] | None = None
    options: Mapping[str, Any] | None = None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


_RUN_COLUMNS = "id, job_name, run_at, overrides, created_at, started_at, cancelled_at, job, options"
_PENDING = "started_at IS NULL AND cancelled_at IS NULL"
# At most this many runs wait to start, of one job and in all: each pending run is a task in the
# daemon's memory until it starts (the daemon holds at most MAX_PENDING_RUNS of them).
MAX_PENDING_RUNS = 1000
MAX_PENDING_RUNS_PER_JOB = 100
_RUNS_LOCK = 0x5C4EE  # advisory lock id: concurrent requests count and insert one at a time


class TooManyRuns(Exception):
    """A new run refused: ``limit`` runs are pending already (of ``job``, or in all if None)."""

    def __init__(self, job: str | None, limit: int) -> None:
        self.job, self.limit = job, limit
        what = f"one-off runs of job {job!r}" if job is not None else "one-off runs in all"
        super().__init__(
            f"{limit} {what} are pending already, the most allowed; "
            "wait until some start, or cancel some"
        )


async def create_run(
    db: Db,
    job: str,
    run_at: datetime,
    overrides: Mapping[str, Any] | None,
    setup: RunSetup | None = None,
    *,
    max_pending: int = MAX_PENDING_RUNS,
    max_pending_per_job: int = MAX_PENDING_RUNS_PER_JOB,
) -> OneOffRun:
    """Insert a pending run; TooManyRuns when its job, or all jobs, have the most pending."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await create_run(
                conn, job, run_at, overrides, setup,
                max_pending=max_pending, max_pending_per_job=max_pending_per_job,
            )  # fmt: skip
    setup = setup or RunSetup()
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", _RUNS_LOCK)
        counts = await db.fetchrow(
            f"""SELECT count(*) FILTER (WHERE job_name = $1) AS of_job, count(*) AS total
                FROM runs WHERE {_PENDING}""",
            job,
        )
        assert counts is not None
        if counts["of_job"] >= max_pending_per_job:
            raise TooManyRuns(job, max_pending_per_job)
        if counts["total"] >= max_pending:
            raise TooManyRuns(None, max_pending)
        row = await db.fetchrow(
            f"""INSERT INTO runs (id, job_name, run_at, overrides, job, options)
                VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb) RETURNING {_RUN_COLUMNS}""",
            setup.id,
            job,
            run_at,
            *(
                json.dumps(v) if v is not None else None
                for v in (overrides, setup.job, setup.options)
            ),
        )
    assert row is not None
    return OneOffRun.from_row(row)


async def job_exists(db: Db, name: str) -> bool:
    """Whether a job of that name has a live row (the config file's or the API's)."""
    found = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE name = $1 AND removed_at IS NULL)", name
    )
    return bool(found)


async def get_run(db: Db, run_id: uuid.UUID) -> OneOffRun | None:
    row = await db.fetchrow(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = $1", run_id)
    return OneOffRun.from_row(row) if row else None


async def runs_by_id(db: Db, run_ids: Sequence[uuid.UUID]) -> list[OneOffRun]:
    rows = await db.fetch(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = any($1)", list(run_ids))
    return [OneOffRun.from_row(r) for r in rows]


async def run_outcome(db: Db, run_id: uuid.UUID) -> asyncpg.Record | None:
    """How a run's fire went so far (its executions carry the run's id as fire_id): the number
    of attempts, the first one's start and the last one's outcome; None before any is recorded."""
    row: asyncpg.Record | None = await db.fetchrow(
        """SELECT last.status, (SELECT count(*) FROM executions WHERE fire_id = $1) AS attempts,
                  first.started_at, last.finished_at, last.duration_ms, last.error,
                  last.http_status, last.exit_code
           FROM (SELECT * FROM executions WHERE fire_id = $1 ORDER BY attempt DESC LIMIT 1) last,
                (SELECT started_at FROM executions WHERE fire_id = $1 ORDER BY attempt LIMIT 1)
                    first""",
        run_id,
    )
    return row


async def list_runs(db: Db, *, pending_only: bool = False, limit: int = 100) -> list[OneOffRun]:
    rows = await db.fetch(
        f"""SELECT {_RUN_COLUMNS} FROM runs
            WHERE NOT $1 OR (started_at IS NULL AND cancelled_at IS NULL)
            ORDER BY run_at DESC LIMIT $2""",
        pending_only,
        limit,
    )
    return [OneOffRun.from_row(r) for r in rows]


async def pending_runs(db: Db, limit: int = MAX_PENDING_RUNS + 1) -> list[OneOffRun]:
    """The ``limit`` pending runs due first: by default one more than the daemon waits for, which
    tells it that runs written by other means past the bound wait in the table."""
    rows = await db.fetch(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE {_PENDING} ORDER BY run_at, id LIMIT $1", limit
    )
    return [OneOffRun.from_row(r) for r in rows]


async def cancel_run(db: Db, run_id: uuid.UUID) -> OneOffRun | None:
    """Cancel a pending run; returns the run as it now is (None: no such run). A run that has
    started or was cancelled already is returned unchanged: the caller tells which by its state."""
    row = await db.fetchrow(
        f"""UPDATE runs SET cancelled_at = now() WHERE id = $1 AND {_PENDING}
            RETURNING {_RUN_COLUMNS}""",
        run_id,
    )
    if row is not None:
        return OneOffRun.from_row(row)
    return await get_run(db, run_id)


async def mark_run_started(db: Db, run_id: uuid.UUID) -> bool:
    """Claim a pending run for starting; False if it was cancelled (or started) meanwhile, or if
    its id is already a fire's (a row written straight into `runs` must not add attempts to, or
    overwrite, another fire's executions)."""
    status = await db.execute(
        "UPDATE runs SET started_at = now() WHERE id = $1 AND started_at IS NULL"
        " AND cancelled_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM executions WHERE fire_id = $1)",
        run_id,
    )
    return str(status).endswith(" 1")


def rows_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [record_json(r) for r in rows]


def record_json(row: Row) -> dict[str, Any]:
    """A row as JSON-safe data: instants in ISO 8601, uuids as strings."""
    return {key: _json_value(value) for key, value in dict(row).items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value
