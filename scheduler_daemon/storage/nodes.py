"""The ``nodes`` table: the replicas of a cluster, their registration and heartbeats (README:
Running several replicas).

A replica's row is its own while ``(host, pid, started_at)`` are those it registered with: a
heartbeat that finds them changed learns that another process took the name. Every instant
stored here is the database's ``now()``, and every age is computed by the database, so replicas
whose clocks disagree still agree on who is alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from scheduler_daemon.storage.store import Db


@dataclass(frozen=True, slots=True)
class Me:
    """Who registers: the node name and the process behind it."""

    name: str
    version: str
    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class Holder:
    """The process a node's row names, and how long ago it was seen (by the database's clock)."""

    host: str
    pid: int | None
    started_at: datetime
    age_s: float
    stopped: bool


@dataclass(frozen=True, slots=True)
class Seen:
    """One heartbeat's answer: whether our row is still ours, the age of every node's last
    heartbeat (seconds, by the database's clock), the nodes stopping (leaving, or gone), and
    those gone (a clean stop was their last word)."""

    mine: bool
    ages: dict[str, float]
    stopping: frozenset[str]
    gone: frozenset[str]
    counts: dict[str, Counts] = field(default_factory=dict)  # each node's, as last reported


@dataclass(frozen=True, slots=True)
class Counts:
    """A replica's claims since it started: won, lost, and fires it took over."""

    won: int = 0
    lost: int = 0
    takeovers: int = 0


# Taken when the row is free: never used, stopped cleanly, not seen for `lease`, or ours (this
# host and pid: a previous run of this very process id, e.g. pid 1 of a restarted container).
_REGISTER = """
INSERT INTO nodes AS n (name, started_at, last_seen, stopped_at, version, host, pid)
VALUES ($1, now(), now(), NULL, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET
    started_at = now(), last_seen = now(), stopped_at = NULL,
    version = EXCLUDED.version, host = EXCLUDED.host, pid = EXCLUDED.pid
WHERE n.stopped_at > n.last_seen
   OR n.last_seen < now() - make_interval(secs => $5)
   OR (n.host = EXCLUDED.host AND n.pid = EXCLUDED.pid)
RETURNING started_at
"""

# Taking over the row of a process known to be gone (same host, its pid not running): only if
# the row still names that process, so two replicas racing for it cannot both win.
_TAKE_OVER = """
UPDATE nodes SET started_at = now(), last_seen = now(), stopped_at = NULL,
                 version = $2, host = $3, pid = $4
 WHERE name = $1 AND host = $5 AND pid IS NOT DISTINCT FROM $6 AND started_at = $7
RETURNING started_at
"""

_HOLDER = """
SELECT host, pid, started_at, extract(epoch FROM now() - last_seen)::float8 AS age_s,
       coalesce(stopped_at > last_seen, false) AS stopped
  FROM nodes WHERE name = $1
"""

# A row's states: running (stopped_at NULL); leaving (stopped_at <= last_seen: it said it stops
# and still heartbeats through its drain); gone (stopped_at > last_seen: a clean stop was its
# last word, or the survivors settled it as dead, fire_claims.py). One round trip: renew our row
# (only if still ours; leaving: $5) and read everyone's. A replica that heartbeats again after
# being settled is running again. The SELECT sees the table as before the UPDATE: our own age is
# the previous heartbeat's (the caller knows it is 0).
_HEARTBEAT = """
WITH me AS (
    UPDATE nodes SET last_seen = now(),
                     stopped_at = CASE WHEN $5 THEN coalesce(stopped_at, now()) END,
                     claims_won = $6, claims_lost = $7, takeovers = $8
     WHERE name = $1 AND host = $2 AND pid = $3 AND started_at = $4
    RETURNING name
)
SELECT EXISTS (SELECT 1 FROM me) AS mine,
       coalesce(array_agg(n.name ORDER BY n.name), '{}') AS names,
       coalesce(array_agg(extract(epoch FROM now() - n.last_seen)::float8 ORDER BY n.name),
                '{}') AS ages,
       coalesce(array_agg(n.name) FILTER (WHERE n.stopped_at IS NOT NULL), '{}') AS stopping,
       coalesce(array_agg(n.name) FILTER (WHERE n.stopped_at > n.last_seen), '{}') AS gone,
       coalesce(array_agg(ARRAY[n.claims_won, n.claims_lost, n.takeovers] ORDER BY n.name),
                '{}') AS counts
  FROM nodes n
"""

# The stop is the row's last word: after the last heartbeat, so the row reads as gone at once.
_STOP = """
UPDATE nodes SET stopped_at = greatest(now(), last_seen + interval '1 microsecond')
 WHERE name = $1 AND host = $2 AND pid = $3 AND started_at = $4
"""

_LIVE = """
SELECT name, claims_won, claims_lost, takeovers FROM nodes
 WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1)
 ORDER BY name
"""


async def register(db: Db, me: Me, *, lease: float) -> datetime | None:
    """Take the node's row: its ``started_at`` (our identity from now on), or None when the row
    names another process that is still alive by the database (see ``holder``)."""
    started: datetime | None = await db.fetchval(
        _REGISTER, me.name, me.version, me.host, me.pid, lease
    )
    return started


async def take_over(db: Db, me: Me, gone: Holder) -> datetime | None:
    """Take the row from ``gone`` (a process known dead); None if the row changed meanwhile."""
    started: datetime | None = await db.fetchval(
        _TAKE_OVER, me.name, me.version, me.host, me.pid, gone.host, gone.pid, gone.started_at
    )
    return started


async def holder(db: Db, name: str) -> Holder | None:
    row = await db.fetchrow(_HOLDER, name)
    if row is None:
        return None
    return Holder(
        host=row["host"],
        pid=row["pid"],
        started_at=row["started_at"],
        age_s=row["age_s"],
        stopped=row["stopped"],
    )


async def heartbeat(
    db: Db, me: Me, started_at: datetime, *, leaving: bool = False, counts: Counts = Counts()
) -> Seen:
    """Renew our row (with our claim ``counts``) and read everyone's. ``leaving``: we stop (out
    of every live set at once), and heartbeat on through the drain, so our running attempts are
    not taken for abandoned."""
    row = await db.fetchrow(
        _HEARTBEAT, me.name, me.host, me.pid, started_at, leaving,
        counts.won, counts.lost, counts.takeovers,
    )  # fmt: skip
    assert row is not None  # an aggregate without GROUP BY: always one row
    return Seen(
        mine=row["mine"],
        ages=dict(zip(row["names"], row["ages"], strict=True)),
        stopping=frozenset(row["stopping"]),
        gone=frozenset(row["gone"]),
        counts={
            name: Counts(*(int(n) for n in each))
            for name, each in zip(row["names"], row["counts"], strict=True)
        },
    )


async def stop(db: Db, me: Me, started_at: datetime) -> None:
    """A clean stop, the row's last word: neither live nor holding anything from now on."""
    await db.execute(_STOP, me.name, me.host, me.pid, started_at)


async def live(db: Db, *, within: float) -> list[str]:
    """The names of the replicas seen within ``within`` seconds and not stopping (sorted)."""
    return list(await live_counts(db, within=within))


async def live_counts(db: Db, *, within: float) -> dict[str, Counts]:
    """The live replicas (sorted by name) and the claim counts each last reported."""
    return {
        row["name"]: Counts(row["claims_won"], row["claims_lost"], row["takeovers"])
        for row in await db.fetch(_LIVE, within)
    }
