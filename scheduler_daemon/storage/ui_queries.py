"""What the status page (/ui/) reads of the history: strips of recent fires, failures.

Every job's strip comes from one statement (a LATERAL join: for each name, the newest rows of
executions_job_scheduled_idx), never a query per job; PostgreSQL also writes each cell's words
(LABEL). A board asks first for every strip's key (a digest of its attempts and statuses: 1,000
short rows for 1,000 jobs), then for the cells (arrays, one row per job) of the strips whose key
changed since the page last drew them: between fires, almost none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from scheduler_daemon.storage.queries import FAILED
from scheduler_daemon.storage.store import Db

# A scheduled fire that started more than this after its time is marked late (README: the
# status page). Catch-up fires are late by design; manual and chained ones have no time to keep.
LATE_MS = 1000.0
LATE = f"(trigger = 'schedule' AND drift_ms > {LATE_MS})"
# Whether a fire was late, NULL where that does not apply (the board's `late` counter reads the
# newest fire it applies to).
LATE_OR_NULL = (
    f"(CASE WHEN trigger = 'schedule' AND drift_ms IS NOT NULL THEN drift_ms > {LATE_MS} END)"
)


def duration_sql(ms: str) -> str:
    """SQL for ui_view.duration's words (`350 ms`, `3.2 s`, `41 s`, `2 min 5 s`, `3 h 4 min`),
    of the float8 expression ``ms``; NULL for NULL. Rounded half up by the same float8
    arithmetic as ui_view.duration (floor(x + 0.5)): identical words by construction, and a
    third of the cost of rounding numerics (60,000 cells, two durations each)."""
    whole = f"floor({ms} / 1000 + 0.5)::bigint"
    tenths = f"floor({ms} / 100 + 0.5)::bigint"
    return f"""(CASE
        WHEN {ms} IS NULL THEN NULL
        WHEN {ms} < 999.5 THEN floor({ms} + 0.5)::bigint::text || ' ms'
        WHEN {ms} < 9950 THEN ({tenths} / 10)::text || '.' || ({tenths} % 10)::text || ' s'
        WHEN {ms} < 59500 THEN {whole}::text || ' s'
        WHEN {whole} < 3600 THEN ({whole} / 60)::text || ' min'
            || CASE WHEN {whole} % 60 > 0 THEN ' ' || ({whole} % 60)::text || ' s' ELSE '' END
        ELSE ({whole} / 3600)::text || ' h'
            || CASE WHEN {whole} / 60 % 60 > 0 THEN ' ' || ({whole} / 60 % 60)::text || ' min'
               ELSE '' END
    END)"""


# A cell's words, for screen readers, tooltips and tests: `2026-11-27 08:00 · failed · 3.2 s
# late · 41 s · exit 1` (UTC; seconds shown when the time has some).
LABEL = f"""(to_char(scheduled_at AT TIME ZONE 'UTC', CASE
        WHEN date_trunc('minute', scheduled_at) = scheduled_at THEN 'YYYY-MM-DD HH24:MI'
        ELSE 'YYYY-MM-DD HH24:MI:SS' END)
    || ' · ' || status
    || CASE WHEN {LATE} THEN ' · ' || {duration_sql("drift_ms")} || ' late' ELSE '' END
    || CASE WHEN trigger <> 'schedule' THEN ' · ' || trigger ELSE '' END
    || CASE WHEN attempt > 1 THEN ' · attempt ' || attempt::text ELSE '' END
    || COALESCE(' · ' || {duration_sql("duration_ms")}, '')
    || COALESCE(' · exit ' || exit_code::text, '')
    || COALESCE(' · HTTP ' || http_status::text, ''))"""

CELL_COLUMNS = (
    "id, fire_id, scheduled_at, started_at, finished_at, status, trigger, attempt, drift_ms, "
    "duration_ms, exit_code, http_status"
)


# A job's newest fires: a retried fire once, by its newest attempt (its attempts share the
# fire's scheduled_at, so DISTINCT ON keeps the first of each in this order).
def newest_fires(columns: str) -> str:
    """SQL for the ``columns`` of job ``j.name``'s newest $2 fires."""
    return f"""SELECT DISTINCT ON (scheduled_at, fire_id) {columns} FROM executions
        WHERE job_name = j.name ORDER BY scheduled_at DESC, fire_id, attempt DESC LIMIT $2"""


# What a strip's drawing depends on: its fires' attempts and their statuses (an attempt's
# other columns are written with its status: at its start, at its end). Equal keys, same strip.
STRIP_KEY = "md5(string_agg(id::text || ':' || status, ','))"

STRIP_KEYS = f"""SELECT j.name AS job_name, s.*
    FROM unnest($1::text[]) AS j(name)
    CROSS JOIN LATERAL (
      SELECT {STRIP_KEY} AS key, max(started_at) AS last_run
      FROM ({newest_fires("id, status, started_at")}) AS f
      HAVING count(*) > 0) AS s"""

# Arrays come newest first: the order the rows reach the aggregates in. The figures over them
# (success rate, p95, failing, late: ui_view.StripFigures) are worked out by the daemon, once
# per changed strip: done here, they were two thirds of the statement's time.
STRIPS = f"""SELECT j.name AS job_name, s.*
    FROM unnest($1::text[]) AS j(name)
    CROSS JOIN LATERAL (
      SELECT {STRIP_KEY} AS key, array_agg(id) AS ids, array_agg(status) AS statuses,
             array_agg(late) AS lates, array_agg(duration_ms) AS durations,
             array_agg(label) AS labels
      FROM ({newest_fires(f"id, status, duration_ms, {LATE_OR_NULL} AS late, {LABEL} AS label")})
        AS f
      HAVING count(*) > 0) AS s"""


async def strip_keys(db: Db, jobs: Sequence[str], per_job: int) -> list[asyncpg.Record]:
    """For each job in ``jobs`` that has history, the ``key`` of its strip of the newest
    ``per_job`` fires (as STRIP_KEY) and its ``last_run`` (the newest start among them)."""
    return list(await db.fetch(STRIP_KEYS, list(jobs), per_job))


async def strips(db: Db, jobs: Sequence[str], per_job: int) -> list[asyncpg.Record]:
    """For each job in ``jobs`` that has history, its strip: the newest ``per_job`` fires (a
    retried fire once, by its newest attempt), newest first, in arrays: ``ids``, ``statuses``,
    ``lates`` (NULL where lateness does not apply: not scheduled, or never started),
    ``durations`` and ``labels`` (LABEL: the cells' words); and its ``key``."""
    return list(await db.fetch(STRIPS, list(jobs), per_job))


async def recent(db: Db, job: str, limit: int) -> list[asyncpg.Record]:
    """A job's newest ``limit`` attempts, oldest first, with their ``label`` (the chart's)."""
    return list(
        await db.fetch(
            f"""SELECT *, {LABEL} AS label FROM (
                  SELECT {CELL_COLUMNS} FROM executions WHERE job_name = $1
                  ORDER BY scheduled_at DESC, attempt DESC LIMIT $2) AS newest
                ORDER BY scheduled_at, attempt""",
            job,
            limit,
        )
    )


async def failures(db: Db, limit: int) -> list[asyncpg.Record]:
    """The newest failed, timed-out, missed and abandoned attempts of every job, with the first
    line of their error and how many fires of their job have failed since its last success
    (`failing_for`: 0 once it has succeeded again)."""
    return list(
        await db.fetch(
            f"""WITH recent AS (
                   SELECT {CELL_COLUMNS}, job_name, {LABEL} AS label,
                          split_part(error, E'\\n', 1) AS first_error
                   FROM executions WHERE status = ANY($1::text[])
                   ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT $2),
                 streak AS (
                   SELECT j.name, (
                       SELECT count(DISTINCT e.fire_id) FROM executions e
                       WHERE e.job_name = j.name AND e.status = ANY($1::text[])
                         AND e.scheduled_at > COALESCE((
                             SELECT s.scheduled_at FROM executions s
                             WHERE s.job_name = j.name AND s.status = 'succeeded'
                             ORDER BY s.scheduled_at DESC LIMIT 1), '-infinity')
                   ) AS failing_for
                   FROM (SELECT DISTINCT job_name FROM recent) AS j(name))
                SELECT recent.*, streak.failing_for FROM recent
                JOIN streak ON streak.name = recent.job_name
                ORDER BY finished_at DESC NULLS LAST, id DESC""",
            list(FAILED),
            limit,
        )
    )


async def fire_family(db: Db, fire_id: uuid.UUID, parent: uuid.UUID | None) -> list[asyncpg.Record]:
    """The attempts around one fire: its parent fire's (a chained fire's) and its children's
    (the jobs its success started), newest first. ``relation`` is `parent` or `child`."""
    return list(
        await db.fetch(
            f"""SELECT 'parent' AS relation, job_name, {CELL_COLUMNS}, {LABEL} AS label
                FROM executions WHERE $2::uuid IS NOT NULL AND fire_id = $2
                UNION ALL
                SELECT 'child', job_name, {CELL_COLUMNS}, {LABEL} FROM executions
                WHERE parent_fire_id = $1
                ORDER BY scheduled_at DESC, attempt DESC LIMIT 50""",
            fire_id,
            parent,
        )
    )
