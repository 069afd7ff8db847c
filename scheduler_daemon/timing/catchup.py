"""What to do with the fires a job missed while the daemon was down: pure, table-tested.

Every scheduled instant between the job's last handled fire and the moment scheduling resumed is
either run (``trigger = catchup``) or recorded as ``missed``: nothing disappears silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.schedules import Schedule

# Counting missed instants stops here (a per-second job down for a year would be 31M).
MAX_COUNTED = 1_000_000


@dataclass(slots=True)
class CatchUpPlan:
    run: list[datetime] = field(default_factory=list)  # fires to run now, oldest first
    missed: list[datetime] = field(default_factory=list)  # fires to record as missed (capped)
    missed_total: int = 0  # every missed instant, recorded or not
    counted_all: bool = True  # False when counting stopped at MAX_COUNTED


def missed_instants(
    schedule: Schedule, last: datetime, until: datetime, limit: int = MAX_COUNTED
) -> tuple[list[datetime], bool]:
    """Fire instants in (last, until], at most ``limit``; and whether that is all of them."""
    out: list[datetime] = []
    t = schedule.next_after(last)
    while t is not None and t <= until:
        if len(out) >= limit:
            return out, False
        out.append(t)
        t = schedule.next_after(t)
    return out, True


def plan_catch_up(
    job: JobSpec, schedule: Schedule, *, last: datetime, until: datetime, now: datetime
) -> CatchUpPlan:
    """Decide, per the job's policy, which missed fires run and which are recorded as missed."""
    instants, complete = missed_instants(schedule, last, until)
    plan = CatchUpPlan(counted_all=complete)
    if not instants:
        return plan
    deadline = (
        timedelta(seconds=job.starting_deadline) if job.starting_deadline is not None else None
    )
    runnable = [t for t in instants if deadline is None or now - t <= deadline]
    if job.catch_up == "latest":
        runnable = runnable[-1:]
    elif job.catch_up == "all":
        runnable = runnable[-job.catch_up_limit :] if job.catch_up_limit else []
    else:
        runnable = []
    chosen = set(runnable)
    not_run = [t for t in instants if t not in chosen]
    plan.run = runnable
    plan.missed_total = len(not_run)
    # The most recent ones are the most useful to see; the count covers the rest.
    plan.missed = not_run[-job.catch_up_limit :] if job.catch_up_limit else []
    return plan
