"""Overlap, priorities, retries, timeouts and drain, all on the fake clock."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.actions.python import PythonAction, job_threads
from scheduler_daemon.running.fire import ActionFor, Fire, backoff_delay
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import JobSpec, PythonSpec, RetrySpec
from scheduler_daemon.storage.startline import decode_start, encode_fire
from tests.helpers import FakeClock, make_job

T0 = 1_767_225_600.0

OK = Outcome(status=Status.SUCCEEDED, retryable=False)
FAIL = Outcome(status=Status.FAILED, retryable=True, error="boom")
FATAL = Outcome(status=Status.FAILED, retryable=False, error="HTTP 404", http_status=404)


class ScriptedAction:
    """Each run takes ``duration`` seconds of fake time, then returns (or raises) the next step."""

    def __init__(self, clock: FakeClock, *steps: tuple[float, Outcome | BaseException]) -> None:
        self.clock = clock
        self.steps = list(steps)
        self.starts: list[float] = []
        self.overrides: list[Mapping[str, Any] | None] = []
        self.cancelled = 0

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        step = self.steps[min(len(self.starts), len(self.steps) - 1)]
        self.starts.append(self.clock.time())
        self.overrides.append(overrides)
        try:
            await self.clock.sleep(step[0])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(step[1], BaseException):
            raise step[1]
        return step[1]


class Sink:
    """Collects records; `running` placeholders apart from final rows."""

    def __init__(self) -> None:
        self.records: list[ExecutionRecord] = []
        self.running: list[ExecutionRecord] = []

    def record(self, rec: ExecutionRecord) -> None:
        (self.running if rec.status is Status.RUNNING else self.records).append(rec)

    def statuses(self) -> list[str]:
        return [str(r.status) for r in self.records]


class Starts:
    """A start log whose writes complete when the test says (``commit``); what it logs is read
    back from the line the real one would write."""

    def __init__(self) -> None:
        self.logged: list[ExecutionRecord] = []
        self.covered: list[ExecutionRecord] = []  # entries a row was recorded for
        self._waiters: list[asyncio.Future[None]] = []
        self._then: list[tuple[Callable[[Fire], None], Fire]] = []

    def log_fire(
        self,
        fire: Fire,
        started: float,
        drift_ms: float,
        node: str,
        then: Callable[[Fire], None] | None = None,
    ) -> Entry:
        rec = decode_start(encode_fire(fire, started, drift_ms, node).encode())
        self.logged.append(rec)
        if then is not None:
            self._then.append((then, fire))
        return Entry(self, rec)

    def durable(self) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def commit(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        then, self._then = self._then, []
        for call, fire in then:
            call(fire)


class Entry:
    def __init__(self, starts: Starts, rec: ExecutionRecord) -> None:
        self.starts, self.rec = starts, rec

    def recorded(self) -> None:
        self.starts.covered.append(self.rec)


class Rig:
    def __init__(
        self,
        capacity: int = 10,
        action_for: ActionFor | None = None,
        starts: Starts | None = None,
    ) -> None:
        self.clock = FakeClock(T0)
        self.sink = Sink()
        self.actions: dict[str, ScriptedAction] = {}
        self.limiter = Limiter(capacity)
        self.runner = Runner(
            clock=self.clock,
            limiter=self.limiter,
            recorder=self.sink,
            action_for=action_for or (lambda job: self.actions[job.name]),
            node="test-node",
            rng=random.Random(7),
            starts=starts,
        )

    def script(self, name: str, *steps: tuple[float, Outcome | BaseException]) -> ScriptedAction:
        self.actions[name] = ScriptedAction(self.clock, *steps)
        return self.actions[name]

    def fire(self, job: JobSpec, at: float | None = None, **kw: Any) -> None:
        when = datetime.fromtimestamp(self.clock.time() if at is None else at, UTC)
        self.runner.submit(job, when, **kw)


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_a_successful_fire_is_one_record_with_drift_and_duration(rig: Rig) -> None:
    rig.script("j", (2.5, OK))
    rig.fire(make_job("j"), at=T0 - 0.04)  # dispatched 40 ms late
    await rig.clock.advance(10)
    [rec] = rig.sink.records
    assert rec.status is Status.SUCCEEDED and rec.attempt == 1 and rec.trigger is FireKind.SCHEDULE
    assert rec.drift_ms == pytest.approx(40.0)
    assert rec.duration_ms == pytest.approx(2500.0)
    assert rec.started_at == datetime.fromtimestamp(T0, UTC)
    assert rec.finished_at == datetime.fromtimestamp(T0 + 2.5, UTC)
    assert rec.node == "test-node"


async def test_retries_are_spaced_by_exponential_backoff(rig: Rig) -> None:
    action = rig.script("j", (1, FAIL), (1, FAIL), (1, FAIL), (1, OK))
    job = make_job("j", retry=RetrySpec(attempts=4, delay=2, backoff=3, max_delay=10))
    rig.fire(job)
    await rig.clock.advance(100)
    # attempt n+1 starts `delay * backoff**(n-1)` (capped at max_delay) after attempt n finished
    assert [s - T0 for s in action.starts] == [0, 1 + 2, 3 + 1 + 6, 10 + 1 + 10]
    assert rig.sink.statuses() == ["failed", "failed", "failed", "succeeded"]
    assert [r.attempt for r in rig.sink.records] == [1, 2, 3, 4]
    assert len({r.fire_id for r in rig.sink.records}) == 1
    assert all(
        r.drift_ms == pytest.approx(0) for r in rig.sink.records
    )  # each against its due time


async def test_retries_stop_after_the_configured_attempts(rig: Rig) -> None:
    rig.script("j", (0, FAIL))
    rig.fire(make_job("j", retry=RetrySpec(attempts=3, delay=1)))
    await rig.clock.advance(100)
    assert rig.sink.statuses() == ["failed"] * 3


async def test_a_non_retryable_failure_is_not_retried(rig: Rig) -> None:
    rig.script("j", (0, FATAL))
    rig.fire(make_job("j", retry=RetrySpec(attempts=5, delay=1)))
    await rig.clock.advance(100)
    [rec] = rig.sink.records
    assert rec.status is Status.FAILED and rec.http_status == 404 and rec.error == "HTTP 404"


async def test_retry_after_is_honoured_when_longer_than_the_backoff(rig: Rig) -> None:
    throttled = Outcome(status=Status.FAILED, retryable=True, http_status=429, retry_after=30.0)
    action = rig.script("j", (0, throttled), (0, OK))
    rig.fire(make_job("j", retry=RetrySpec(attempts=2, delay=1)))
    await rig.clock.advance(100)
    assert [s - T0 for s in action.starts] == [0, 30]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RetrySpec(attempts=5, delay=10, backoff=2, max_delay=60, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff_delay(policy, 3, rng) for _ in range(500)]
    assert min(delays) >= 32 and max(delays) <= 48
    assert max(delays) - min(delays) > 10  # it really is jittered
    assert backoff_delay(policy.model_copy(update={"jitter": 0}), 9, rng) == 60


async def test_timeout_cancels_the_attempt_and_is_retried(rig: Rig) -> None:
    action = rig.script("j", (1000, OK), (1, OK))
    rig.fire(make_job("j", timeout=5.0, retry=RetrySpec(attempts=2, delay=1)))
    await rig.clock.advance(100)
    assert rig.sink.statuses() == ["timed_out", "succeeded"]
    assert rig.sink.records[0].duration_ms == pytest.approx(5000)
    assert rig.sink.records[0].error == "timed out after 5s"
    assert action.cancelled == 1
    assert [s - T0 for s in action.starts] == [0, 6]


async def test_a_job_without_a_timeout_times_out_after_an_hour(rig: Rig) -> None:
    rig.script("hung", (100_000, OK))
    rig.script("patient", (100_000, OK))
    rig.fire(make_job("hung"))
    rig.fire(make_job("patient", timeout=None))  # `timeout: null`: no timeout at all
    await rig.clock.advance(100_001)
    assert [(r.job_name, str(r.status), r.error) for r in rig.sink.records] == [
        ("hung", "timed_out", "timed out after 3600s"),
        ("patient", "succeeded", None),
    ]
    assert rig.sink.records[0].duration_ms == pytest.approx(3_600_000)


async def test_failed_attempts_are_logged_at_warning_successes_at_info(rig: Rig) -> None:
    rig.script("j", (0, FAIL), (1000, OK), (0, OK))
    rig.fire(make_job("j", timeout=5.0, retry=RetrySpec(attempts=3, delay=1)))
    with capture_logs() as logs:
        await rig.clock.advance(100)
    finished = [(e["status"], e["log_level"]) for e in logs if e["event"] == "attempt_finished"]
    assert finished == [("failed", "warning"), ("timed_out", "warning"), ("succeeded", "info")]


@pytest.mark.parametrize(
    ("args", "overrides", "statuses", "error"),
    [
        # The call cannot bind: no retry would fit it better.
        ({"n": 1}, {"nope": 1}, ["failed"], "bad arguments for tests.e2e_jobs:add: "
         "unexpected keyword argument 'nope'"),
        # The job's own body raised TypeError: a failure like any other, retried.
        ({"n": "one"}, None, ["failed"] * 3, 'TypeError: can only concatenate str (not "int") '
         "to str"),
    ],
    ids=["binding", "body"],
)  # fmt: skip
async def test_only_a_python_jobs_own_type_error_is_retried(
    args: dict[str, Any],
    overrides: dict[str, Any] | None,
    statuses: list[str],
    error: str,
) -> None:
    threads = job_threads(1)

    def python(job: JobSpec) -> PythonAction:
        assert isinstance(job.action, PythonSpec)
        return PythonAction(job.action, capture_bytes=100, threads=threads)

    rig = Rig(action_for=python)
    job = make_job("j", action=PythonSpec(target="tests.e2e_jobs:add", args=args),
                   retry=RetrySpec(attempts=3, delay=1))  # fmt: skip
    rig.fire(job, trigger=FireKind.MANUAL, overrides=overrides)
    await rig.clock.advance(100)
    assert rig.sink.statuses() == statuses
    assert {r.error for r in rig.sink.records} == {error}


async def test_overlap_skip_records_the_skipped_fire(rig: Rig) -> None:
    rig.script("j", (10, OK))
    job = make_job("j", overlap="skip")
    rig.fire(job)
    await rig.clock.advance(1)
    rig.fire(job)
    await rig.clock.advance(20)
    assert sorted(rig.sink.statuses()) == ["skipped", "succeeded"]
    skipped = next(r for r in rig.sink.records if r.status is Status.SKIPPED)
    assert skipped.started_at is None and "overlap: skip" in (skipped.error or "")


async def test_overlap_allow_runs_up_to_max_instances(rig: Rig) -> None:
    rig.script("j", (10, OK))
    job = make_job("j", overlap="allow", max_instances=2)
    for _ in range(3):
        rig.fire(job)
        await rig.clock.advance(1)
    assert len(rig.runner.active("j")) == 2
    await rig.clock.advance(20)
    assert sorted(rig.sink.statuses()) == ["skipped", "succeeded", "succeeded"]


async def test_overlap_replace_cancels_the_running_fire(rig: Rig) -> None:
    action = rig.script("j", (10, OK))
    job = make_job("j", overlap="replace")
    rig.fire(job)
    await rig.clock.advance(3)
    rig.fire(job)
    await rig.clock.advance(20)
    assert rig.sink.statuses() == ["cancelled", "succeeded"]
    assert "replaced" in (rig.sink.records[0].error or "")
    assert action.cancelled == 1


async def test_slots_are_admitted_by_priority() -> None:
    rig = Rig(capacity=1)
    for name in ("busy", "low", "normal", "high"):
        rig.script(name, (1, OK))
    rig.fire(make_job("busy"))
    await rig.clock.advance(0.5)
    for prio in ("low", "normal", "high"):
        rig.fire(make_job(prio, priority=prio))
    await rig.clock.advance(10)
    assert [r.job_name for r in rig.sink.records] == ["busy", "high", "normal", "low"]
    # waiting for a slot counts as drift: measured to when the action actually began
    assert [r.drift_ms for r in rig.sink.records] == pytest.approx([0, 500, 1500, 2500])


async def test_an_action_that_raises_fails_the_attempt_not_the_daemon(rig: Rig) -> None:
    rig.script("j", (0, RuntimeError("bug in action")))
    rig.fire(make_job("j", retry=RetrySpec(attempts=3)))
    await rig.clock.advance(10)
    [rec] = rig.sink.records
    assert rec.status is Status.FAILED and "bug in action" in (rec.error or "")


async def test_manual_fire_gets_a_random_fire_id_and_overrides(rig: Rig) -> None:
    action = rig.script("j", (0, OK))
    job = make_job("j", overlap="allow", max_instances=5)
    rig.fire(job, trigger=FireKind.MANUAL, overrides={"date": "2026-01-01"})
    rig.fire(job, trigger=FireKind.MANUAL)
    rig.fire(job)
    rig.fire(job)
    await rig.clock.advance(1)
    ids = [r.fire_id for r in rig.sink.records]
    manual = [r for r in rig.sink.records if r.trigger is FireKind.MANUAL]
    assert len(manual) == 2 and manual[0].fire_id != manual[1].fire_id
    scheduled = [r for r in rig.sink.records if r.trigger is FireKind.SCHEDULE]
    assert scheduled[0].fire_id == scheduled[1].fire_id  # same job and instant: same fire
    assert len(set(ids)) == 3
    assert {"date": "2026-01-01"} in action.overrides


async def test_drain_lets_short_attempts_finish_and_cancels_long_ones(rig: Rig) -> None:
    rig.limiter.resize(2)
    rig.script("short", (3, OK))
    rig.script("long", (100, OK))
    rig.script("queued", (1, OK))
    rig.fire(make_job("short"))
    rig.fire(make_job("long"))
    rig.fire(make_job("queued"))  # waits for a slot
    await rig.clock.advance(1)
    drain = asyncio.create_task(rig.runner.drain(grace=10))
    await rig.clock.advance(20)
    await asyncio.wait_for(drain, 1)
    by_job = {r.job_name: r for r in rig.sink.records}
    assert by_job["short"].status is Status.SUCCEEDED
    assert by_job["long"].status is Status.CANCELLED
    assert "grace" in (by_job["long"].error or "")
    assert by_job["long"].finished_at == datetime.fromtimestamp(T0 + 11, UTC)
    assert by_job["queued"].status is Status.CANCELLED and by_job["queued"].started_at is None
    assert rig.runner.active() == []


async def test_drain_does_not_start_retries(rig: Rig) -> None:
    action = rig.script("j", (0, FAIL))
    rig.fire(make_job("j", retry=RetrySpec(attempts=5, delay=5)))
    await rig.clock.advance(1)  # first attempt failed, now in backoff
    drain = asyncio.create_task(rig.runner.drain(grace=30))
    await rig.clock.advance(0)
    await asyncio.wait_for(drain, 1)
    assert len(action.starts) == 1 and rig.sink.statuses() == ["failed"]


async def test_fires_after_drain_are_recorded_as_cancelled(rig: Rig) -> None:
    await rig.runner.drain(grace=1)
    rig.fire(make_job("j"))
    assert rig.sink.statuses() == ["cancelled"]


async def test_attempts_in_flight_get_one_running_row_when_announced(rig: Rig) -> None:
    rig.script("slow", (5, OK))
    rig.script("quick", (0, OK))
    rig.fire(make_job("slow"))
    rig.fire(make_job("quick"))
    await rig.clock.advance(1)
    assert rig.runner.announce_running() == 1  # only the attempt still in flight
    assert rig.runner.announce_running() == 0  # once per attempt
    [running] = rig.sink.running
    assert (running.job_name, running.attempt, running.finished_at) == ("slow", 1, None)
    assert running.started_at == datetime.fromtimestamp(T0, UTC)
    await rig.clock.advance(10)
    assert sorted(r.job_name for r in rig.sink.records) == ["quick", "slow"]
    assert rig.sink.records[-1].fire_id == running.fire_id


async def test_each_retry_is_announced_afresh(rig: Rig) -> None:
    rig.script("j", (2, FAIL), (2, OK))
    rig.fire(make_job("j", retry=RetrySpec(attempts=2, delay=1)))
    await rig.clock.advance(1)
    rig.runner.announce_running()
    await rig.clock.advance(2)  # attempt 1 failed, attempt 2 in flight
    rig.runner.announce_running()
    assert [r.attempt for r in rig.sink.running] == [1, 2]


async def test_a_fire_can_resume_at_a_later_attempt(rig: Rig) -> None:
    rig.script("j", (0, OK))
    fire_id = uuid.uuid4()
    rig.fire(make_job("j", retry=RetrySpec(attempts=3)), fire_id=fire_id, attempt=2)
    await rig.clock.advance(1)
    [rec] = rig.sink.records
    assert (rec.fire_id, rec.attempt, rec.status) == (fire_id, 2, Status.SUCCEEDED)


# -- with a start log: an attempt's start is on disk before its action begins --------------------


async def test_an_attempt_begins_only_once_its_start_is_durable() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    action = rig.script("j", (1, OK))
    rig.fire(make_job("j"), at=T0 - 0.04)
    await rig.clock.settle()
    [logged] = starts.logged
    assert (logged.status, logged.attempt, logged.finished_at) == (Status.RUNNING, 1, None)
    assert logged.started_at == datetime.fromtimestamp(T0, UTC)
    assert logged.drift_ms == pytest.approx(40.0)
    assert action.starts == []  # its start is not on disk yet
    assert rig.runner.announce_running() == 0  # not running yet either
    starts.commit()
    await rig.clock.advance(2)
    assert action.starts == [T0]
    assert rig.sink.statuses() == ["succeeded"]
    assert starts.covered == [logged]  # by the final row


async def test_a_fire_cancelled_before_its_start_is_durable_never_runs() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    action = rig.script("j", (1, OK))
    rig.fire(make_job("j"))
    await rig.clock.settle()
    rig.runner.cancel_job("j", "job removed by reload")
    await rig.clock.advance(2)
    assert action.starts == []
    [rec] = rig.sink.records
    assert (rec.status, rec.started_at, rec.error) == (
        Status.CANCELLED,
        None,
        "job removed by reload",
    )
    assert starts.covered == starts.logged  # its row covers the entry, should it be on disk


async def test_drain_cancels_at_once_an_attempt_whose_start_is_not_durable() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    rig.script("j", (1, OK))
    rig.fire(make_job("j"))
    await rig.clock.settle()
    await asyncio.wait_for(rig.runner.drain(grace=30), 1)
    assert rig.sink.statuses() == ["cancelled"]
    assert len(starts.covered) == 1


async def test_a_long_attempt_is_covered_once_by_its_running_row() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    rig.script("j", (10, OK))
    rig.fire(make_job("j"))
    await rig.clock.settle()
    starts.commit()
    await rig.clock.advance(1)
    assert rig.runner.announce_running() == 1
    assert starts.covered == starts.logged
    await rig.clock.advance(10)
    assert rig.sink.statuses() == ["succeeded"]
    assert len(starts.covered) == 1  # not again by the final row


async def test_each_attempt_logs_its_own_start() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    rig.script("j", (1, FAIL), (1, OK))
    rig.fire(make_job("j", retry=RetrySpec(attempts=2, delay=1)))
    for _ in range(3):
        await rig.clock.settle()
        starts.commit()
        await rig.clock.advance(1)
    assert rig.sink.statuses() == ["failed", "succeeded"]
    assert [r.attempt for r in starts.logged] == [1, 2]
    assert starts.covered == starts.logged


async def test_a_burst_waits_for_its_commit_holding_slots_but_no_task_per_fire() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    actions = [rig.script(f"j{i}", (1, OK)) for i in range(5)]
    tasks = len(asyncio.all_tasks())
    for i in range(5):
        rig.fire(make_job(f"j{i}"))
    await rig.clock.settle()
    assert len(starts.logged) == 5 and rig.limiter.in_use == 5
    assert len(asyncio.all_tasks()) == tasks  # their starts are not durable: nothing to run yet
    assert [a.starts for a in actions] == [[]] * 5
    starts.commit()
    await rig.clock.advance(2)
    assert [a.starts for a in actions] == [[T0]] * 5
    assert rig.sink.statuses() == ["succeeded"] * 5 and rig.limiter.in_use == 0
    assert starts.covered == starts.logged


async def test_a_fire_cancelled_after_its_commit_before_its_task_ran_is_recorded_once() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    action = rig.script("j", (1, OK))
    rig.fire(make_job("j"))
    starts.commit()  # its task is created, and has not run a step yet
    rig.runner.cancel_job("j", "job removed by reload")
    await rig.clock.advance(2)
    assert action.starts == [] and rig.limiter.in_use == 0
    assert [(r.status, r.error) for r in rig.sink.records] == [
        (Status.CANCELLED, "job removed by reload")
    ]
    assert starts.covered == starts.logged and rig.runner.active() == []


async def test_overlap_replace_of_a_fire_whose_start_is_not_durable() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    action = rig.script("j", (1, OK))
    job = make_job("j", overlap="replace")
    rig.fire(job)
    rig.fire(job, at=T0 + 0.5)
    assert [(r.status, r.scheduled_at.timestamp()) for r in rig.sink.records] == [
        (Status.CANCELLED, T0)
    ]
    assert rig.limiter.in_use == 1
    starts.commit()
    await rig.clock.advance(2)
    assert action.starts == [T0] and rig.sink.statuses() == ["cancelled", "succeeded"]
    assert rig.limiter.in_use == 0


async def test_a_fire_that_waited_for_a_slot_logs_its_start_then_waits_for_it() -> None:
    starts = Starts()
    rig = Rig(capacity=1, starts=starts)
    first, second = rig.script("a", (1, OK)), rig.script("b", (1, OK))
    rig.fire(make_job("a"))
    rig.fire(make_job("b"))
    await rig.clock.settle()
    starts.commit()
    await rig.clock.advance(1)  # a ends, b gets the slot and logs its start
    assert first.starts == [T0] and second.starts == []
    assert [r.job_name for r in starts.logged] == ["a", "b"]
    assert starts.logged[1].started_at == datetime.fromtimestamp(T0 + 1, UTC)
    starts.commit()
    await rig.clock.advance(1)
    assert second.starts == [T0 + 1] and rig.sink.statuses() == ["succeeded"] * 2


async def test_finished_waits_for_a_fire_whose_start_is_not_yet_durable() -> None:
    starts = Starts()
    rig = Rig(starts=starts)
    rig.script("j", (1, OK))
    fire = rig.runner.submit(make_job("j"), datetime.fromtimestamp(T0, UTC))
    assert fire is not None
    waiting = asyncio.ensure_future(rig.runner.finished(fire))
    await rig.clock.settle()
    assert not waiting.done()
    starts.commit()
    await rig.clock.advance(1)
    await asyncio.wait_for(waiting, 1)
    assert rig.sink.statuses() == ["succeeded"]


@pytest.mark.parametrize("with_start_log", [False, True])
async def test_a_fire_cancelled_before_its_task_ran_a_step_is_recorded_cancelled(
    with_start_log: bool,
) -> None:
    rig = Rig(capacity=1, starts=Starts() if with_start_log else None)
    rig.script("first", (1, OK))
    action = rig.script("j", (1, OK))
    rig.fire(make_job("first"))  # takes the only slot
    rig.fire(make_job("j"))  # a task, to wait for a slot
    rig.runner.cancel_job("j", "job removed by reload")  # before any step of it
    await rig.clock.advance(2)
    assert action.starts == []
    assert [(r.job_name, r.status) for r in rig.sink.records if r.job_name == "j"] == [
        ("j", Status.CANCELLED)
    ]
    assert rig.runner.active("j") == []


async def test_a_start_log_that_raises_costs_the_fire_not_the_caller_of_submit() -> None:
    class Broken(Starts):
        def log_fire(self, *args: Any, **kwargs: Any) -> Entry:
            raise IndexError("a bug of ours")

    rig = Rig(capacity=1, starts=Broken())
    rig.script("j", (1, OK))
    with capture_logs() as logs:
        rig.fire(make_job("j"))  # does not raise
    assert [e["event"] for e in logs] == ["fire_crashed"]
    assert rig.limiter.in_use == 0 and rig.runner.active() == []
