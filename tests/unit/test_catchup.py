"""The catch-up policy after downtime, as tables: which missed fires run, which are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler_daemon.timing.catchup import missed_instants, plan_catch_up
from scheduler_daemon.timing.schedules import IntervalSchedule, build_schedule
from tests.helpers import make_job

T = datetime(2026, 1, 1, tzinfo=UTC)


def s(n: float) -> datetime:
    return T + timedelta(seconds=n)


def test_missed_instants_are_the_fires_after_last_up_to_until() -> None:
    got, complete = missed_instants(IntervalSchedule(10), last=s(10), until=s(50))
    assert got == [s(20), s(30), s(40), s(50)] and complete
    got, complete = missed_instants(IntervalSchedule(1), last=s(0), until=s(1000), limit=5)
    assert len(got) == 5 and not complete


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
