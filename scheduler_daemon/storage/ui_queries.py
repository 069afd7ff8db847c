"""What the status page (/ui/) reads of the history: strips of recent attempts, failures.

Every job's strip comes from one statement (a LATERAL join: for each name, the newest rows of
executions_job_scheduled_idx), never a query per job.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from scheduler_daemon.storage.queries import FAILED
from scheduler_daemon.storage.store import Db

# What a strip cell shows: no output, error or result (the run page reads those).
STRIP_COLUMNS = (
    "id, fire_id, scheduled_at, started_at, finished_at, status, trigger, attempt, drift_ms, "
    "duration_ms, exit_code, http_status"
)


async def strips(db: Db, jobs: Sequence[str], per_job: int) -> list[asyncpg.Record]:
    """The newest ``per_job`` attempts of each job in ``jobs``, newest first within a job
    (``job_name`` tells them apart), in one statement."""
    return list(
        await db.fetch(
            f"""SELECT j.name AS job_name, e.*
                FROM unnest($1::text[]) AS j(name),
                LATERAL (SELECT {STRIP_COLUMNS} FROM executions
                         WHERE job_name = j.name
                         ORDER BY scheduled_at DESC, attempt DESC
                         LIMIT $2) AS e""",
            list(jobs),
            per_job,
        )
    )


async def failures(db: Db, limit: int) -> list[asyncpg.Record]:
    """The newest failed, timed-out, missed and abandoned attempts of every job, with the first
    line of their error and how many fires of their job have failed since its last success
    (`failing_for`: 0 once it has succeeded again)."""
    return list(
        await db.fetch(
            f"""WITH recent AS (
                   SELECT {STRIP_COLUMNS}, job_name, split_part(error, E'\\n', 1) AS first_error
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
            f"""SELECT 'parent' AS relation, job_name, {STRIP_COLUMNS} FROM executions
                WHERE $2::uuid IS NOT NULL AND fire_id = $2
                UNION ALL
                SELECT 'child', job_name, {STRIP_COLUMNS} FROM executions
                WHERE parent_fire_id = $1
                ORDER BY scheduled_at DESC, attempt DESC LIMIT 50""",
            fire_id,
            parent,
        )
    )
