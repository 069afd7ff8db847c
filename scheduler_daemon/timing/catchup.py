"""What to do with the fires a job missed while the daemon was down: pure, table-tested.

Every scheduled instant between the job's last handled fire and the moment scheduling resumed is
either run (``trigger = catchup``) or recorded as ``missed``: nothing disappears silently.

Planning costs about ``catch_up_limit`` instants whatever the outage (a per-second job down for a
year missed 31M): only the newest instants, the ones run or recorded one by one, are made. An
``every`` job's instants are counted arithmetically; a cron job's are counted one by one up to
:data:`MAX_COUNTED`, beyond which the count is a lower bound (``counted_all`` False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.schedules import IntervalSchedule, Schedule

# Counting a cron job's missed instants one by one stops here (the newest ones needed included).
MAX_COUNTED = 1_000
# The newest instants are looked for in windows back from the resume instant, this wide first
# and doubling: the work is about the instants wanted plus one call per doubling.
_FIRST_WINDOW = timedelta(seconds=1)
# A window holding more than _DENSE times the instants still wanted (plus _SLACK) is halved,
# newer half first, so that a burst (every second of one hour a day) is not walked to keep its
# last few. Doubling windows over evenly spread instants hold about twice those wanted at most.
_DENSE = 4
_SLACK = 16
_MICRO = timedelta(microseconds=1)


@dataclass(slots=True)
class CatchUpPlan:
    run: list[datetime] = field(default_factory=list)  # fires to run now, oldest first
    missed: list[datetime] = field(default_factory=list)  # fires to record as missed (capped)
    missed_total: int = 0  # every missed instant, recorded or not
    counted_all: bool = True  # False when missed_total is a lower bound (MAX_COUNTED reached)


@dataclass(slots=True)
class Missed:
    newest: list[datetime]  # the newest instants, oldest first, at most the number asked for
    total: int  # every instant, or a lower bound when not counted_all
    counted_all: bool = True


def missed_instants(
    schedule: Schedule, last: datetime, until: datetime, keep: int, count_limit: int = MAX_COUNTED
) -> Missed:
    """The newest ``keep`` fire instants in (last, until], and how many there are in all.

    Only an :class:`IntervalSchedule` is counted arithmetically; any other is counted one by one
    up to ``count_limit`` instants (or ``keep``, if more), then the total is a lower bound.
    """
    if isinstance(schedule, IntervalSchedule):
        count = schedule.count_between(last, until)
        return Missed(schedule.newest_between(last, until, keep), count)
    first = schedule.next_after(last)
    if first is None or first > until:
        return Missed([], 0)
    newest = _newest(schedule, last, until, keep) if keep > 0 else []
    if newest and newest[0] == first:  # walking back reached the first: every one is here
        return Missed(newest, len(newest))
    before = newest[0] if newest else until + _MICRO
    older, complete = _count(schedule, last, before, count_limit - len(newest))
    return Missed(newest, older + len(newest), complete)


def plan_catch_up(
    job: JobSpec, schedule: Schedule, *, last: datetime, until: datetime, now: datetime
) -> CatchUpPlan:
    """Decide, per the job's policy, which missed fires run and which are recorded as missed
    (all of them for a job with ``delivery: at_most_once``)."""
    limit = job.catch_up_limit
    # At most once: a fire not run on time is never run, whatever `catch_up` says.
    policy = "none" if job.delivery == "at_most_once" else job.catch_up
    most_run = {"none": 0, "latest": 1, "all": limit}[policy]
    # The fires run are the newest; the rows recorded are the newest of the rest.
    missed = missed_instants(schedule, last, until, most_run + limit)
    plan = CatchUpPlan(counted_all=missed.counted_all)
    if not missed.total:
        return plan
    newest = missed.newest
    deadline = (
        timedelta(seconds=job.starting_deadline) if job.starting_deadline is not None else None
    )
    # Instants are in order, so the ones still within the deadline are the newest ones.
    candidates = newest[max(0, len(newest) - most_run) :]
    plan.run = [t for t in candidates if deadline is None or now - t <= deadline]
    not_run = newest[: len(newest) - len(plan.run)]
    plan.missed_total = missed.total - len(plan.run)
    # The most recent ones are the most useful to see; the count covers the rest.
    plan.missed = not_run[max(0, len(not_run) - limit) :]
    return plan


def _newest(schedule: Schedule, last: datetime, until: datetime, keep: int) -> list[datetime]:
    """The newest ``keep`` (> 0) instants in (last, until], oldest first, walking back."""
    chunks: list[list[datetime]] = []  # newest window first
    found = 0
    top, width = until, _FIRST_WINDOW
    while found < keep and top > last:
        bottom = max(last, top - width)
        chunk = _window(schedule, bottom, top, keep - found)
        chunks.append(chunk)
        found += len(chunk)
        top, width = bottom, width * 2
    return [t for chunk in reversed(chunks) for t in chunk]


def _window(schedule: Schedule, lo: datetime, hi: datetime, keep: int) -> list[datetime]:
    """The newest ``keep`` (> 0) instants in (lo, hi], oldest first."""
    found: list[datetime] = []
    t = schedule.next_after(lo)
    while t is not None and t <= hi:
        found.append(t)
        if len(found) > _DENSE * keep + _SLACK:
            # Dense: the newest are further up. The newer half of what is left first.
            lo = t
            mid = lo + (hi - lo) // 2
            newer = _window(schedule, mid, hi, keep)
            if len(newer) < keep and mid > lo:
                newer = _window(schedule, lo, mid, keep - len(newer)) + newer
            return (found + newer)[-keep:]
        t = schedule.next_after(t)
    return found[max(0, len(found) - keep) :]


def _count(schedule: Schedule, last: datetime, before: datetime, budget: int) -> tuple[int, bool]:
    """How many instants in (last, before), counting at most ``budget`` (then one more seen)."""
    n = 0
    t = schedule.next_after(last)
    while t is not None and t < before:
        if n >= budget:
            return n + 1, False
        n += 1
        t = schedule.next_after(t)
    return n, True
