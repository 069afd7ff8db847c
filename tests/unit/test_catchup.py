"""The catch-up policy after downtime, as tables: which missed fires run, which are recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_daemon.operation.recovery import catch_up
from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.catchup import MAX_COUNTED, missed_instants, plan_catch_up
from scheduler_daemon.timing.schedules import IntervalSchedule, Schedule, build_schedule
from tests.helpers import make_job

if TYPE_CHECKING:
    from scheduler_daemon.running.runner import Runner

T = datetime(2026, 1, 1, tzinfo=UTC)


def s(n: float) -> datetime:
    return T + timedelta(seconds=n)


def test_missed_instants_are_the_newest_fires_after_last_up_to_until() -> None:
    got = missed_instants(IntervalSchedule(10), last=s(10), until=s(50), keep=10)
    assert (got.newest, got.total, got.counted_all) == ([s(20), s(30), s(40), s(50)], 4, True)
    got = missed_instants(IntervalSchedule(1), last=s(0), until=s(1000), keep=5)
    assert got.newest == [s(n) for n in range(996, 1001)] and got.total == 1000


@pytest.mark.parametrize(
    ("policy", "limit", "deadline", "run", "missed", "total"),
    [
        ("latest", 100, None, [50], [20, 30, 40], 3),
        ("all", 100, None, [20, 30, 40, 50], [], 0),
        ("none", 100, None, [], [20, 30, 40, 50], 4),
        ("all", 2, None, [40, 50], [20, 30], 2),
        ("none", 2, None, [], [40, 50], 4),  # capped rows, full count
        ("latest", 100, 5.0, [], [20, 30, 40, 50], 4),  # every missed fire is past its deadline
        ("all", 100, 25.0, [40, 50], [20, 30], 2),
    ],
)
def test_policies(
    policy: str, limit: int, deadline: float | None, run: list[int], missed: list[int], total: int
) -> None:
    job = make_job(every=10.0, catch_up=policy, catch_up_limit=limit, starting_deadline=deadline)
    plan = plan_catch_up(job, build_schedule(job), last=s(10), until=s(50), now=s(56))
    assert plan.run == [s(n) for n in run]
    assert plan.missed == [s(n) for n in missed]
    assert plan.missed_total == total


def test_nothing_missed_means_an_empty_plan() -> None:
    job = make_job(every=10.0)
    plan = plan_catch_up(job, build_schedule(job), last=s(50), until=s(55), now=s(56))
    assert (plan.run, plan.missed, plan.missed_total) == ([], [], 0)


# -- the cost: what is kept, not the length of the outage ----------------------------------------

YEAR_START, YEAR_END = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
SECONDS = 365 * 86400
# next_after calls besides the instants kept or counted: one per doubling window walking back.
FEW = 64


class CountingInterval(IntervalSchedule):
    """An every-schedule that counts its ``next_after`` calls and fails past ``budget``."""

    __slots__ = ("budget", "calls")

    def __init__(self, every: float, budget: int) -> None:
        super().__init__(every)
        self.budget, self.calls = budget, 0

    def next_after(self, t: datetime) -> datetime | None:
        self.calls += 1
        assert self.calls <= self.budget, f"more than {self.budget} next_after calls"
        return super().next_after(t)


class Counting:
    """Any schedule, counting its ``next_after`` calls and failing past ``budget``."""

    def __init__(self, inner: Schedule, budget: int) -> None:
        self.inner, self.budget, self.calls = inner, budget, 0

    def next_after(self, t: datetime) -> datetime | None:
        self.calls += 1
        assert self.calls <= self.budget, f"more than {self.budget} next_after calls"
        return self.inner.next_after(t)

    def describe(self) -> str:
        return self.inner.describe()


def kept(policy: str, limit: int) -> int:
    return {"none": 0, "latest": 1, "all": limit}[policy] + limit


def newest_seconds(policy: str, limit: int) -> tuple[list[datetime], list[datetime]]:
    """(run, missed) for a per-second job whose outage ended at YEAR_END, by the table above."""
    newest = [YEAR_END - timedelta(seconds=n) for n in reversed(range(kept(policy, limit)))]
    ran = {"none": 0, "latest": 1, "all": limit}[policy]
    return newest[len(newest) - ran :], newest[: len(newest) - ran]


@pytest.mark.parametrize("policy", ["none", "latest", "all"])
def test_a_per_second_every_job_down_for_a_year_is_counted_not_walked(policy: str) -> None:
    job = make_job(every=1.0, catch_up=policy, catch_up_limit=100)
    schedule = CountingInterval(1.0, budget=FEW)
    plan = plan_catch_up(job, schedule, last=YEAR_START, until=YEAR_END, now=YEAR_END)
    run, missed = newest_seconds(policy, 100)
    assert (plan.run, plan.missed) == (run, missed)
    assert (plan.missed_total, plan.counted_all) == (SECONDS - len(run), True)  # exact


@pytest.mark.parametrize("policy", ["none", "latest", "all"])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_a_per_second_cron_job_down_for_a_year_walks_back_only_as_far_as_it_keeps(
    policy: str, zone: str
) -> None:
    job = make_job(cron="* * * * * *", timezone=zone, catch_up=policy, catch_up_limit=100)
    schedule = Counting(build_schedule(job), budget=2 * kept(policy, 100) + MAX_COUNTED + FEW)
    plan = plan_catch_up(job, schedule, last=YEAR_START, until=YEAR_END, now=YEAR_END)
    run, missed = newest_seconds(policy, 100)
    assert (plan.run, plan.missed) == (run, missed)
    # Counted one by one up to MAX_COUNTED: the count is then a lower bound, and says so.
    assert not plan.counted_all
    assert MAX_COUNTED - len(run) < plan.missed_total <= SECONDS - len(run)


def test_a_dense_burst_is_halved_not_walked_to_keep_its_newest_few() -> None:
    # Every second of 02:00-03:00: walking back from 06:00, one window holds the whole hour.
    schedule = build_schedule(make_job(cron="* * 2 * * *"))
    last, until = datetime(2026, 1, 3, tzinfo=UTC), datetime(2026, 1, 4, 6, tzinfo=UTC)
    every = walk(schedule, last, until)
    counting = Counting(schedule, budget=3600 // 4)  # a quarter of the burst
    got = missed_instants(counting, last, until, keep=20, count_limit=0)
    assert got.newest == every[-20:]
    assert (got.total, got.counted_all) == (21, False)  # 20 kept and at least one more


def walk(schedule: Schedule, last: datetime, until: datetime) -> list[datetime]:
    """Every fire in (last, until], the slow way."""
    out = []
    t = schedule.next_after(last)
    while t is not None and t <= until:
        out.append(t)
        t = schedule.next_after(t)
    return out


# -- the counts: against walking every instant, on small random cases ----------------------------


@st.composite
def interval_cases(draw: st.DrawFn) -> tuple[IntervalSchedule, datetime, datetime]:
    every_us = draw(st.sampled_from([1, 250_000, 10**6, 7 * 10**6, 3600 * 10**6]))
    every_us = draw(st.just(every_us) | st.integers(1, 10**8))
    offset_us = draw(st.integers(-(10**10), 10**10))
    last = T + timedelta(microseconds=draw(st.integers(-(10**12), 10**12)))
    until = last + timedelta(microseconds=draw(st.integers(-every_us, 40 * every_us)))
    return IntervalSchedule(every_us / 1e6, offset_us / 1e6), last, until


@settings(max_examples=150, deadline=None, derandomize=True)
@given(case=interval_cases(), keep=st.integers(0, 30))
def test_every_job_counts_and_newest_are_those_of_walking_every_instant(
    case: tuple[IntervalSchedule, datetime, datetime], keep: int
) -> None:
    schedule, last, until = case
    every = walk(schedule, last, until)
    got = missed_instants(schedule, last, until, keep)
    assert (got.total, got.counted_all) == (len(every), True)
    assert got.newest == every[max(0, len(every) - keep) :]


def old_plan(
    job: JobSpec, instants: list[datetime], now: datetime
) -> tuple[list[datetime], list[datetime], int]:
    """The plan as it was made from every instant: the reference."""
    deadline = None if job.starting_deadline is None else timedelta(seconds=job.starting_deadline)
    runnable = [t for t in instants if deadline is None or now - t <= deadline]
    if job.catch_up == "latest":
        runnable = runnable[-1:]
    elif job.catch_up == "all":
        runnable = runnable[-job.catch_up_limit :] if job.catch_up_limit else []
    else:
        runnable = []
    not_run = [t for t in instants if t not in set(runnable)]
    missed = not_run[-job.catch_up_limit :] if job.catch_up_limit else []
    return runnable, missed, len(not_run)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    case=interval_cases(),
    policy=st.sampled_from(["none", "latest", "all"]),
    limit=st.integers(0, 6),
    deadline=st.none() | st.floats(0.001, 50.0),
    late=st.floats(0.0, 50.0),
)
def test_plans_are_those_made_from_every_instant(
    case: tuple[IntervalSchedule, datetime, datetime],
    policy: str,
    limit: int,
    deadline: float | None,
    late: float,
) -> None:
    schedule, last, until = case
    job = make_job(every=1.0, catch_up=policy, catch_up_limit=limit, starting_deadline=deadline)
    now = until + timedelta(seconds=late)
    plan = plan_catch_up(job, schedule, last=last, until=until, now=now)
    assert (plan.run, plan.missed, plan.missed_total) == old_plan(
        job, walk(schedule, last, until), now
    )
    assert plan.counted_all


CRONS = [
    "* * * * *",
    "*/7 * * * *",
    "0,30 2 * * *",  # fixed-time: its skipped-hour matches fire once as the clocks jump
    "* 2 * * *",  # wildcard in the hour DST skips or repeats
    "30 2 * * *",
    "0 12 * * 1-5",
    "*/20 * * * * *",
    "*/5 * 2 * * *",  # bursts: windows walking back into one are halved
    "0 0 1 * *",
]
# Around DST changes: Paris (spring, autumn), Lord Howe (30 minutes, spring and autumn).
AROUND = [datetime(2026, 3, 29, 1), datetime(2026, 10, 25, 1), datetime(2026, 4, 4, 15), T]


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    expr=st.sampled_from(CRONS),
    zone=st.sampled_from(["UTC", "Europe/Paris", "Australia/Lord_Howe"]),
    around=st.sampled_from(AROUND),
    start=st.integers(-86400, 86400),
    gap=st.integers(-3600, 86400),
    keep=st.integers(0, 30),
    count_limit=st.integers(0, 80),
)
def test_cron_counts_and_newest_are_those_of_walking_every_instant(
    expr: str, zone: str, around: datetime, start: int, gap: int, keep: int, count_limit: int
) -> None:
    schedule = build_schedule(make_job(cron=expr, timezone=zone))
    last = around.replace(tzinfo=UTC) + timedelta(seconds=start, microseconds=start % 7)
    until = last + timedelta(seconds=gap)
    every = walk(schedule, last, until)
    got = missed_instants(schedule, last, until, keep, count_limit)
    assert got.newest == every[max(0, len(every) - keep) :]
    assert got.total <= len(every)
    assert got.total == len(every) or (not got.counted_all and got.total > count_limit)
    if len(every) <= max(keep, count_limit):
        assert got.counted_all


# -- yielding: however many jobs, the loop goes on -----------------------------------------------


class Turns:
    """Counts the loop's turns: a task that goes round as often as the loop lets it."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


async def test_catch_up_after_a_restart_yields_to_the_loop_between_two_jobs() -> None:
    turns = Turns()
    rows: list[tuple[str, int]] = []  # (job, loop turn when its missed rows were recorded)

    class Sink:
        def record(self, rec: ExecutionRecord) -> None:
            rows.append((rec.job_name, turns.count))

    jobs = [make_job(f"j{i}", every=1.0, catch_up="none") for i in range(5)]
    ticker = asyncio.create_task(turns.run())
    try:
        await catch_up(
            jobs,
            {job.name: s(0) for job in jobs},
            resumed_at=s(3),
            now=s(3),
            runner=cast("Runner", None),  # catch_up: none runs nothing
            recorder=Sink(),
            node="n",
            track=lambda task: None,
        )
    finally:
        ticker.cancel()
    turn_of = {name: turn for name, turn in rows}
    assert len(rows) == 3 * len(jobs) and list(turn_of) == [job.name for job in jobs]
    assert all(turn_of[name] == turn for name, turn in rows)  # one job is planned in one go
    assert sorted(set(turn_of.values())) == list(turn_of.values())  # another task ran between
