"""The history's results and items, and the room it takes: what `result` and `items:` write.

Used by the admin API (GET /executions/{id}, GET /jobs/{name}/items, GET /storage) and by the
CLI when it talks to PostgreSQL directly (`history --result`, `status`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from scheduler_daemon.storage.queries import EXECUTION_WITH_RESULT, Cursor, page_of
from scheduler_daemon.storage.store import Db

_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


async def execution(db: Db, execution_id: int) -> asyncpg.Record | None:
    """One attempt by its id, with its `result` (JSON text, or None)."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"SELECT {EXECUTION_WITH_RESULT} FROM executions WHERE id = $1", execution_id
    )
    return row


async def items(
    db: Db,
    job: str,
    *,
    since: datetime | None = None,
    after: Cursor | None = None,
    limit: int = 50,
) -> tuple[list[asyncpg.Record], Cursor | None]:
    """One page of a job's items (job_items), oldest scheduled first (an attempt's in their
    order), and the cursor of the next page (or None). ``item`` is JSON text."""
    # One lower bound for both, so the index on (job_name, scheduled_at, id) starts the scan
    # there: items at or after `since` are those past (since, 0), ids being positive.
    start = (since, 0) if since is not None else (_EARLIEST, 0)
    if after is not None and (after.scheduled_at, after.id) > start:
        start = (after.scheduled_at, after.id)
    rows = await db.fetch(
        """SELECT id, fire_id, attempt, scheduled_at, idx, key, item FROM job_items
           WHERE job_name = $1 AND (scheduled_at, id) > ($2, $3)
           ORDER BY scheduled_at, id
           LIMIT $4""",
        job,
        *start,
        limit + 1,
    )
    return page_of(rows, limit)


HISTORY_TABLES = ("executions", "job_items")


async def history_size(db: Db) -> dict[str, int]:
    """The bytes each history table takes on disk (rows, TOAST, indexes), by table. A
    partitioned table counts its partitions (its own size is 0)."""
    rows = await db.fetch(
        """SELECT t.name, sum(pg_total_relation_size(p.relid))::bigint AS bytes
           FROM unnest($1::text[]) AS t(name),
                LATERAL (SELECT relid FROM pg_partition_tree(t.name::regclass)
                         UNION SELECT t.name::regclass) AS p
           GROUP BY t.name""",
        list(HISTORY_TABLES),
    )
    sizes = {r["name"]: int(r["bytes"]) for r in rows}
    return {name: sizes.get(name, 0) for name in HISTORY_TABLES}
