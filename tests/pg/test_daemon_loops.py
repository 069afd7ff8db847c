"""The daemon notices a background loop that ends: it stops, in order, and says which."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.next_runs import NEXT_RUNS_EVERY, keep_next_runs_current
from scheduler_daemon.operation.notify import Notifier
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import store
from scheduler_daemon.timing.clock import Clock
from tests.helpers import FakeClock, make_job, query_value, wait_until


async def test_a_loop_that_dies_stops_the_daemon(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def heartbeat(self: Notifier, clock: Clock, status: Callable[[], str]) -> None:
        await clock.sleep(0.05)
        raise ValueError("the watchdog socket is gone")

    monkeypatch.setattr(Notifier, "heartbeat", heartbeat)
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{database_url}"}}\nstate_dir: ./state\n'
        'jobs:\n  ping: {every: 1h, command: ["true"]}\n'
    )
    daemon = Daemon(load_config(config))
    ended = "the heartbeat loop ended unexpectedly"
    with capture_logs() as logs, pytest.raises(RuntimeError, match=ended) as err:
        await asyncio.wait_for(daemon.run(), 30)
    assert isinstance(err.value.__cause__, ValueError)
    events = [e["event"] for e in logs]
    [died] = [e for e in logs if e["event"] == "background_task_died"]
    assert died["task"] == "heartbeat" and "watchdog socket" in died["error"]
    assert events.index("background_task_died") < events.index("daemon_stopping")
    assert events[-1] == "daemon_stopped"


class MovingJobs:
    """The scheduler's side of keep_next_runs_current: the jobs that moved, and their next fires
    (``upcoming``: the jobs still scheduled)."""

    def __init__(self, upcoming: dict[str, datetime | None], moved: set[str]) -> None:
        self.upcoming = upcoming
        self.moved = moved

    def take_moved(self) -> set[str]:
        moved, self.moved = self.moved, set()
        return moved

    def next_fires(self, names: Iterable[str]) -> dict[str, datetime | None]:
        return {name: self.upcoming[name] for name in names if name in self.upcoming}


async def test_next_run_at_follows_the_schedule_between_syncs(database_url: str) -> None:
    # The sync at start wrote 09:00; the job has fired since, and a reload synced only what it
    # changed: job_health must not keep showing 09:00 as the next fire.
    clock = FakeClock()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        stale = datetime(2026, 1, 1, 9, tzinfo=UTC)
        await store.sync_jobs(pool, [make_job("a"), make_job("b")], {"a": stale, "b": stale})
        upcoming: dict[str, datetime | None] = {"a": datetime(2026, 1, 1, 9, 5, tzinfo=UTC)}
        upcoming["b"] = stale

        class Connected:
            pool: asyncpg.Pool | None = None

        database = Connected()  # no pool yet: what moved meanwhile is written once there is
        schedule = MovingJobs(upcoming, {"a"})
        loop = asyncio.create_task(
            keep_next_runs_current(
                clock=clock, database=database, ready=lambda: True, schedule=schedule
            )
        )
        await clock.advance(NEXT_RUNS_EVERY)
        database.pool = pool
        await clock.advance(NEXT_RUNS_EVERY)

        async def written(name: str, at: datetime) -> bool:
            return bool(await query_value(database_url, "SELECT next_run_at = $2 FROM jobs"
                                          " WHERE name = $1", name, at))  # fmt: skip

        await wait_until(lambda: written("a", upcoming["a"]))
        upcoming["b"] = datetime(2026, 1, 2, 9, tzinfo=UTC)
        schedule.moved.add("b")
        await clock.advance(NEXT_RUNS_EVERY)
        await wait_until(lambda: written("b", upcoming["b"]))
        loop.cancel()
    finally:
        await pool.close()


async def test_a_replica_writes_the_next_fires_of_its_own_jobs_and_of_those_it_comes_to_own(
    database_url: str,
) -> None:
    # Two replicas writing every job's next fire locked each other's recorders out of `jobs`.
    clock = FakeClock()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        stale = datetime(2026, 1, 1, 9, tzinfo=UTC)
        jobs = [make_job(name) for name in ("ours", "theirs", "gone")]
        await store.sync_jobs(pool, jobs, dict.fromkeys(("ours", "theirs", "gone"), stale))
        later = datetime(2026, 1, 1, 9, 5, tzinfo=UTC)
        schedule = MovingJobs({"ours": later, "theirs": later}, {"ours", "theirs", "gone"})

        class Owned:
            live = ("a", "b")
            jobs = {"ours", "gone"}

            def mine(self, job: str) -> bool:
                return job in self.jobs

        owned = Owned()

        class Connected:
            pool: asyncpg.Pool | None = None

        database = Connected()
        database.pool = pool
        loop = asyncio.create_task(
            keep_next_runs_current(
                clock=clock, database=database, ready=lambda: True, schedule=schedule,
                owned=owned,
            )
        )  # fmt: skip

        async def written(expected: dict[str, datetime]) -> bool:
            rows = await pool.fetch("SELECT name, next_run_at FROM jobs")
            return {r["name"]: r["next_run_at"] for r in rows} == expected

        await clock.advance(NEXT_RUNS_EVERY)
        await wait_until(lambda: written({"ours": later, "theirs": stale, "gone": stale}))
        owned.live, owned.jobs = ("a",), {"ours", "gone", "theirs"}  # b left: not moved since
        await clock.advance(NEXT_RUNS_EVERY)
        await wait_until(lambda: written({"ours": later, "theirs": later, "gone": stale}))
        loop.cancel()
    finally:
        await pool.close()
