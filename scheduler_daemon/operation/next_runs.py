"""Keep ``jobs.next_run_at`` current: what `job_health` and SQL dashboards show as the next fire.

The sync at start and reload writes it for the jobs it touches; after that each job's next fire
moves on every fire, and a reload rewrites only the jobs it changed. This loop writes, every
``NEXT_RUNS_EVERY`` seconds, the next fire of each job the scheduler moved since the last write
(one UPDATE for all of them). It asks the scheduler which jobs moved: walking every job each time
was most of the idle CPU of a daemon holding 100k jobs.

In cluster mode every replica computes every job's fires (the same ones), and each writes only the
jobs it is preferred for: the others' are set aside, and looked at again when the live set changes
(they may be its own then). When every replica wrote every job, their UPDATEs locked the rows the
others' recorders were locking, and two replicas ran fewer fires per second than one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

import structlog

from scheduler_daemon.operation.oneoff import PoolSource
from scheduler_daemon.storage import queries, store
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.next_runs")

NEXT_RUNS_EVERY = 10.0


class Owned(Protocol):
    """Which jobs are this replica's (claims.Ownership): they change with the live set."""

    @property
    def live(self) -> Sequence[str]: ...

    def mine(self, job: str) -> bool: ...


class MovingSchedule(Protocol):
    """The scheduler's side (timing/scheduler.py)."""

    def take_moved(self) -> set[str]: ...

    def next_fires(self, names: Iterable[str]) -> dict[str, datetime | None]: ...


async def keep_next_runs_current(
    *,
    clock: Clock,
    database: PoolSource,
    ready: Callable[[], bool],
    schedule: MovingSchedule,
    owned: Owned | None = None,
) -> None:
    """``owned``: in cluster mode, the jobs whose next fires this replica writes."""
    pending: set[str] = set()  # moved, not written yet: kept while the database is away
    others: set[str] = set()  # moved, another replica's: looked at again when the live set changes
    live: Sequence[str] = ()
    while True:
        await clock.sleep(NEXT_RUNS_EVERY)
        pending |= schedule.take_moved()
        if owned is not None:
            if owned.live is not live:
                live, pending, others = owned.live, pending | others, set()
            theirs = {name for name in pending if not owned.mine(name)}
            others |= theirs
            pending -= theirs
        pool = database.pool
        if not pending or pool is None or not ready():
            continue
        try:
            # Read now, not when moved: the latest value, and none for a job removed since.
            await queries.set_next_runs(pool, schedule.next_fires(pending))
        except store.DB_ERRORS as exc:
            log.debug("next_runs_not_written", error=str(exc))
            continue
        pending = set()
