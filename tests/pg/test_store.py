"""Schema, job sync and batched writes against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from scheduler_daemon.running.records import FireKind, Status
from scheduler_daemon.specs import HttpSpec
from scheduler_daemon.storage import queries, store
from tests.helpers import T, make_job, rec, wait_until


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await store.connect(database_url)
    yield p
    await p.close()


async def test_every_column_round_trips(pool: asyncpg.Pool) -> None:
    full = rec(
        http_status=503,
        exit_code=None,
        error="HTTP 503",
        output="body\x00with nul",
        trigger=FireKind.MANUAL,
        fire_id=uuid.uuid4(),
        status=Status.FAILED,
    )
    async with pool.acquire() as conn:
        assert await store.write_executions(conn, [full]) == 1
    [row] = await pool.fetch("SELECT * FROM executions")
    for column in store.COLUMNS:
        expected = getattr(full, column)
        if column == "output":
            expected = "body\ufffdwith nul"
        elif column in ("trigger", "status"):
            expected = str(expected)
        assert row[column] == expected, column


async def test_replaying_a_batch_writes_nothing_twice(pool: asyncpg.Pool) -> None:
    batch = [rec(n=i) for i in range(100)]
    async with pool.acquire() as conn:
        assert await store.write_executions(conn, batch) == 100
        assert await store.write_executions(conn, batch) == 0
    assert await pool.fetchval("SELECT count(*) FROM executions") == 100


async def test_a_batch_of_several_copies_is_written_whole_in_one_transaction(
    pool: asyncpg.Pool,
) -> None:
    batch = [rec(n=i) for i in range(2 * store.STAGE_CHUNK + 1)]  # three COPYs
    async with pool.acquire() as conn:
        assert await store.write_executions(conn, batch) == len(batch)
        bad = [rec(job="k", n=i) for i in range(2 * store.STAGE_CHUNK)]
        bad[-1].status = "no such status"  # type: ignore[assignment]
        with pytest.raises(asyncpg.PostgresError):
            await store.write_executions(conn, bad)  # its first COPY went in, then rolled back
    assert await pool.fetchval("SELECT count(*) FROM executions") == len(batch)


async def test_a_final_row_replaces_a_running_placeholder(pool: asyncpg.Pool) -> None:
    running = rec(status=Status.RUNNING, finished_at=None, duration_ms=None)
    async with pool.acquire() as conn:
        await store.write_executions(conn, [running])
        await store.write_executions(conn, [rec(status=Status.FAILED, error="boom")])
        await store.write_executions(conn, [rec(status=Status.SUCCEEDED)])  # final stays final
    rows = await pool.fetch("SELECT status, error FROM executions")
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "boom")]


async def test_the_same_attempt_twice_in_one_batch_keeps_the_last(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await store.write_executions(conn, [rec(status=Status.RUNNING), rec(status=Status.FAILED)])
    assert await pool.fetchval("SELECT status FROM executions") == "failed"


async def test_running_never_replaces_a_final_status_in_one_batch(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await store.write_executions(conn, [rec(status=Status.FAILED), rec(status=Status.RUNNING)])
    assert await pool.fetchval("SELECT status FROM executions") == "failed"


async def test_attempts_of_one_fire_are_separate_rows(pool: asyncpg.Pool) -> None:
    attempts = [rec(attempt=1, status=Status.FAILED), rec(attempt=2, status=Status.SUCCEEDED)]
    async with pool.acquire() as conn:
        assert await store.write_executions(conn, attempts) == 2
        assert await store.write_executions(conn, []) == 0
    rows = await pool.fetch("SELECT attempt, status FROM executions ORDER BY attempt")
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "succeeded")]


async def test_a_bad_row_rolls_back_its_whole_batch(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await store.write_executions(conn, [rec(n=1), rec(n=2, attempt=0)])
        assert await store.write_executions(conn, [rec(n=3)]) == 1  # the connection still works
    assert await pool.fetchval("SELECT count(*) FROM executions") == 1


async def test_jobs_sync_upserts_redacts_and_marks_removed(pool: asyncpg.Pool) -> None:
    secret = make_job(
        "api", action=HttpSpec(url="http://x", headers={"Authorization": "Bearer s3"})
    )
    nxt = T + timedelta(minutes=1)
    await store.sync_jobs(pool, [secret, make_job("b"), make_job("c", enabled=False)], {"api": nxt})
    await store.sync_jobs(pool, [secret, make_job("c", enabled=False)], {"api": nxt})
    rows = {r["name"]: r for r in await pool.fetch("SELECT * FROM jobs WHERE removed_at IS NULL")}
    assert set(rows) == {"api", "c"}
    assert [r["name"] for r in await queries.jobs(pool)] == ["api", "c"]
    assert rows["api"]["next_run_at"] == nxt and rows["c"]["enabled"] is False
    assert "s3" not in rows["api"]["spec"] and '"***"' in rows["api"]["spec"]


async def test_a_job_that_leaves_the_config_and_comes_back_keeps_its_past(
    pool: asyncpg.Pool,
) -> None:
    # Two configs on one database in turn (the README's examples once shared a state_dir): the
    # second's sync must not erase the first's instants, or its catch-up would find nothing.
    await store.sync_jobs(pool, [make_job("a"), make_job("b")], {})
    async with pool.acquire() as conn:
        await store.write_executions(conn, [rec("a", n=5)])
    await queries.set_paused(pool, "a", True)
    last_before = await store.last_scheduled(pool)
    await store.sync_jobs(pool, [make_job("other")], {})
    assert [r["name"] for r in await queries.jobs(pool)] == ["other"]
    assert await pool.fetchval("SELECT count(*) FROM job_health") == 1
    await store.sync_jobs(pool, [make_job("a"), make_job("b")], {})
    assert await store.last_scheduled(pool) == last_before and "a" in last_before
    assert set(await queries.paused_jobs(pool)) == {"a"}
    marked = await pool.fetch("SELECT name FROM jobs WHERE removed_at IS NOT NULL")
    assert [r["name"] for r in marked] == ["other"]


async def test_writes_stamp_last_run_at_on_jobs(pool: asyncpg.Pool) -> None:
    await store.sync_jobs(pool, [make_job("j")], {})
    async with pool.acquire() as conn:
        await store.write_executions(conn, [rec(n=1), rec(n=5), rec(n=3)])
    last = await pool.fetchval("SELECT last_run_at FROM jobs WHERE name = 'j'")
    assert last == T + timedelta(seconds=5, milliseconds=3)


async def test_executions_newest_first(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await store.write_executions(conn, [rec(n=i) for i in range(5)] + [rec("other")])
    rows, _ = await queries.executions(pool, queries.ExecutionFilter(job="j"), limit=2)
    assert [r["scheduled_at"] for r in rows] == [T + timedelta(seconds=4), T + timedelta(seconds=3)]
    where = queries.ExecutionFilter(job="j", until=rows[-1]["scheduled_at"])
    older, _ = await queries.executions(pool, where, limit=9)
    assert [r["scheduled_at"] for r in older] == [T + timedelta(seconds=n) for n in (2, 1, 0)]


async def test_executions_by_status(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await store.write_executions(
            conn, [rec(n=1), rec(n=2, status=Status.TIMED_OUT), rec("k", status=Status.TIMED_OUT)]
        )
    rows, _ = await queries.executions(pool, queries.ExecutionFilter(status="timed_out"))
    assert sorted(r["job_name"] for r in rows) == ["j", "k"]
    both = queries.ExecutionFilter(job="j", status="timed_out")
    assert len((await queries.executions(pool, both))[0]) == 1


async def test_jobs_by_name(pool: asyncpg.Pool) -> None:
    await store.sync_jobs(pool, [make_job("b"), make_job("a", every=5.0)], {})
    rows = await queries.jobs(pool)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert json.loads(rows[0]["spec"])["every"] == 5.0


async def test_jobs_sync_after_a_reload_touches_only_what_changed(pool: asyncpg.Pool) -> None:
    await store.sync_jobs(pool, [make_job("a"), make_job("b"), make_job("c")], {})
    before = {r["name"]: r["updated_at"] for r in await pool.fetch("SELECT * FROM jobs")}
    await store.sync_jobs(pool, [make_job("b", every=5.0), make_job("d")], {}, removed=["c"])
    rows = {r["name"]: r for r in await pool.fetch("SELECT * FROM jobs WHERE removed_at IS NULL")}
    assert set(rows) == {"a", "b", "d"}
    assert rows["a"]["updated_at"] == before["a"]  # untouched
    assert '"every": 5.0' in rows["b"]["spec"]


async def test_a_start_syncs_more_jobs_than_one_chunk_and_marks_the_rest_removed(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.sync_jobs(pool, [make_job("gone"), make_job("j0")], {})
    monkeypatch.setattr(store, "SYNC_CHUNK", 2)
    await store.sync_jobs(pool, [make_job(f"j{i}", every=float(i + 1)) for i in range(5)], {})
    rows = {r["name"]: r for r in await pool.fetch("SELECT * FROM jobs")}
    assert sorted(n for n, r in rows.items() if r["removed_at"] is None) == [
        "j0", "j1", "j2", "j3", "j4",
    ]  # fmt: skip
    assert rows["gone"]["removed_at"] is not None
    assert json.loads(rows["j4"]["spec"])["every"] == 5.0


async def test_monitoring_views_summarise_the_last_day(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await store.sync_jobs(pool, [make_job("a"), make_job("b")], {})
    recent = [
        rec("a", 0, status=Status.SUCCEEDED, scheduled_at=now - timedelta(minutes=1)),
        rec("a", 1, status=Status.FAILED, scheduled_at=now - timedelta(minutes=2),
            finished_at=now - timedelta(minutes=2), error="boom"),
        rec("a", 2, status=Status.SKIPPED, scheduled_at=now - timedelta(minutes=3)),
    ]  # fmt: skip
    old = rec("a", 3, status=Status.FAILED, scheduled_at=now - timedelta(days=2))
    async with pool.acquire() as conn:
        await store.write_executions(conn, [*recent, old])
    await pool.execute("UPDATE jobs SET paused_at = now() WHERE name = 'b'")
    health = {r["job_name"]: r for r in await pool.fetch("SELECT * FROM job_health")}
    assert health["a"]["runs_24h"] == 3 and health["a"]["failures_24h"] == 1
    assert float(health["a"]["success_rate_24h"]) == 0.5  # skipped fires are not runs
    assert health["b"]["paused"] is True and health["b"]["runs_24h"] == 0
    failures = await pool.fetch("SELECT job_name, error FROM recent_failures")
    assert [(r["job_name"], r["error"]) for r in failures] == [("a", "boom")]


async def test_final_attempts_are_announced_once_and_only_when_events_are_on(
    pool: asyncpg.Pool, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    got: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await listener.add_listener(store.EVENTS_CHANNEL, lambda *a: got.put_nowait(json.loads(a[3])))
    try:
        async with pool.acquire() as conn:
            await store.write_executions(conn, [rec("quiet", 1)], events=False)
            running = rec("loud", 1, status=Status.RUNNING, finished_at=None)
            await store.write_executions(conn, [running, rec("loud", 2)])
            await store.write_executions(conn, [rec("loud", 2)])  # a replay: nothing new
            await store.write_executions(conn, [rec("loud", 1)])  # running -> final
        first = await asyncio.wait_for(got.get(), 5)
        second = await asyncio.wait_for(got.get(), 5)
    finally:
        await listener.close()
    # Commit order: the quiet batch announced nothing, `running` rows never are, replays neither.
    assert (first["job"], first["scheduled_at"][:19]) == ("loud", "2026-01-01T00:00:02")
    assert (second["job"], second["status"]) == ("loud", "succeeded")
    assert second["scheduled_at"][:19] == "2026-01-01T00:00:01"
    assert got.empty()
    # Each event names its row: the run page (/ui/executions/{id}) and GET /executions/{id}.
    ids = await pool.fetch(
        "SELECT id FROM executions WHERE job_name = 'loud' ORDER BY scheduled_at"
    )
    assert [second["id"], first["id"]] == [r["id"] for r in ids]


async def test_drift_is_the_schedules_and_catch_up_delay_is_apart(pool: asyncpg.Pool) -> None:
    # After 12 minutes down, a catch-up run starts 12 minutes "late": that is the downtime, not
    # a slow scheduler; a one-off run has no schedule to be late for.
    now = datetime.now(UTC).replace(microsecond=0)
    await store.sync_jobs(pool, [make_job("j")], {})
    rows = [
        rec("j", n, scheduled_at=now - timedelta(minutes=n), drift_ms=2.0) for n in range(1, 30)
    ]
    rows.append(
        rec(
            "j",
            40,
            scheduled_at=now - timedelta(minutes=40),
            drift_ms=720_000.0,
            trigger=FireKind.CATCHUP,
        )
    )
    rows.append(rec("j", 50, scheduled_at=now - timedelta(minutes=50), drift_ms=9_000.0,
                    trigger=FireKind.MANUAL, fire_id=uuid.uuid4()))  # fmt: skip
    async with pool.acquire() as conn:
        await store.write_executions(conn, rows)
    [stats] = await queries.job_stats(pool, now - timedelta(hours=1))
    assert stats["p95_drift_ms"] == stats["max_drift_ms"] == 2.0
    assert stats["max_catchup_delay_ms"] == 720_000.0 and stats["runs"] == 31
    assert await pool.fetchval("SELECT p95_drift_ms_24h FROM job_health") == 2.0


# -- lock order ----------------------------------------------------------------------------------

NAMES = ["zeta", "alpha", "mu"]  # written in this order; locked in name order: alpha, mu, zeta


def _several_jobs_writers(pool: asyncpg.Pool) -> dict[str, Callable[[], Awaitable[object]]]:
    """Every statement that updates several rows of `jobs`, each given them out of name order
    (the recorder's batch, next-run publishing, a config sync)."""
    later = T + timedelta(hours=1)

    async def record() -> None:
        async with pool.acquire() as conn:
            await store.write_executions(conn, [rec(job=name, n=99) for name in NAMES])

    return {
        "write_executions": record,
        "set_next_runs": lambda: queries.set_next_runs(pool, dict.fromkeys(NAMES, later)),
        "sync_jobs": lambda: store.sync_jobs(pool, [make_job(n) for n in NAMES], {}),
    }


async def test_writers_of_several_jobs_rows_lock_them_in_name_order(pool: asyncpg.Pool) -> None:
    """Two writers that each lock some rows and wait for another's deadlock (PostgreSQL aborts
    one: the recorder's batch and next-run publishing did, under a 10k-job burst) unless all
    take the rows in one order. While a writer waits for `mu`, it must hold `alpha` and not yet
    `zeta`."""
    await store.sync_jobs(pool, [make_job(n) for n in NAMES], {})
    for what, write in _several_jobs_writers(pool).items():
        async with pool.acquire() as blocker, pool.acquire() as probe:
            task = None
            async with blocker.transaction():
                await blocker.execute("SELECT FROM jobs WHERE name = 'mu' FOR UPDATE")
                task = asyncio.create_task(write())
                await wait_until(lambda: _waits_for_a_lock(probe))
                assert await _locked(probe, "alpha"), what
                assert not await _locked(probe, "zeta"), what
            await asyncio.wait_for(task, 10)


async def test_next_runs_lock_only_the_rows_they_change(pool: asyncpg.Pool) -> None:
    """A job whose next fire did not move is neither rewritten nor locked (at a start, 100k
    unchanged jobs are passed): a writer holding its row does not hold the others up."""
    later = T + timedelta(hours=1)
    await store.sync_jobs(pool, [make_job(n) for n in NAMES], dict.fromkeys(NAMES, later))
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("SELECT FROM jobs WHERE name = 'mu' FOR UPDATE")
        moved = {"alpha": later + timedelta(hours=1), "mu": later, "zeta": later}
        await asyncio.wait_for(queries.set_next_runs(pool, moved), 5)
    rows = await pool.fetch("SELECT name, next_run_at FROM jobs ORDER BY name")
    assert [(r["name"], r["next_run_at"]) for r in rows] == [
        ("alpha", later + timedelta(hours=1)), ("mu", later), ("zeta", later),
    ]  # fmt: skip


async def _waits_for_a_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
    )


async def _locked(conn: asyncpg.Connection, name: str) -> bool:
    try:
        async with conn.transaction():
            await conn.execute("SELECT FROM jobs WHERE name = $1 FOR UPDATE NOWAIT", name)
    except asyncpg.LockNotAvailableError:
        return True
    return False
