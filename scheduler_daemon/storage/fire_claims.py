"""Cluster mode's arbitration: one row per attempt of a fire, inserted by the replica that runs it.

A scheduled fire's id is the same on every replica (derived from the job and the instant), so the
primary key (fire_id, attempt) lets exactly one replica's INSERT win; all the claims a replica
makes in one pass of its loop go in one statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from scheduler_daemon.running.records import FireKind
from scheduler_daemon.storage.store import Db

# Claims older than this are deleted: no replica claims an instant that old again (a catch-up
# starts after the last instant handled, and a fire's retries end long before).
KEEP_CLAIMS_DAYS = 2


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    fire_id: uuid.UUID
    attempt: int
    job_name: str
    scheduled_at: datetime
    trigger: FireKind = FireKind.SCHEDULE
    takeover: bool = False  # asked by a replica other than the fire's preferred one


_CLAIM = """
INSERT INTO fire_claims (fire_id, attempt, job_name, scheduled_at, trigger, node, takeover)
SELECT f, a, j, s, g, $5, t
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $6::bool[], $7::text[])
    AS c(f, a, j, s, t, g)
ON CONFLICT DO NOTHING
RETURNING fire_id, attempt
"""


async def claim(db: Db, node: str, requests: Sequence[ClaimRequest]) -> set[tuple[uuid.UUID, int]]:
    """The (fire_id, attempt) of ``requests`` that ``node`` won."""
    rows = await db.fetch(
        _CLAIM,
        [r.fire_id for r in requests],
        [r.attempt for r in requests],
        [r.job_name for r in requests],
        [r.scheduled_at for r in requests],
        node,
        [r.takeover for r in requests],
        [str(r.trigger) for r in requests],
    )
    return {(row["fire_id"], row["attempt"]) for row in rows}


async def prune(db: Db) -> int:
    status = await db.execute(
        "DELETE FROM fire_claims WHERE claimed_at < now() - make_interval(days => $1)",
        KEEP_CLAIMS_DAYS,
    )
    return int(status.split()[-1])


# A dead replica's attempts, each settled by exactly one survivor: an attempt with a `running`
# row (or none yet: its claim is all there is) becomes `abandoned`; one that ended keeps its row.
# The executions key arbitrates between survivors: the second finds the row no longer running.
_ABANDON_DEAD = """
WITH dead AS (
    SELECT name FROM nodes  -- running, or leaving (stopping, heartbeating through its drain)
    WHERE (stopped_at IS NULL OR stopped_at <= last_seen)
      AND last_seen < now() - make_interval(secs => $1)
), settled AS (  -- its attempts are settled now: later passes skip it until it heartbeats
    UPDATE nodes SET stopped_at = now() WHERE name IN (SELECT name FROM dead)
), lost AS (
    SELECT c.* FROM fire_claims c JOIN dead ON dead.name = c.node
    WHERE c.claimed_at > now() - make_interval(days => $3)
)
INSERT INTO executions (fire_id, job_name, scheduled_at, attempt, trigger, status,
                        finished_at, error, node)
SELECT fire_id, job_name, scheduled_at, attempt, trigger, 'abandoned', now(),
       format($2, node), node
FROM lost
ON CONFLICT (fire_id, attempt) DO UPDATE SET status = 'abandoned', error = EXCLUDED.error,
    finished_at = COALESCE(executions.finished_at, now())
WHERE executions.status = 'running'
RETURNING fire_id, job_name, scheduled_at, attempt, trigger, node
"""


async def abandon_dead(db: Db, lease: float) -> list[asyncpg.Record]:
    """Mark the attempts of replicas not seen for ``lease`` seconds `abandoned`; those rows."""
    error = (
        f"abandoned: replica %s stopped heartbeating for more than {lease:g}s "
        "(killed, crashed or cut off from the database)"
    )
    return list(await db.fetch(_ABANDON_DEAD, lease, error, KEEP_CLAIMS_DAYS))
