"""The catch-up after a crash leaves alone the fires whose attempts the start log says began."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from scheduler_daemon.operation.recovery import catch_up_job
from scheduler_daemon.running.records import ExecutionRecord, scheduled_fire_id
from tests.helpers import T, make_job


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
