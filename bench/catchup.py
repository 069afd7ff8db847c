"""How long one job's catch-up plan takes after an outage, run by hand: python -m bench.catchup

A per-second job (`every: 1s`, and cron `* * * * * *` in UTC and Europe/Paris) down for a day
and for a year, `catch_up: latest` and `all` with the default `catch_up_limit: 100`: planned by
``timing.catchup.plan_catch_up`` ("after") and by the algorithm it replaced ("before": every
missed instant made, up to 10⁶, then the plan drawn from the list; copied here). Each figure is
the median of 3 runs ("before" on a cron job down a year: 1 run, it takes tens of seconds).

Then the loop: ``operation.recovery.catch_up`` over 200 per-second cron jobs down a day, with a
task going round the loop meanwhile: the longest the loop went without a turn, against the whole.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import structlog
import uvloop

from scheduler_daemon.operation.recovery import catch_up
from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.catchup import plan_catch_up
from scheduler_daemon.timing.schedules import Schedule, build_schedule

UNTIL = datetime(2026, 1, 1, tzinfo=UTC)
OUTAGES = {"1 day": timedelta(days=1), "1 year": timedelta(days=365)}
JOBS: dict[str, dict[str, object]] = {
    "every 1s": {"every": 1.0},
    "cron * * * * * * UTC": {"cron": "* * * * * *"},
    "cron * * * * * * Paris": {"cron": "* * * * * *", "timezone": "Europe/Paris"},
}
OLD_MAX_COUNTED = 1_000_000


def old_plan(job: JobSpec, schedule: Schedule, last: datetime, until: datetime) -> int:
    """The plan as made before: every instant in (last, until], up to 10⁶; the missed count."""
    instants: list[datetime] = []
    t = schedule.next_after(last)
    while t is not None and t <= until and len(instants) < OLD_MAX_COUNTED:
        instants.append(t)
        t = schedule.next_after(t)
    runnable = instants[-1:] if job.catch_up == "latest" else instants[-job.catch_up_limit :]
    chosen = set(runnable)
    not_run = [t for t in instants if t not in chosen]
    return len(not_run)


def new_plan(job: JobSpec, schedule: Schedule, last: datetime, until: datetime) -> int:
    return plan_catch_up(job, schedule, last=last, until=until, now=until).missed_total


def timed(plan: Callable[[JobSpec, Schedule, datetime, datetime], int], job: JobSpec,
          outage: timedelta, runs: int) -> tuple[float, int]:  # fmt: skip
    times, missed = [], 0
    for _ in range(runs):
        schedule = build_schedule(job)
        start = time.perf_counter()
        missed = plan(job, schedule, UNTIL - outage, UNTIL)
        times.append(time.perf_counter() - start)
    return statistics.median(times), missed


def plans() -> None:
    print(f"{'job':<24}{'policy':<8}{'outage':<8}{'before':>12}{'after':>12}  missed (after)")
    for label, fields in JOBS.items():
        for policy in ("latest", "all"):
            job = JobSpec.model_validate(
                {"name": "j", "python": "os:getpid", "catch_up": policy, **fields}
            )
            for name, outage in OUTAGES.items():
                slow = "cron" in label and outage > timedelta(days=1)
                before, _ = timed(old_plan, job, outage, 1 if slow else 3)
                after, missed = timed(new_plan, job, outage, 3)
                print(
                    f"{label:<24}{policy:<8}{name:<8}{before * 1000:>10.1f}ms"
                    f"{after * 1000:>10.2f}ms  {missed}"
                )
                sys.stdout.flush()


class _Sink:
    def record(self, rec: ExecutionRecord) -> None:
        pass


async def loop_blocking(jobs: int) -> None:
    specs = [
        JobSpec.model_validate(
            {"name": f"j{i}", "python": "os:getpid", "cron": "* * * * * *", "catch_up": "none"}
        )
        for i in range(jobs)
    ]
    longest = 0.0
    running = True

    async def turns() -> None:
        nonlocal longest
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    ticker = asyncio.create_task(turns())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await catch_up(
        specs,
        {job.name: UNTIL - timedelta(days=1) for job in specs},
        resumed_at=UNTIL,
        now=UNTIL,
        runner=cast(Runner, None),  # catch_up: none runs nothing
        recorder=_Sink(),
        node="bench",
        track=lambda task: None,
    )
    whole = time.perf_counter() - start
    running = False
    await ticker
    print(
        f"\ncatch_up over {jobs} per-second cron jobs down a day: {whole:.2f}s in all, "
        f"the loop never waited more than {longest * 1000:.1f}ms for a turn"
    )


if __name__ == "__main__":
    # One `catch_up` log line per job would be most of what is measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    plans()
    uvloop.run(loop_blocking(200))
