"""The start log against PostgreSQL: replayed into rows at the next start, forgotten once its
attempts' rows are committed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status
from scheduler_daemon.storage import store
from scheduler_daemon.storage.database import Database
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.startline import encode_fire, encode_start
from scheduler_daemon.storage.startlog import StartLog
from tests.helpers import T, make_job, query_value, rec


class Rows:
    appended = 0
    durable = 0


def started(n: int) -> ExecutionRecord:
    return rec(n=n, status=Status.RUNNING, finished_at=None, duration_ms=None)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await store.connect(database_url)
    yield p
    await p.close()


async def test_replay_gives_a_row_to_each_attempt_that_began_and_has_none(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await store.sync_jobs(pool, [make_job("j")], {})
    await pool.execute("UPDATE jobs SET last_scheduled_at = $1", T)
    async with pool.acquire() as conn:
        # attempt 2 ended and its row is in; attempt 3's `running` row is in; 1 and 4 have none
        await store.write_executions(conn, [rec(n=2), started(3)])
    await pool.execute("UPDATE jobs SET last_scheduled_at = $1", T)
    directory = tmp_path / "journal"
    directory.mkdir()
    lines = [encode_start(started(n)).encode() for n in (1, 2, 3, 4)]
    torn = lines[0][:25]  # the crash cut the last write: that attempt never began
    damaged = [*lines[:2], b"junk\n", *lines[2:], torn]
    (directory / "starts-7.jsonl").write_bytes(b"".join(damaged))

    starts = StartLog(directory, rows=Rows())
    await starts.start()  # finds the files an earlier process left
    began = await starts.replay(pool)
    await starts.close()

    assert began == {started(n).fire_id for n in (1, 2, 3, 4)}
    statuses = dict(await pool.fetch("SELECT scheduled_at, status FROM executions"))
    assert statuses == {T + timedelta(seconds=n): s for n, s in [
        (1, "running"), (2, "succeeded"), (3, "running"), (4, "running")]}  # fmt: skip
    abandoned = await store.abandon_running(pool, "n1")
    assert sorted(r["scheduled_at"] for r in abandoned) == [
        T + timedelta(seconds=n) for n in (1, 3, 4)
    ]
    # the catch-up still starts from the last instant recorded before the crash
    assert await pool.fetchval("SELECT last_scheduled_at FROM jobs") == T
    assert sorted(p.name for p in directory.iterdir()) == ["starts.quarantine.jsonl"]
    assert (directory / "starts.quarantine.jsonl").read_bytes() == b"junk\n" + torn + b"\n"
    assert await starts.replay(pool) == began  # once: nothing is read or quarantined again
    assert (directory / "starts.quarantine.jsonl").read_bytes() == b"junk\n" + torn + b"\n"


async def test_replay_reads_the_previous_versions_lines_and_derives_left_out_fire_ids(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await store.sync_jobs(pool, [make_job("j")], {})
    directory = tmp_path / "journal"
    directory.mkdir()
    # starts-1: written by the version that wrote every fire id; starts-2: by this one.
    (directory / "starts-1.jsonl").write_bytes(encode_start(started(1)).encode())
    fires = [Fire(make_job("j"), T + timedelta(seconds=n), FireKind.SCHEDULE, None) for n in (2, 3)]
    manual = Fire(make_job("j"), T + timedelta(seconds=4), FireKind.MANUAL, None, uuid.uuid4())
    lines = [encode_fire(f, T.timestamp() + 5, 1.0, "n1") for f in (*fires, manual)]
    (directory / "starts-2.jsonl").write_text("".join(lines))

    starts = StartLog(directory, rows=Rows())
    await starts.start()
    began = await starts.replay(pool)
    await starts.close()

    ids = {started(1).fire_id, *(f.fire_id for f in fires), manual.fire_id}  # the runner's
    assert began == ids
    assert {r["fire_id"] for r in await pool.fetch("SELECT fire_id FROM executions")} == ids


async def test_a_start_file_is_emptied_once_the_recorder_has_committed_its_rows(
    database_url: str, tmp_path: Path
) -> None:
    database = Database(dsn=database_url, on_connect=())
    recorder = Recorder(database=database, flush_interval=0.05)
    directory = tmp_path / "journal"
    starts = StartLog(directory, rows=recorder)
    recorder.on_durable = starts.rows_durable
    await recorder.start()
    await starts.start()
    try:
        entries = [starts.log(started(n)) for n in range(10)]
        await starts.durable()
        path = directory / "starts-1.jsonl"
        assert len(path.read_bytes().splitlines()) == 10
        for n, entry in enumerate(entries):
            recorder.record(rec(n=n))
            entry.recorded()
        async with asyncio.timeout(10):
            while path.stat().st_size:
                await asyncio.sleep(0.02)
        assert recorder.durable == recorder.appended == 10
    finally:
        await recorder.close(timeout=10)
        await starts.close()
        await database.close()
    assert not path.exists()


@pytest.mark.parametrize("journaled", [False, True])
async def test_starts_stay_until_their_rows_are_committed_or_journaled(
    tmp_path: Path, journaled: bool
) -> None:
    nowhere = Database(dsn=f"postgresql://postgres@/postgres?host={tmp_path}&port=1")
    journal = Journal(tmp_path / "journal" / "executions.jsonl") if journaled else None
    recorder = Recorder(database=nowhere, flush_interval=0.05, journal=journal)
    starts = StartLog(tmp_path / "journal", rows=recorder)
    recorder.on_durable = starts.rows_durable
    await recorder.start()
    await starts.start()
    entry = starts.log(started(1))
    await starts.durable()
    recorder.record(rec(n=1))
    entry.recorded()
    unwritten = await recorder.close(timeout=0.3)  # the database never answers
    await starts.close()
    await nowhere.close()
    assert (unwritten, recorder.durable) == ((0, 1) if journaled else (1, 0))
    kept = (tmp_path / "journal" / "starts-1.jsonl").exists()
    assert kept is not journaled  # a row only in memory is lost with a crash: the start stays


async def test_the_watermark_waits_for_the_batch_a_spill_leaves_in_memory(
    database_url: str, tmp_path: Path
) -> None:
    """Rows do not always leave the buffer in order: a spill moves every row but the batch being
    written. The rows before the first one still in memory are the durable ones."""
    database = Database(dsn=database_url)
    journal = Journal(tmp_path / "journal" / "executions.jsonl")
    recorder = Recorder(
        database=database, batch_size=2, flush_interval=0.01, buffer_limit=3, journal=journal
    )
    lock = await asyncpg.connect(database_url)
    held = lock.transaction()
    await held.start()
    await lock.execute("LOCK TABLE executions IN EXCLUSIVE MODE")  # the first batch waits
    await recorder.start()
    try:
        recorder.record(rec(n=1))
        recorder.record(rec(n=2))
        async with asyncio.timeout(10):
            while not await _waiting_for_a_lock(database_url):
                await asyncio.sleep(0.02)
        for n in range(3, 7):
            recorder.record(rec(n=n))  # past the limit: rows 3-6 are journaled
        async with asyncio.timeout(10):
            while recorder.journaled < 4:
                await asyncio.sleep(0.02)
        assert (recorder.appended, recorder.pending, recorder.durable) == (6, 2, 0)
        await held.rollback()
        async with asyncio.timeout(10):
            while recorder.pending:
                await asyncio.sleep(0.02)
        assert recorder.durable == 6
    finally:
        await lock.close()
        await recorder.close(timeout=10)
        await database.close()


async def _waiting_for_a_lock(dsn: str) -> bool:
    # From a connection of its own: in the lock's transaction, pg_stat_activity stays as first read
    return bool(
        await query_value(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()",
        )
    )
