"""The heap loop on the fake clock: what fires when, with no real sleeping."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.scheduler import MAX_SLEEP, MIN_SLEEP, Scheduler
from scheduler_daemon.timing.schedules import Schedule, build_schedule
from tests.helpers import FakeClock, make_job

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def ts(dt: datetime) -> float:
    return dt.timestamp()


class Harness:
    def __init__(self, start: float = T0 + 0.25) -> None:
        self.clock = FakeClock(start)
        self.fired: list[tuple[str, float, float]] = []  # (job, scheduled, dispatched at)
        self.scheduler = Scheduler(clock=self.clock, dispatch=self._dispatch)

    def _dispatch(self, job: JobSpec, at: datetime) -> None:
        self.fired.append((job.name, ts(at), self.clock.time()))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.fired]


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    task = asyncio.create_task(harness.scheduler.run())
    yield harness
    harness.scheduler.stop()
    await harness.clock.advance(MAX_SLEEP)
    await asyncio.wait_for(task, 1)


async def test_every_job_fires_on_the_epoch_grid_exactly_on_time(h: Harness) -> None:
    h.scheduler.add(make_job("ten", every=10.0))
    await h.clock.advance(60)
    assert [at for _, at, _ in h.fired] == [T0 + 10 * k for k in range(1, 7)]
    assert all(dispatched == at for _, at, dispatched in h.fired)  # no drift on the fake clock


async def test_jobs_fire_in_due_order_and_simultaneous_fires_all_happen(h: Harness) -> None:
    h.scheduler.set_jobs(
        [make_job("a", every=2.0), make_job("b", every=3.0), make_job("c", every=6.0)]
    )
    await h.clock.advance(6)
    assert sorted((n, at - T0) for n, at, _ in h.fired) == sorted(
        [("a", 2), ("a", 4), ("a", 6), ("b", 3), ("b", 6), ("c", 6)]
    )
    assert [at for _, at, _ in h.fired] == sorted(at for _, at, _ in h.fired)


async def test_removed_job_stops_firing(h: Harness) -> None:
    h.scheduler.add(make_job("gone", every=1.0))
    await h.clock.advance(3)
    h.scheduler.remove("gone")
    await h.clock.advance(5)
    assert h.names() == ["gone"] * 3
    assert h.scheduler.next_fire("gone") is None


async def test_replacing_a_job_leaves_no_stale_entry(h: Harness) -> None:
    h.scheduler.add(make_job("j", every=1.0))
    await h.clock.advance(2)
    h.scheduler.add(make_job("j", every=5.0), after=datetime.fromtimestamp(h.clock.time(), UTC))
    await h.clock.advance(10)
    assert [at - T0 for _, at, _ in h.fired] == [1, 2, 5, 10]


async def test_disabled_job_never_fires(h: Harness) -> None:
    h.scheduler.add(make_job("off", every=1.0, enabled=False))
    await h.clock.advance(10)
    assert h.fired == []


async def test_one_shot_fires_once(h: Harness) -> None:
    at = datetime.fromtimestamp(T0 + 30, UTC)
    h.scheduler.add(make_job("once", at=at))
    await h.clock.advance(100)
    assert h.fired == [("once", T0 + 30, T0 + 30)]


async def test_a_job_added_while_the_loop_sleeps_fires_on_time(h: Harness) -> None:
    await h.clock.advance(0.5)
    h.scheduler.add(make_job("late", every=0.5))
    await h.clock.advance(1)
    assert [at - T0 for _, at, _ in h.fired] == [1.0, 1.5]


async def test_a_wake_up_never_swallows_a_real_cancel() -> None:
    """A wake-up cancels the sleeping loop and takes that cancel back; a cancel from anyone
    else, even in the same instant as a wake-up, ends the loop."""
    for wake_too in (False, True):
        harness = Harness()
        task = asyncio.create_task(harness.scheduler.run())
        await harness.clock.settle()  # asleep
        harness.scheduler.add(make_job("a", every=5.0))  # a wake-up: the loop goes on
        await harness.clock.settle()
        assert not task.done()
        if wake_too:
            harness.scheduler.add(make_job("b", every=5.0))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)


async def test_sleeps_are_bounded_so_clock_steps_are_noticed(h: Harness) -> None:
    h.scheduler.add(make_job("hourly", every=3600.0))
    await h.clock.advance(0)
    assert h.clock.pending_sleepers == 1
    # The loop wakes at least once per MAX_SLEEP even when nothing is due for an hour.
    for _ in range(3):
        await h.clock.advance(MAX_SLEEP)
        assert h.clock.pending_sleepers == 1
    h.clock.jump(3600)  # wall clock stepped forward: the next wake-up sees the job due
    await h.clock.advance(MAX_SLEEP)
    assert h.names() == ["hourly"]


async def test_a_fire_less_than_a_timer_tick_away_is_slept_for_not_spun_for() -> None:
    # uvloop rounds a timer to whole milliseconds: a sleep under 0.5 ms returned at once, and
    # with fires 250 µs apart (4,000 spread a second) the loop spun between them.
    asked: list[float] = []

    class RecordingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            asked.append(seconds)
            await super().sleep(seconds)

    clock = RecordingClock(T0 + 1 - 0.0003)
    fired: list[float] = []
    scheduler = Scheduler(clock=clock, dispatch=lambda job, at: fired.append(clock.time()))
    scheduler.add(make_job("spread", every=1.0))
    task = asyncio.create_task(scheduler.run())
    await clock.advance(0)
    assert asked == [MIN_SLEEP]  # one sleep past the fire's instant, not 0.3 ms
    await clock.advance(MIN_SLEEP)
    assert fired == [T0 + 1 - 0.0003 + MIN_SLEEP]  # late by less than a tick, never early
    scheduler.stop()
    await clock.advance(MAX_SLEEP)
    await asyncio.wait_for(task, 1)


def test_pop_due_after_a_stall_returns_every_missed_fire_in_order() -> None:
    clock = FakeClock(T0 + 0.5)
    scheduler = Scheduler(clock=clock, dispatch=lambda job, at: None)
    scheduler.set_jobs([make_job("s", every=1.0)])
    due = scheduler.pop_due(T0 + 5.5)
    assert [ts(at) - T0 for _, at in due] == [1, 2, 3, 4, 5]
    assert scheduler.next_fire("s") == datetime.fromtimestamp(T0 + 6, UTC)
    assert scheduler.pop_due(T0 + 5.9) == []


def test_heap_work_is_per_fire_not_per_job() -> None:
    clock = FakeClock(T0 + 0.5)
    scheduler = Scheduler(clock=clock, dispatch=lambda job, at: None)
    scheduler.set_jobs(make_job(f"j{i}", every=float(10 + i)) for i in range(1000))
    expected = sum(
        1
        for i in range(1000)
        if ts(scheduler.next_fire(f"j{i}")) <= T0 + 100  # type: ignore[arg-type]
    )
    assert len(scheduler.pop_due(T0 + 100)) >= expected > 0
    assert len(scheduler._heap) == 1000  # one live entry per job: popping pushes exactly one


def test_only_the_jobs_whose_next_fire_moved_are_handed_over() -> None:
    clock = FakeClock(T0 + 0.5)
    scheduler = Scheduler(clock=clock, dispatch=lambda job, at: None)
    scheduler.set_jobs(make_job(f"j{i}", every=5.0 if i < 2 else 3600.0) for i in range(1000))
    assert len(scheduler.take_moved()) == 1000  # every job got its first fire
    assert scheduler.take_moved() == set()
    fired = {job.name for job, _ in scheduler.pop_due(T0 + 6)}
    assert fired == {"j0", "j1"}
    scheduler.remove("j1")
    moved = scheduler.take_moved()
    assert moved == fired
    assert scheduler.next_fires(moved) == {"j0": datetime.fromtimestamp(T0 + 10, UTC)}


def test_jobs_of_one_expression_share_one_schedule_and_zones_stay_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []

    def counted(job: JobSpec) -> Schedule:
        built.append(job.name)
        return build_schedule(job)

    monkeypatch.setattr("scheduler_daemon.timing.scheduler.build_schedule", counted)
    scheduler = Scheduler(clock=FakeClock(T0), dispatch=lambda job, at: None)
    scheduler.set_jobs(make_job(f"utc{i}", cron="0 9 * * *") for i in range(1000))
    scheduler.add(make_job("paris", cron="0 9 * * *", timezone="Europe/Paris"))
    scheduler.add(make_job("hourly", every=3600.0))
    assert built == ["utc0", "paris", "hourly"]  # was one per job: ~0.4 ms each for cron
    assert scheduler.next_fire("utc999") == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert scheduler.next_fire("paris") == datetime(2026, 1, 1, 8, tzinfo=UTC)


def test_jobs_of_one_expression_due_together_compute_their_next_fire_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[datetime] = []

    class Counted:
        def __init__(self, schedule: Schedule) -> None:
            self.schedule = schedule

        def next_after(self, t: datetime) -> datetime | None:
            asked.append(t)
            return self.schedule.next_after(t)

        def describe(self) -> str:
            return self.schedule.describe()

    monkeypatch.setattr(
        "scheduler_daemon.timing.scheduler.build_schedule", lambda job: Counted(build_schedule(job))
    )
    scheduler = Scheduler(clock=FakeClock(T0), dispatch=lambda job, at: None)
    scheduler.set_jobs(make_job(f"j{i}", cron="*/5 * * * *") for i in range(1000))
    due = scheduler.pop_due(T0 + 600)
    assert len(due) == 2000 and {at for _, at in due} == {
        datetime.fromtimestamp(T0 + 300, UTC),
        datetime.fromtimestamp(T0 + 600, UTC),
    }
    assert len(asked) == 3  # at the start, then once per instant: was once per job each time
    assert scheduler.next_fire("j999") == datetime.fromtimestamp(T0 + 900, UTC)


class JumpHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self.jumps: list[tuple[str, float, float]] = []
        self.scheduler = Scheduler(clock=self.clock, dispatch=self._dispatch, on_jump=self._jump)

    def _jump(self, job: JobSpec, first: datetime, now: datetime) -> None:
        self.jumps.append((job.name, ts(first), ts(now)))


@pytest.fixture
async def jh() -> AsyncIterator[JumpHarness]:
    harness = JumpHarness()
    task = asyncio.create_task(harness.scheduler.run())
    yield harness
    harness.scheduler.stop()
    await harness.clock.advance(MAX_SLEEP)
    await asyncio.wait_for(task, 1)


async def test_a_forward_clock_step_goes_to_catch_up_not_a_fire_storm(jh: JumpHarness) -> None:
    jh.scheduler.add(make_job("sec", every=1.0))
    jh.scheduler.add(make_job("daily", every=86400.0))
    await jh.clock.advance(3)
    assert len(jh.fired) == 3
    jh.clock.jump(3600)  # NTP steps the clock an hour ahead
    await jh.clock.advance(MAX_SLEEP)
    # the skipped hour is handed over once, from the first skipped instant; no burst of 3600 fires
    assert jh.jumps == [("sec", T0 + 4, T0 + 3604)]  # noticed at the next wake-up
    assert len(jh.fired) == 3
    await jh.clock.advance(2)
    assert [at - T0 for _, at, _ in jh.fired[3:]] == [3605, 3606]  # then on the grid again


async def test_a_backward_clock_step_repeats_no_fire(jh: JumpHarness) -> None:
    jh.scheduler.add(make_job("sec", every=1.0))
    await jh.clock.advance(5)
    made = [at for _, at, _ in jh.fired]
    jh.clock.jump(-30)
    await jh.clock.advance(40)
    later = [at for _, at, _ in jh.fired[len(made) :]]
    assert later and min(later) > max(made)  # instants already fired are not fired again
    assert later == sorted(set(later))
    assert jh.jumps == []


async def test_a_forward_clock_step_hands_each_job_over_on_its_own_loop_turn() -> None:
    clock = FakeClock(T0 + 0.25)
    turn = 0
    handed: list[tuple[str, int]] = []  # (job, loop turn when handed to the catch-up policy)
    scheduler = Scheduler(
        clock=clock,
        dispatch=lambda job, at: None,
        on_jump=lambda job, first, now: handed.append((job.name, turn)),
    )
    scheduler.set_jobs(make_job(f"j{i}", every=1.0) for i in range(5))

    async def count_turns() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(count_turns())
    loop = asyncio.create_task(scheduler.run())
    await clock.advance(2)
    clock.jump(3600)
    await clock.advance(MAX_SLEEP)
    scheduler.stop()
    ticker.cancel()
    await clock.advance(MAX_SLEEP)
    await asyncio.wait_for(loop, 1)
    assert sorted(name for name, _ in handed) == [f"j{i}" for i in range(5)]
    turns = [t for _, t in handed]
    assert sorted(set(turns)) == turns  # strictly later each time: another task ran between
