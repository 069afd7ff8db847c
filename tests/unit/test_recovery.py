"""After a crash: the catch-up leaves alone the fires whose attempts the start log says began;
abandoned attempts are retried and missed fires run per the job's delivery."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import structlog

from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.operation.pauses import Pauses
from scheduler_daemon.operation.recovery import Recovery, SyncJobs, catch_up_job, retry_abandoned
from scheduler_daemon.running.records import ExecutionRecord, Status, scheduled_fire_id
from scheduler_daemon.specs import RetrySpec
from tests.helpers import FakeClock, T, make_job


class Submits:
    """The runner's ``submit``, remembered."""

    def __init__(self) -> None:
        self.instants: list[datetime] = []

    def submit(self, job: Any, at: datetime, **kw: Any) -> None:
        self.instants.append(at)


class Rows:
    def __init__(self) -> None:
        self.records: list[ExecutionRecord] = []

    def record(self, rec: ExecutionRecord) -> None:
        self.records.append(rec)


def at(n: int) -> datetime:
    return T + timedelta(seconds=n)


@pytest.mark.parametrize(
    ("policy", "began", "run", "missed"),
    [
        ("latest", [], [4], [1, 2, 3]),
        ("latest", [4], [], [1, 2, 3]),  # the latest began: nothing runs, nothing twice
        ("latest", [2, 3], [4], [1]),  # lost rows before a start are the catch-up's still
        ("all", [2], [1, 3, 4], []),
        ("none", [1, 4], [], [2, 3]),
    ],
)
async def test_fires_that_began_are_neither_run_again_nor_recorded_missed(
    policy: str, began: list[int], run: list[int], missed: list[int]
) -> None:
    job = make_job("j", every=1.0, catch_up=policy)
    runner, rows = Submits(), Rows()
    task = catch_up_job(
        job,
        last=at(0),
        until=at(4),
        now=at(4),
        runner=runner,  # type: ignore[arg-type]
        recorder=rows,
        node="n1",
        why="test",
        began={scheduled_fire_id("j", at(n)) for n in began},
    )
    if task is not None:
        await task
    assert runner.instants == [at(n) for n in run]
    assert [r.scheduled_at for r in rows.records] == [at(n) for n in missed]


class Retries:
    """The runner's ``submit``, with the attempt each fire is resumed at."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, int]] = []

    def submit(self, job: Any, at: datetime, **kw: Any) -> None:
        self.submitted.append((job.name, kw["attempt"]))


def abandoned_row(job: str, attempt: int = 1) -> dict[str, Any]:
    return {
        "job_name": job,
        "attempt": attempt,
        "scheduled_at": at(0),
        "trigger": "schedule",
        "fire_id": scheduled_fire_id(job, at(0)),
    }


def test_an_abandoned_attempt_is_retried_at_least_once_but_never_at_most_once() -> None:
    retry = RetrySpec(attempts=3)
    jobs = {
        "least": make_job("least", retry=retry),
        "most": make_job("most", retry=retry, delivery="at_most_once"),
    }
    runner = Retries()
    with structlog.testing.capture_logs() as logs:
        retried = retry_abandoned(
            [abandoned_row("least"), abandoned_row("most")],
            jobs,
            runner,  # type: ignore[arg-type]
            at(1),
        )
    assert retried == 1 and runner.submitted == [("least", 2)]
    why = {e["job"]: e.get("not_retried") for e in logs if e["event"] == "attempt_abandoned"}
    assert why == {"least": None, "most": "delivery: at_most_once"}


def test_an_abandoned_chained_fire_is_not_retried_its_input_is_gone() -> None:
    jobs = {"step": make_job("step", retry=RetrySpec(attempts=3))}
    runner = Retries()
    with structlog.testing.capture_logs() as logs:
        retried = retry_abandoned(
            [{**abandoned_row("step"), "trigger": "chain"}],
            jobs,
            runner,  # type: ignore[arg-type]
            at(1),
        )
    assert retried == 0 and runner.submitted == []
    [event] = [e for e in logs if e["event"] == "attempt_abandoned"]
    assert event["not_retried"] == "a chained fire (its parent's result is gone)"


@pytest.mark.parametrize("policy", ["latest", "none"])
async def test_at_most_once_records_every_missed_fire_and_runs_none(policy: str) -> None:
    # `latest` with at_most_once is refused at load; the planner ignores it all the same.
    job = make_job("j", every=1.0, delivery="at_most_once").model_copy(update={"catch_up": policy})
    runner, rows = Submits(), Rows()
    task = catch_up_job(
        job,
        last=at(0),
        until=at(4),
        now=at(4),
        runner=runner,  # type: ignore[arg-type]
        recorder=rows,
        node="n1",
        why="the daemon was not running",
        began={scheduled_fire_id("j", at(2))},  # abandoned: its row is there already
    )
    assert task is None and runner.instants == []
    assert [r.scheduled_at for r in rows.records] == [at(1), at(3), at(4)]
    assert all(r.status is Status.MISSED for r in rows.records)
    assert all(r.error and "(delivery: at_most_once)" in r.error for r in rows.records)


async def test_a_forward_clock_step_records_an_at_most_once_jobs_fires_missed() -> None:
    clock = FakeClock()
    runner, rows = Submits(), Rows()
    recovery = Recovery(
        clock=clock,
        runner=runner,  # type: ignore[arg-type]
        recorder=rows,  # type: ignore[arg-type]
        node="n1",
        jobs=list,
        pauses=cast("Pauses", None),
        runs=cast("OneOffRuns", None),
        sync_jobs=cast("SyncJobs", None),
    )
    now = datetime.fromtimestamp(clock.time(), UTC)
    for name, delivery in (("least", "at_least_once"), ("most", "at_most_once")):
        job = make_job(name, every=10.0, delivery=delivery)
        recovery.on_clock_jump(job, now + timedelta(seconds=10), now + timedelta(seconds=30))
    await asyncio.sleep(0)  # one turn: the at-least-once job's catch-up submits its latest fire
    await recovery.close()
    assert runner.instants == [now + timedelta(seconds=30)]
    missed = sorted((r.job_name, r.scheduled_at - now) for r in rows.records)
    assert missed == [
        ("least", timedelta(seconds=10)),
        ("least", timedelta(seconds=20)),
        ("most", timedelta(seconds=10)),
        ("most", timedelta(seconds=20)),
        ("most", timedelta(seconds=30)),
    ]
    assert {r.error for r in rows.records if r.job_name == "most"} == {
        "missed: the wall clock jumped forward (delivery: at_most_once)"
    }


def test_a_runs_abandoned_attempt_resumes_with_the_runs_own_job_and_overrides() -> None:
    configured = make_job("greet")  # one attempt: not retried on its own
    own = configured.model_copy(update={"retry": RetrySpec(attempts=2)})
    adhoc = make_job("adhoc-1", retry=RetrySpec(attempts=3))  # configured nowhere
    rows = [abandoned_row("greet"), abandoned_row("adhoc-1"), abandoned_row("greet")]
    rows[0]["fire_id"], rows[1]["fire_id"] = uuid.uuid4(), uuid.uuid4()
    runs = {rows[0]["fire_id"]: (own, {"name": "x"}), rows[1]["fire_id"]: (adhoc, None)}
    submitted: list[tuple[str, int, Any]] = []

    class Runner:
        def submit(self, job: Any, at: datetime, **kw: Any) -> None:
            submitted.append((job.name, job.retry.attempts, kw["overrides"]))

    retried = retry_abandoned(rows, {"greet": configured}, Runner(), at(1), runs=runs)  # type: ignore[arg-type]
    assert retried == 2  # the scheduled fire of greet: its own single attempt, done
    assert submitted == [("greet", 2, {"name": "x"}), ("adhoc-1", 3, None)]
