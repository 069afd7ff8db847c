"""Keep ``jobs.next_run_at`` current: what `job_health` and SQL dashboards show as the next fire.

The sync at start and reload writes it for the jobs it touches; after that each job's next fire
moves on every fire, and a reload rewrites only the jobs it changed. This loop writes, every
``NEXT_RUNS_EVERY`` seconds, the next fire of each job whose value moved since it was last written
(one UPDATE for all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import structlog

from scheduler_daemon.operation.oneoff import PoolSource
from scheduler_daemon.storage import queries, store
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.next_runs")

NEXT_RUNS_EVERY = 10.0


async def keep_next_runs_current(
    *,
    clock: Clock,
    database: PoolSource,
    ready: Callable[[], bool],
    names: Callable[[], Iterable[str]],
    next_fire: Callable[[str], datetime | None],
) -> None:
    """``names``: the configured jobs, now; ``next_fire``: the scheduler's next fire of one."""
    written: dict[str, datetime | None] = {}
    while True:
        await clock.sleep(NEXT_RUNS_EVERY)
        pool = database.pool
        if pool is None or not ready():
            written.clear()  # a new connection's sync rewrites them all
            continue
        now = {name: next_fire(name) for name in names()}
        moved = {name: at for name, at in now.items() if written.get(name, ...) != at}
        if not moved:
            continue
        try:
            await queries.set_next_runs(pool, moved)
        except store.DB_ERRORS as exc:
            log.debug("next_runs_not_written", error=str(exc))
            continue
        written = now
