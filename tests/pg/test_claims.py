"""Cluster mode's claims on real PostgreSQL, replicas as objects in one process, on a fake clock:
who runs each fire, takeover of what the preferred replica left, retries and catch-up claimed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from scheduler_daemon.operation.claims import Claims, ClusterDispatch, Ownership, preferred
from scheduler_daemon.operation.recovery import catch_up_job
from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import JobSpec, RetrySpec
from scheduler_daemon.storage import fire_claims, store
from scheduler_daemon.storage.fire_claims import ClaimRequest
from tests.helpers import FakeClock, make_job, rec

T = datetime(2026, 1, 1, 12, tzinfo=UTC)


class Members:
    def __init__(self, *live: str) -> None:
        self.live: Sequence[str] = live
        self.connected = True


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


def replica(node: str, pool: asyncpg.Pool, members: Members) -> Claims:
    return Claims(node=node, pool=lambda: pool, members=members)


def requests(n: int, attempt: int = 1) -> list[ClaimRequest]:
    return [ClaimRequest(scheduled_fire_id(f"job{i}", T), attempt, f"job{i}", T) for i in range(n)]


async def test_each_attempt_is_won_by_exactly_one_replica(pool: asyncpg.Pool) -> None:
    members = Members("a", "b", "c")
    replicas = [replica(node, pool, members) for node in ("a", "b", "c")]
    asked = requests(300)
    won = await asyncio.gather(*(r.claim_all(asked) for r in replicas))
    assert sum(len(w) for w in won) == 300
    assert set().union(*won) == {r.fire_id for r in asked}
    assert sum(r.counts["won"] for r in replicas) == 300
    assert sum(r.counts["lost"] for r in replicas) == 600
    rows = await pool.fetchval("SELECT count(*) FROM fire_claims")
    assert rows == 300


async def test_a_replica_that_cannot_reach_the_others_claims_nothing(pool: asyncpg.Pool) -> None:
    cut_off = Members("a")
    cut_off.connected = False
    claims = replica("a", pool, cut_off)
    assert await claims.claim_all(requests(5)) == set()
    assert claims.counts["unreachable"] == 5
    assert await pool.fetchval("SELECT count(*) FROM fire_claims") == 0


def test_rendezvous_spreads_jobs_and_moves_only_a_leaving_replicas_jobs() -> None:
    jobs = [f"job-{i}" for i in range(600)]
    owners = {job: preferred(job, ("a", "b", "c")) for job in jobs}
    for node in ("a", "b", "c"):
        assert 0.25 < sum(1 for o in owners.values() if o == node) / len(jobs) < 0.42
    without_c = {job: preferred(job, ("a", "b")) for job in jobs}
    moved = [job for job in jobs if owners[job] != without_c[job]]
    assert moved and all(owners[job] == "c" for job in moved)


def test_what_a_replica_owns_follows_the_live_set() -> None:
    members = Members("a", "b", "c")
    owned = {node: Ownership(node, members) for node in ("a", "b", "c")}
    jobs = [f"job-{i}" for i in range(300)]
    assert all(sum(owned[n].mine(job) for n in "abc") == 1 for job in jobs)
    members.live = ("a", "b")  # c left: its jobs are a's and b's at once
    assert all(owned[preferred(job, ("a", "b"))].mine(job) for job in jobs)
    assert not any(owned["c"].mine(job) for job in jobs)  # out of the live set: only takes over
    members.live = ()  # no live set seen yet: every replica claims its fires
    assert all(owned["c"].mine(job) for job in jobs)


class Cluster:
    """Two replicas' dispatchers on one fake clock; what each submitted to its runner."""

    def __init__(self, pool: asyncpg.Pool, clock: FakeClock, live: tuple[str, ...]) -> None:
        self.members = Members(*live)
        self.submitted: dict[str, list[tuple[str, bool]]] = {"a": [], "b": []}
        self.dispatch = {
            node: ClusterDispatch(
                claims=replica(node, pool, self.members),
                members=self.members,
                limiter=Limiter(1000),
                submit=self._submitter(node),
                clock=clock,
                takeover_after=2.0,
            )
            for node in ("a", "b")
        }

    def _submitter(self, node: str) -> Any:
        def submit(job: JobSpec, at: datetime, **kw: Any) -> None:
            assert kw["claimed"] is True and kw["fire_id"] == scheduled_fire_id(job.name, at)
            self.submitted[node].append((job.name, kw["claimed"]))

        return submit


async def test_the_preferred_replica_runs_each_fire_and_the_other_only_takes_over(
    pool: asyncpg.Pool,
) -> None:
    clock = FakeClock(T.timestamp())
    cluster = Cluster(pool, clock, ("a", "b"))
    loops = [asyncio.create_task(d.take_over()) for d in cluster.dispatch.values()]
    try:
        jobs = [make_job(f"job{i}", every=60) for i in range(40)]
        for job in jobs:  # both replicas' schedulers fire every job at T
            for dispatch in cluster.dispatch.values():
                dispatch(job, T)
        await _settle(clock)
        ran = {node: {name for name, _ in done} for node, done in cluster.submitted.items()}
        assert ran["a"] == {j.name for j in jobs if preferred(j.name, ("a", "b")) == "a"}
        assert ran["b"] == {j.name for j in jobs if preferred(j.name, ("a", "b")) == "b"}
        await clock.advance(2.5)  # past takeover_after: nothing left to take over
        await _settle(clock)
        assert sum(len(done) for done in cluster.submitted.values()) == 40
        assert all(d.takeovers == 0 for d in cluster.dispatch.values())
        # a dies: its fires at T+60 are only dispatched on b, which takes them over at +2 s.
        later = T + timedelta(seconds=60)
        await clock.advance(60 - 2.5)
        for job in jobs:
            cluster.dispatch["b"](job, later)
        await _settle(clock)
        a_jobs = [j for j in jobs if preferred(j.name, ("a", "b")) == "a"]
        assert cluster.dispatch["b"].takeovers == 0
        await clock.advance(2.0)
        await _settle(clock)
        assert cluster.dispatch["b"].takeovers == len(a_jobs)
        taken = await pool.fetchval("SELECT count(*) FROM fire_claims WHERE takeover")
        assert taken == len(a_jobs)
    finally:
        for loop in loops:
            loop.cancel()


async def test_a_replica_alone_claims_its_fires_even_when_full(pool: asyncpg.Pool) -> None:
    # Offered for takeover, they waited takeover_after for nobody else, then it claimed them.
    clock = FakeClock(T.timestamp())
    limiter = Limiter(1)
    assert limiter.try_acquire()  # its one slot is busy
    submitted: list[str] = []
    for live in (("a",), ()):  # the live set holds only it, or it has seen none yet
        submitted.clear()
        dispatch = ClusterDispatch(
            claims=replica("a", pool, Members(*live)), members=Members(*live), limiter=limiter,
            submit=lambda job, at, **kw: submitted.append(job.name), clock=clock,
            takeover_after=2.0,
        )  # fmt: skip
        for i in range(3):
            dispatch(make_job(f"job{i}-{len(live)}", every=60), T)
        await _settle(clock)
        assert len(submitted) == 3 and dispatch.takeovers == 0  # queued for the slot, at once
    two = ClusterDispatch(
        claims=replica("a", pool, Members("a", "b")), members=Members("a", "b"), limiter=limiter,
        submit=lambda job, at, **kw: submitted.append(job.name), clock=clock, takeover_after=2.0,
    )  # fmt: skip
    submitted.clear()
    mine = next(f"x{i}" for i in range(100) if preferred(f"x{i}", ("a", "b")) == "a")
    two(make_job(mine, every=60), T)
    await _settle(clock)
    assert submitted == []  # with another replica alive, a full one leaves it for takeover


async def test_a_retry_another_replica_claimed_is_not_run_here(pool: asyncpg.Pool) -> None:
    clock = FakeClock(T.timestamp())
    records: list[ExecutionRecord] = []
    members = Members("a", "b")

    class Failing:
        async def run(self, overrides: Any = None) -> Outcome:
            return Outcome(status=Status.FAILED, retryable=True, error="boom")

    runner = Runner(
        clock=clock, limiter=Limiter(4), recorder=type("R", (), {"record": records.append})(),
        action_for=lambda job: Failing(), node="a", rng=random.Random(1),
        claims=replica("a", pool, members),
    )  # fmt: skip
    job = make_job("flaky", every=60, retry=RetrySpec(attempts=3, delay=1.0))
    fire_id = scheduled_fire_id("flaky", T)
    # b took attempt 2 over already (its owner looked dead to it).
    await fire_claims.claim(pool, "b", [ClaimRequest(fire_id, 2, "flaky", T)])
    fire = runner.submit(job, T)
    assert fire is not None and fire.task is not None
    await _settle(clock)
    await clock.advance(1.5)
    await _settle(clock)
    await asyncio.wait_for(fire.task, 5)
    assert [(r.attempt, r.status) for r in records] == [(1, Status.FAILED)]
    owners = await pool.fetch("SELECT attempt, node FROM fire_claims ORDER BY attempt")
    assert [(r["attempt"], r["node"]) for r in owners] == [(1, "a"), (2, "b")]


async def test_a_catch_up_planned_by_every_replica_runs_each_instant_once(
    pool: asyncpg.Pool,
) -> None:
    members = Members("a", "b")
    ran: dict[str, list[datetime]] = {"a": [], "b": []}
    missed: list[ExecutionRecord] = []
    job = make_job("tick", every=60, catch_up="all")

    class Recorder:
        def record(self, rec: ExecutionRecord) -> None:
            missed.append(rec)

    class Runs:
        def __init__(self, node: str) -> None:
            self.node = node

        def submit(self, job: JobSpec, at: datetime, **kw: Any) -> None:
            assert kw == {"trigger": FireKind.CATCHUP, "claimed": True}
            ran[self.node].append(at)

    tasks = [
        catch_up_job(
            job, last=T, until=T + timedelta(minutes=10), now=T + timedelta(minutes=10),
            runner=Runs(node), recorder=Recorder(), node=node, why="down",  # type: ignore[arg-type]
            claims=replica(node, pool, members),
        )
        for node in ("a", "b")
    ]  # fmt: skip
    await asyncio.gather(*(t for t in tasks if t is not None))
    instants = sorted(ran["a"] + ran["b"])
    assert instants == [T + timedelta(minutes=m) for m in range(1, 11)]
    assert not missed


async def _settle(clock: FakeClock) -> None:
    """Let claims reach the database and come back (real I/O, fake time)."""
    for _ in range(20):
        await clock.settle()
        await asyncio.sleep(0.01)


async def test_a_dead_replicas_unfinished_attempts_are_abandoned_once_and_a_live_ones_never(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(
        """INSERT INTO nodes (name, started_at, last_seen, version) VALUES
           ('dead', now() - interval '1 hour', now() - interval '20 seconds', 'x'),
           ('alive', now() - interval '1 hour', now(), 'x')"""
    )
    fires = {name: rec(name, node=node, status=status) for name, node, status in (
        ("running", "dead", Status.RUNNING), ("ended", "dead", Status.SUCCEEDED),
        ("slow", "alive", Status.RUNNING),
    )}  # fmt: skip
    unrecorded = rec("unrecorded", node="dead")
    async with pool.acquire() as conn:
        await store.write_executions(conn, list(fires.values()))
    for r in (*fires.values(), unrecorded):
        await fire_claims.claim(
            pool, r.node, [ClaimRequest(r.fire_id, 1, r.job_name, r.scheduled_at)]
        )
    settled = await asyncio.gather(*(fire_claims.abandon_dead(pool, 15.0) for _ in range(3)))
    abandoned = [row["job_name"] for rows in settled for row in rows]
    assert sorted(abandoned) == ["running", "unrecorded"]  # each by one survivor only
    statuses = dict(await pool.fetch("SELECT job_name, status FROM executions"))
    assert statuses == {"running": "abandoned", "unrecorded": "abandoned",
                        "ended": "succeeded", "slow": "running"}  # fmt: skip
    stopped = dict(await pool.fetch("SELECT name, stopped_at IS NOT NULL FROM nodes"))
    assert stopped == {"dead": True, "alive": False}
    assert await fire_claims.abandon_dead(pool, 15.0) == []  # settled: not again


async def test_old_claims_are_pruned_recent_ones_kept(pool: asyncpg.Pool) -> None:
    await fire_claims.claim(pool, "a", requests(3))
    await pool.execute(
        "UPDATE fire_claims SET claimed_at = now() - interval '3 days' WHERE job_name <> 'job0'"
    )
    assert await fire_claims.prune(pool) == 2
    assert await pool.fetchval("SELECT array_agg(job_name) FROM fire_claims") == ["job0"]
