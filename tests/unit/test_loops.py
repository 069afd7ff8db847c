"""The daemon's background loops, each owned by the part it serves, on the fake clock: metrics
folding, the watchdog heartbeat, `running` rows, and the control polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation import metrics as metrics_module
from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.notify import Notifier
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.operation.pauses import CONTROL_POLL, Pauses, watch_controls
from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.running.runner import Runner
from tests.helpers import FakeClock, make_job, rec

SINCE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def looping(loop: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(loop)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()  # the loop ran until stopped: it never ended on its own


# -- metrics folding -----------------------------------------------------------------------------


class Starts:
    """``runner.attempts_started``: moves by one on every read while ``busy``."""

    def __init__(self, busy: bool) -> None:
        self.busy, self.count = busy, 0

    def __call__(self) -> int:
        self.count += self.busy
        return self.count


@pytest.mark.parametrize(
    ("reports", "busy", "backlog_limit", "left"),
    [
        (1200, False, 20_000, 0),  # quiet: folded, a chunk per quiet spell
        (1200, True, 20_000, 1200),  # fires starting all the time: nothing folded yet
        (1200, True, 1000, 900),  # a backlog at the limit is folded anyway, to under it
        (0, False, 20_000, 0),
    ],
    ids=["quiet", "busy", "busy-backlog", "nothing"],
)
async def test_metrics_are_folded_a_chunk_at_a_time_while_no_fire_starts(
    monkeypatch: pytest.MonkeyPatch, reports: int, busy: bool, backlog_limit: int, left: int
) -> None:
    monkeypatch.setattr(metrics_module, "FOLD_BACKLOG", backlog_limit)
    monkeypatch.setattr(metrics_module, "FOLD_CHUNK", 100)
    clock, metrics = FakeClock(), Metrics()
    for i in range(reports):
        metrics.attempt_finished(rec(n=i))
    async with looping(metrics.fold_when_quiet(clock, Starts(busy))):
        await clock.advance(metrics_module.FOLD_EVERY - 0.001)
        assert metrics.backlog() == reports  # nothing before the first period
        await clock.advance(1.0)
    assert metrics.backlog() == left


# -- the watchdog --------------------------------------------------------------------------------


class RecordingNotifier(Notifier):
    def __init__(self, environ: dict[str, str]) -> None:
        super().__init__({"NOTIFY_SOCKET": "/run/test.sock", **environ})
        self.sent: list[tuple[float, tuple[str, ...]]] = []
        self.clock: FakeClock | None = None

    def send(self, *lines: str) -> None:
        assert self.clock is not None
        self.sent.append((self.clock.monotonic(), lines))


@pytest.mark.parametrize(
    ("environ", "period"),
    [
        ({}, 10.0),  # no watchdog: STATUS= every 10 s
        ({"WATCHDOG_USEC": "4000000"}, 2.0),  # half the watchdog's timeout
        ({"WATCHDOG_USEC": "60000000"}, 10.0),  # capped: the status line stays fresh
    ],
    ids=["no-watchdog", "watchdog-4s", "watchdog-60s"],
)
async def test_the_heartbeat_pings_the_watchdog_and_refreshes_the_status(
    environ: dict[str, str], period: float
) -> None:
    clock, notifier = FakeClock(), RecordingNotifier(environ)
    notifier.clock = clock
    start = clock.monotonic()
    lines = iter(range(100))
    async with looping(notifier.heartbeat(clock, lambda: f"{next(lines)} running")):
        await clock.advance(3 * period)
    pings = [at - start for at, sent in notifier.sent if sent == ("WATCHDOG=1",)]
    statuses = [sent for _, sent in notifier.sent if sent[0].startswith("STATUS=")]
    assert pings == [0.0, period, 2 * period, 3 * period]
    assert statuses == [(f"STATUS={n} running",) for n in range(4)]


# -- `running` rows ------------------------------------------------------------------------------


class LongAction:
    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        await self.clock.sleep(self.seconds)
        return Outcome(status=Status.SUCCEEDED, retryable=False)


class Sink:
    def __init__(self) -> None:
        self.records: list[ExecutionRecord] = []

    def record(self, rec: ExecutionRecord) -> None:
        self.records.append(rec)

    def statuses(self) -> list[str]:
        return [str(r.status) for r in self.records]


@pytest.mark.parametrize(
    ("runs_for", "statuses"),
    [
        (0.1, ["succeeded"]),  # ended before the next announcement: never needed a row
        (0.5, ["running", "succeeded"]),  # one `running` row, however long it runs
        (5.0, ["running", "succeeded"]),
    ],
    ids=["short", "longer", "long"],
)
async def test_attempts_in_flight_get_one_running_row_per_period(
    runs_for: float, statuses: list[str]
) -> None:
    clock, sink = FakeClock(), Sink()
    runner = Runner(
        clock=clock,
        limiter=Limiter(4),
        recorder=sink,
        action_for=lambda job: LongAction(clock, runs_for),
        node="n1",
    )
    async with looping(runner.announce_running_every(0.2)):
        runner.submit(make_job("slow"), datetime.fromtimestamp(clock.time(), UTC))
        await clock.advance(runs_for + 1.0)
    assert sink.statuses() == statuses


# -- control polling -----------------------------------------------------------------------------


class StubPool:
    def __init__(self, paused: dict[str, datetime], runs: list[uuid.UUID]) -> None:
        self.paused, self.runs, self.reads = paused, runs, 0
        self.error: BaseException | None = None

    async def fetch(self, sql: str, *args: object) -> list[dict[str, Any]]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        if "FROM jobs" in sql:
            return [{"name": k, "paused_at": v} for k, v in self.paused.items()]
        at = datetime(2100, 1, 1, tzinfo=UTC)  # far away: the run only waits
        return [
            {"id": i, "job_name": "report", "run_at": at, "overrides": None, "created_at": None,
             "started_at": None, "cancelled_at": None}
            for i in self.runs
        ]  # fmt: skip


class StubDatabase:
    def __init__(self, pool: StubPool | None) -> None:
        self.pool = pool


@pytest.mark.parametrize(
    ("connected", "ready", "error", "adopted"),
    [
        (True, True, None, True),
        (False, True, None, False),  # no pool: nothing to read
        (True, False, None, False),  # the first connection's recovery has not settled yet
        (True, True, OSError("connection reset"), False),  # logged (debug), tried again later
        (True, True, TimeoutError(), False),
    ],
    ids=["adopted", "disconnected", "recovering", "reset", "timeout"],
)
async def test_controls_written_by_others_are_picked_up(
    tmp_path: Path, connected: bool, ready: bool, error: BaseException | None, adopted: bool
) -> None:
    clock = FakeClock()
    run_id = uuid.uuid4()
    pool = StubPool({"report": SINCE}, [run_id])
    pool.error = error
    pauses = Pauses(cache=tmp_path / "paused.json")
    runs = OneOffRuns(clock=clock, database=StubDatabase(None), job=lambda n: None,
                      submit=lambda *a, **k: None)  # fmt: skip
    loop = watch_controls(clock=clock, database=StubDatabase(pool if connected else None),
                          ready=lambda: ready, pauses=pauses, runs=runs)  # fmt: skip
    with capture_logs() as logs:
        async with looping(loop):
            await clock.advance(CONTROL_POLL * 3)
    assert dict(pauses) == ({"report": SINCE} if adopted else {})
    assert runs.pending() == (1 if adopted else 0)
    changed = [e for e in logs if e["event"] == "paused_jobs_changed"]
    assert len(changed) == (1 if adopted else 0)  # three polls, one change
    if error is not None:
        assert [e["event"] for e in logs] == ["controls_not_read"] * 3
    await runs.close()
