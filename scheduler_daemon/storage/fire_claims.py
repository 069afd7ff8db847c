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
    takeover: bool = False  # asked by a replica other than the fire's preferred one


_CLAIM = """
INSERT INTO fire_claims (fire_id, attempt, job_name, scheduled_at, node, takeover)
SELECT f, a, j, s, $5, t
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $6::bool[]) AS c(f, a, j, s, t)
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
    )
    return {(row["fire_id"], row["attempt"]) for row in rows}


async def prune(db: Db) -> int:
    status = await db.execute(
        "DELETE FROM fire_claims WHERE claimed_at < now() - make_interval(days => $1)",
        KEEP_CLAIMS_DAYS,
    )
    return int(status.split()[-1])
