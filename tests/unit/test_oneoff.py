"""One-off runs on the fake clock: wait for the instant, claim in the database (again and again
while it is away), then submit a manual fire whose fire_id is the run's id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.oneoff import RUN_CLAIM_RETRY, OneOffRuns
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.specs import JobSpec, PythonSpec
from scheduler_daemon.storage.queries import OneOffRun
from tests.helpers import FakeClock, make_job

JOB = make_job("report", action=PythonSpec(target="reports:build"))  # takes keyword arguments


class StubPool:
    """The claim's UPDATE: each call takes the next answer ("UPDATE 1", "UPDATE 0" or an
    exception to raise)."""

    def __init__(self, *answers: str | BaseException) -> None:
        self.answers: Iterator[str | BaseException] = iter(answers)
        self.claims = 0
        self.queries: list[str] = []

    async def execute(self, sql: str, run_id: uuid.UUID) -> str:
        self.claims += 1
        answer = next(self.answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def fetchrow(self, sql: str, run_id: uuid.UUID) -> None:
        self.queries.append(sql)
        return None  # the run as it now is: gone (cancelled runs are not read back here)


class StubDatabase:
    def __init__(self, pool: StubPool | None) -> None:
        self.pool = pool


class Submitted:
    def __init__(self) -> None:
        self.fires: list[tuple[str, datetime, dict[str, Any]]] = []
        self.jobs: list[JobSpec] = []

    def __call__(self, job: JobSpec, scheduled_at: datetime, **kw: Any) -> None:
        self.fires.append((job.name, scheduled_at, kw))
        self.jobs.append(job)


def run_at(clock: FakeClock, seconds: float, job: str = "report") -> OneOffRun:
    at = datetime.fromtimestamp(clock.time(), UTC) + timedelta(seconds=seconds)
    return OneOffRun(id=uuid.uuid4(), job_name=job, run_at=at, overrides={"day": "monday"})


def runs(clock: FakeClock, database: StubDatabase, submit: Submitted) -> OneOffRuns:
    jobs = {JOB.name: JOB}
    return OneOffRuns(clock=clock, database=database, job=jobs.get, submit=submit)


async def test_a_run_waits_for_its_instant_then_starts_once_as_a_manual_fire() -> None:
    clock, submit, pool = FakeClock(), Submitted(), StubPool("UPDATE 1")
    oneoff = runs(clock, StubDatabase(pool), submit)
    run = run_at(clock, 90)  # longer than MAX_WAIT: woken once on the way
    oneoff.schedule([run, run])  # the same run twice (API, then the control poll): one wait
    assert oneoff.pending() == 1
    await clock.advance(89.9)
    assert submit.fires == [] and pool.claims == 0
    await clock.advance(0.1)
    assert submit.fires == [
        (
            "report",
            run.run_at,
            {"trigger": FireKind.MANUAL, "overrides": {"day": "monday"}, "fire_id": run.id},
        )
    ]
    assert pool.claims == 1 and oneoff.pending() == 0


@pytest.mark.parametrize(
    ("pool", "database_back_after", "claims", "started"),
    [
        (StubPool("UPDATE 1"), 0, 1, True),
        (StubPool("UPDATE 0"), 0, 1, False),  # cancelled meanwhile, or started by a predecessor
        (StubPool(OSError("refused"), TimeoutError(), "UPDATE 1"), 0, 3, True),
        (StubPool("UPDATE 1"), 2, 1, True),  # no pool for two retry periods
        (StubPool(ConnectionResetError(), "UPDATE 0"), 1, 2, False),
    ],
    ids=["claimed", "not-claimable", "errors-then-claimed", "away-then-claimed", "away-errors"],
)
async def test_the_claim_is_retried_while_the_database_is_away(
    pool: StubPool, database_back_after: int, claims: int, started: bool
) -> None:
    clock, submit = FakeClock(), Submitted()
    database = StubDatabase(None if database_back_after else pool)
    oneoff = runs(clock, database, submit)
    oneoff.schedule([run_at(clock, 0)])
    for _ in range(database_back_after):
        await clock.advance(RUN_CLAIM_RETRY)
    database.pool = pool
    for _ in range(claims):
        await clock.advance(RUN_CLAIM_RETRY)
    assert pool.claims == claims
    assert len(submit.fires) == (1 if started else 0)
    assert oneoff.pending() == 0


async def test_a_run_of_a_job_no_longer_configured_is_dropped_and_cancelled() -> None:
    clock, submit, pool = FakeClock(), Submitted(), StubPool("UPDATE 1")
    oneoff = runs(clock, StubDatabase(pool), submit)
    with capture_logs() as logs:
        oneoff.schedule([run_at(clock, 1, job="gone")])
        await clock.advance(1)
    assert submit.fires == [] and pool.claims == 0
    assert any(sql.lstrip().startswith("UPDATE runs SET cancelled_at") for sql in pool.queries)
    [dropped] = [e for e in logs if e["event"] == "oneoff_run_dropped"]
    assert dropped["job"] == "gone"


async def test_close_stops_every_wait() -> None:
    clock, submit = FakeClock(), Submitted()
    oneoff = runs(clock, StubDatabase(StubPool()), submit)
    oneoff.schedule([run_at(clock, 10), run_at(clock, 20)])
    assert oneoff.pending() == 2
    await oneoff.close()
    await clock.advance(30)
    assert oneoff.pending() == 0 and submit.fires == []


class StubRunsTable:
    """``cancel_run``'s UPDATE … RETURNING (then SELECT) on one row."""

    def __init__(self, run: OneOffRun, *, started: bool) -> None:
        self.row = {
            "id": run.id, "job_name": run.job_name, "run_at": run.run_at, "overrides": None,
            "created_at": None, "started_at": run.run_at if started else None,
            "cancelled_at": None,
        }  # fmt: skip
        self.started = started

    async def fetchrow(self, sql: str, run_id: uuid.UUID) -> dict[str, Any] | None:
        if sql.lstrip().startswith("UPDATE"):
            if self.started:
                return None
            self.row["cancelled_at"] = self.row["run_at"]
        return self.row


@pytest.mark.parametrize(
    ("started", "state", "pending"), [(False, "cancelled", 0), (True, "started", 1)]
)
async def test_cancel_stops_the_wait_only_of_a_run_cancelled_in_the_database(
    started: bool, state: str, pending: int
) -> None:
    clock, submit = FakeClock(), Submitted()
    oneoff = runs(clock, StubDatabase(None), submit)
    run = run_at(clock, 60)
    oneoff.schedule([run])
    table = StubRunsTable(run, started=started)
    cancelled = await oneoff.cancel(table, run.id)  # type: ignore[arg-type]
    assert cancelled is not None and cancelled.state == state
    await clock.settle()
    assert oneoff.pending() == pending
    await oneoff.close()


@pytest.mark.parametrize(
    ("run_id", "overrides", "why"),
    [
        (uuid.uuid4(), ["not", "an", "object"], "JSON object"),
        (uuid.uuid5(uuid.NAMESPACE_URL, "x"), None, "version 4"),  # a scheduled fire's kind of id
    ],
)
async def test_a_run_the_api_could_not_have_made_is_refused_not_started(
    run_id: uuid.UUID, overrides: Any, why: str
) -> None:
    clock, submit, pool = FakeClock(), Submitted(), StubPool("UPDATE 1")
    oneoff = runs(clock, StubDatabase(pool), submit)
    run = OneOffRun(
        id=run_id,
        job_name="report",
        run_at=datetime.fromtimestamp(clock.time(), UTC),
        overrides=overrides,
    )
    with capture_logs() as logs:
        oneoff.schedule([run])
        await clock.advance(0)
    assert submit.fires == [] and pool.claims == 0
    [refused] = [e for e in logs if e["event"] == "oneoff_run_refused"]
    assert why in refused["why"]


async def test_at_capacity_the_runs_due_first_are_waited_for_and_the_rest_later() -> None:
    clock, submit = FakeClock(), Submitted()
    jobs = {JOB.name: JOB}
    pool = StubPool(*["UPDATE 1"] * 5)
    oneoff = OneOffRuns(
        clock=clock, database=StubDatabase(pool), job=jobs.get, submit=submit, capacity=3
    )
    pending = [run_at(clock, seconds) for seconds in (10, 20, 30, 40, 50)]  # due first, first
    with capture_logs() as logs:
        oneoff.schedule(pending)
        oneoff.schedule(pending)  # the next control poll: still full, said once
    assert oneoff.pending() == 3
    assert [e["event"] for e in logs] == ["oneoff_runs_deferred"]
    await clock.advance(10)  # the first starts: room for one
    oneoff.schedule(pending[1:])  # what the table still holds as pending
    assert oneoff.pending() == 3
    await clock.advance(40)
    assert [fire[1] for fire in submit.fires] == [run.run_at for run in pending[:4]]
    oneoff.schedule(pending[4:])
    await clock.advance(10)
    assert len(submit.fires) == 5 and oneoff.pending() == 0


async def test_a_run_cancelled_here_is_not_waited_for_again_by_a_poll_that_read_it_before() -> None:
    clock, submit = FakeClock(), Submitted()
    oneoff = runs(clock, StubDatabase(None), submit)
    run = run_at(clock, 60)
    polled = [run]  # what a control poll read just before the cancel committed
    oneoff.schedule([run])
    await oneoff.cancel(StubRunsTable(run, started=False), run.id)  # type: ignore[arg-type]
    oneoff.schedule(polled)
    assert oneoff.pending() == 0
