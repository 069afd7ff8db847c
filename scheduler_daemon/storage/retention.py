"""Retention's statements: old history removed a batch at a time (README: Retention).

Each call removes at most ``limit`` rows in one short statement of its own transaction, so the
recorder's COPY and merge never wait behind a long one: a batch takes only the locks of the rows
it removes, which no writer touches (old rows are final). Executions and results are taken in
``finished_at`` order from its indexes, from ``after`` on (a keyset: each batch starts where the
last one ended instead of stepping over the index entries of the rows it already removed); items
by their BRIN index on ``scheduled_at``. A row is found by the sub-select and removed by its ctid
(a TID scan), its age checked again in the same statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from scheduler_daemon.storage.store import Conn

KINDS = ("executions", "results", "items")
# Session advisory lock key: one pruner at a time per database (cluster replicas take turns).
# The schema's upgrades use 0x5C4ED, one-off runs 0x5C4EE, the instance lock 0x5C4ED01.
RETENTION_LOCK = 0x5C4EF

# A `running` row has no finished_at: `finished_at < $2` never takes it.
_EXECUTIONS = """
WITH gone AS (
    DELETE FROM executions WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM executions WHERE finished_at >= $1 AND finished_at < $2
        ORDER BY finished_at LIMIT $3))
      AND finished_at < $2
    RETURNING pg_column_size(executions.*) AS bytes, finished_at
)
SELECT count(*) AS n, coalesce(sum(bytes), 0)::bigint AS bytes, max(finished_at) AS last
FROM gone
"""

# The row stays, `result_bytes` too (what the result weighed); its size stored is counted from
# the rows read before the update (RETURNING shows the new, NULL, value).
_RESULTS = """
WITH old AS MATERIALIZED (
    SELECT ctid, id, pg_column_size(result) AS bytes, finished_at FROM executions
    WHERE result IS NOT NULL AND finished_at >= $1 AND finished_at < $2
    ORDER BY finished_at LIMIT $3
), cleared AS (
    UPDATE executions SET result = NULL
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM old)) AND result IS NOT NULL AND finished_at < $2
    RETURNING id
)
SELECT count(*) AS n, coalesce(sum(old.bytes), 0)::bigint AS bytes, max(old.finished_at) AS last
FROM cleared JOIN old USING (id)
"""

_ITEMS = """
WITH gone AS (
    DELETE FROM job_items WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM job_items WHERE scheduled_at >= $1 AND scheduled_at < $2 LIMIT $3))
      AND scheduled_at < $2
    RETURNING pg_column_size(job_items.*) AS bytes, scheduled_at
)
SELECT count(*) AS n, coalesce(sum(bytes), 0)::bigint AS bytes, max(scheduled_at) AS last
FROM gone
"""

_SQL = {"executions": _EXECUTIONS, "results": _RESULTS, "items": _ITEMS}
# Kinds whose batches come in age order: the next one starts at the last one's newest (items come
# in the order of the table's blocks: each batch starts from the oldest possible instant).
IN_AGE_ORDER = frozenset({"executions", "results"})


@dataclass(frozen=True, slots=True)
class Batch:
    rows: int  # removed (executions, items) or cleared (results)
    bytes: int  # their size as stored (pg_column_size)
    last: datetime | None  # the newest instant removed: where the next batch starts


async def prune_batch(
    conn: Conn, kind: str, *, after: datetime, before: datetime, limit: int
) -> Batch:
    """Remove up to ``limit`` rows of ``kind`` older than ``before`` (and, for executions and
    results, not older than ``after``: the last batch's ``last``). Fewer than ``limit``: done."""
    row = await conn.fetchrow(_SQL[kind], after, before, limit)
    assert row is not None
    return Batch(int(row["n"]), int(row["bytes"]), row["last"])


@dataclass(frozen=True, slots=True)
class Totals:
    """What pruning removed since the daemon started, by kind; the last round's end and length."""

    rows: dict[str, int]
    bytes: dict[str, int]
    last_round_at: float | None  # Unix time
    last_round_seconds: float | None


async def try_lock(conn: Conn) -> bool:
    """Take the pruning lock on this session, if no other session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK))


async def unlock(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)
