"""The recorder through real outages: rows wait in order and land exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.running.records import ExecutionRecord, Items
from scheduler_daemon.storage import rows, schema
from scheduler_daemon.storage.database import Database, OnConnect
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.rows import row_size
from tests.helpers import T, copy_cluster, reachable_dir, rec


@pytest.fixture(scope="module")
def _outage_server(clusters_root: Path, cluster_template: Path) -> Iterator[EmbeddedPostgres]:
    """One cluster for the outage tests of this module (a copy and a first start cost ~0.8 s)."""
    place = reachable_dir(clusters_root)
    server = EmbeddedPostgres(copy_cluster(cluster_template, place / "pg"))
    yield server
    server.stop()
    shutil.rmtree(place, ignore_errors=True)


@pytest.fixture
def server(_outage_server: EmbeddedPostgres) -> EmbeddedPostgres:
    """The module's cluster, running and as new: no table of an earlier test is left (each test
    stops and starts it under the recorder; one that failed half-way may have left it down)."""
    asyncio.run(_wipe(_outage_server.start()))
    return _outage_server


async def _wipe(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM executions"))
    finally:
        await conn.close()


async def _until(predicate: object, timeout: float = 30) -> None:
    async def poll() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def _until_waiting_for_a_lock(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while not await conn.fetchval(query):
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _apply_schema(pool: asyncpg.Pool) -> None:
    await schema.upgrade(pool)


_opened: list[Database] = []


def _database(dsn: str, *hooks: OnConnect) -> Database:
    database = Database(dsn=dsn, on_connect=hooks)
    _opened.append(database)
    return database


@pytest.fixture(autouse=True)
async def _close_databases() -> AsyncIterator[None]:
    yield
    while _opened:
        await _opened.pop().close()


async def test_rows_are_written_in_batches(database_url: str) -> None:
    recorder = Recorder(database=_database(database_url), batch_size=500, flush_interval=0.05)
    await recorder.start()
    for i in range(3000):
        recorder.record(rec(n=i))
    assert recorder.pending == 3000  # record() only buffers: no I/O on the caller's path
    assert await recorder.close(timeout=30) == 0
    assert await _count(database_url) == 3000
    assert recorder.stats() == {
        "written": 3000,
        "pending": 0,
        "pending_bytes": 0,
        "batches": 6,
        "failures": 0,
        "rejected": 0,
        "journaled": 0,
    }


async def test_a_trickle_is_written_within_the_flush_interval(database_url: str) -> None:
    recorder = Recorder(database=_database(database_url), flush_interval=0.05)
    await recorder.start()
    try:
        recorder.record(rec(n=1))
        await _until(lambda: recorder.written == 1, timeout=5)
        recorder.record(rec(n=2))  # after an idle spell: woken by the row, not by a poll
        await _until(lambda: recorder.written == 2, timeout=5)
    finally:
        assert await recorder.close(timeout=10) == 0
    assert await _count(database_url) == 2


async def test_close_flushes_what_is_buffered(database_url: str) -> None:
    recorder = Recorder(
        database=_database(database_url), flush_interval=60
    )  # only close() makes it write
    await recorder.start()
    for i in range(10):
        recorder.record(rec(n=i))
    assert await recorder.close(timeout=10) == 0
    assert await _count(database_url) == 10


async def test_an_outage_delays_rows_and_loses_none(server: EmbeddedPostgres) -> None:
    dsn = server.dsn()
    recorder = Recorder(database=_database(dsn, _apply_schema), batch_size=100, flush_interval=0.05)
    with capture_logs() as logs:
        await recorder.start()
        for i in range(50):
            recorder.record(rec(n=i))
        await _until(lambda: recorder.pending == 0)

        await server.astop()  # the database goes away while attempts keep finishing
        for i in range(50, 450):
            recorder.record(rec(n=i))
        await _until(lambda: recorder.failures >= 3)  # several retries: one warning
        assert recorder.pending == 400

        await server.astart()
        await _until(lambda: recorder.pending == 0)
        assert await recorder.close(timeout=10) == 0
    events = [e["event"] for e in logs if e["event"].startswith("recorder_db")]
    assert events == ["recorder_db_unavailable", "recorder_db_recovered"]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT scheduled_at FROM executions ORDER BY scheduled_at")
    finally:
        await conn.close()
    assert len(rows) == 450 and len({r["scheduled_at"] for r in rows}) == 450


async def test_a_database_down_at_start_is_waited_for(server: EmbeddedPostgres) -> None:
    dsn = server.dsn()
    server.stop()
    connected = asyncio.Event()

    async def on_connect(pool: asyncpg.Pool) -> None:
        await schema.upgrade(pool)
        connected.set()

    recorder = Recorder(database=_database(dsn, on_connect), flush_interval=0.05)
    await recorder.start()
    recorder.record(rec())
    await _until(lambda: recorder.failures >= 2)  # it tried, failed, and tries again
    assert not connected.is_set() and recorder.pending == 1
    await server.astart()
    await asyncio.wait_for(connected.wait(), 30)
    await _until(lambda: recorder.pending == 0)
    await recorder.close(timeout=10)
    assert await _count(dsn) == 1


async def test_close_reports_rows_it_could_not_write(tmp_path: Path) -> None:
    recorder = Recorder(
        database=_database(f"postgresql://postgres@/postgres?host={tmp_path}&port=1"),
        flush_interval=0.05,
    )
    await recorder.start()
    recorder.record(rec())
    recorder.record(rec(n=1))
    assert await recorder.close(timeout=0.5) == 2


async def test_past_the_limit_without_a_journal_rows_are_kept_and_reported(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}&port=1"
    recorder = Recorder(database=_database(nowhere), buffer_limit=10, flush_interval=0.05)
    with capture_logs() as logs:
        await recorder.start()
        for i in range(25):
            recorder.record(rec(n=i))
        await _until(lambda: recorder.failures > 0)
        assert await recorder.close(timeout=0.3) == 25  # none dropped, none written
    full = [e for e in logs if e["event"] == "recorder_buffer_full"]
    assert len(full) == 1 and full[0]["pending"] == 11 and full[0]["limit"] == 10


async def test_close_against_a_stuck_database_journals_the_rest(
    database_url: str, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "executions.jsonl")
    blocker = await asyncpg.connect(database_url)
    recorder = Recorder(database=_database(database_url), flush_interval=0.01, journal=journal)
    await recorder.start()
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")  # writes hang
        for i in range(5):
            recorder.record(rec(n=i))
        assert await recorder.close(timeout=0.5) == 0  # nothing lost: in the journal
        await tx.rollback()
    finally:
        await blocker.close()
    assert sum(len(b) for b in journal.read(100)) == 5
    assert await _count(database_url) == 0


async def test_a_row_the_database_rejects_does_not_block_the_others(database_url: str) -> None:
    recorder = Recorder(database=_database(database_url), flush_interval=0.05)
    await recorder.start()
    recorder.record(rec(n=1))
    recorder.record(rec(n=2, attempt=0))  # violates CHECK (attempt >= 1)
    recorder.record(rec(n=3))
    with capture_logs() as logs:
        assert await recorder.close(timeout=10) == 0
    assert await _count(database_url) == 2
    assert recorder.rejected == 1
    [rejected] = [e for e in logs if e["event"] == "recorder_row_rejected"]
    assert rejected["attempt"] == 0 and "output" not in rejected


async def test_a_long_outage_spills_to_the_journal_and_replays_it(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal" / "executions.jsonl")
    recorder = Recorder(
        database=_database(server.dsn(), _apply_schema),
        batch_size=50,
        flush_interval=0.05,
        buffer_limit=100,
        journal=journal,
    )
    await recorder.start()
    await _until(lambda: recorder.pool is not None)
    await server.astop()
    for i in range(350):
        recorder.record(rec(n=i))
    await _until(lambda: journal.exists() and recorder.pending <= 100)
    assert recorder.journaled >= 250

    await server.astart()
    await _until(lambda: recorder.pending == 0 and not journal.exists())
    assert await recorder.close(timeout=10) == 0
    assert await _count(server.dsn()) == 350


_BIG = "x" * 64 * 1024  # a command's whole default capture_bytes
_MIB = 1024 * 1024


async def test_large_rows_spill_past_the_byte_bound_long_before_the_row_bound(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "executions.jsonl")
    recorder = Recorder(
        database=_database(server.dsn(), _apply_schema),
        flush_interval=0.05,
        buffer_bytes=_MIB,  # the row bound stays at its default, 100,000
        journal=journal,
    )
    with capture_logs() as logs:
        await recorder.start()
        await _until(lambda: recorder.pool is not None)
        await server.astop()
        for i in range(100):  # 6.4 MiB of output in 100 rows
            recorder.record(rec(n=i, output=_BIG))
            await asyncio.sleep(0)  # attempts end one by one: the spill keeps up
        await _until(lambda: recorder.pending_bytes <= _MIB)
        assert recorder.journaled + recorder.pending == 100 and recorder.journaled >= 80
        [full] = [e for e in logs if e["event"] == "recorder_buffer_full"]
        assert full["limit_bytes"] == _MIB and full["pending"] < 20

        await server.astart()
        await _until(lambda: recorder.pending == 0 and not journal.exists())
        assert await recorder.close(timeout=10) == 0
    conn = await asyncpg.connect(server.dsn())
    try:
        found = await conn.fetch("SELECT scheduled_at, output FROM executions")
    finally:
        await conn.close()
    assert len(found) == 100 and len({r["scheduled_at"] for r in found}) == 100
    assert all(r["output"] == _BIG for r in found)


async def test_past_the_byte_bound_a_stuck_write_does_not_hold_the_spill_back(
    database_url: str, tmp_path: Path
) -> None:
    """The writer is stuck in a write (a lock held elsewhere): the rows behind its batch go to
    the journal at once; its batch stays in memory and is written when the lock is released."""
    journal = Journal(tmp_path / "executions.jsonl")
    recorder = Recorder(
        database=_database(database_url),
        batch_size=5,
        flush_interval=0.01,
        buffer_bytes=_MIB,
        journal=journal,
    )
    blocker = await asyncpg.connect(database_url)
    await recorder.start()
    try:
        recorder.record(rec(n=0))
        await _until(lambda: recorder.written == 1)  # connected, table created
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")  # writes hang
        for i in range(1, 6):
            recorder.record(rec(n=i))  # the writer's next batch: it hangs on the lock
        await _until_waiting_for_a_lock(database_url)  # the writer is in its write now
        for i in range(6, 56):
            recorder.record(rec(n=i, output=_BIG))  # 3.2 MiB behind the stuck batch
            await asyncio.sleep(0)
        await _until(lambda: recorder.journaled >= 40)
        assert recorder.pending_bytes <= _MIB and recorder.failures == 0  # still stuck
        await tx.rollback()
        await _until(lambda: recorder.pending == 0 and not journal.exists())
        assert await recorder.close(timeout=10) == 0
    finally:
        await blocker.close()
    assert await _replayed_rows(database_url) == list(range(56))


def test_a_row_is_sized_by_its_text_and_a_fixed_cost() -> None:
    small, large = row_size(rec()), row_size(rec(output=_BIG, error="e" * 1000))
    assert 300 < small < 1000
    assert large - small == pytest.approx(len(_BIG) + 1000, abs=200)
    assert row_size(rec(output="€" * 1000)) - small > 2000  # CPython keeps it 2 bytes a char


async def test_close_during_an_outage_journals_and_the_next_start_replays(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "executions.jsonl")
    first = Recorder(
        database=_database(server.dsn(), _apply_schema), flush_interval=0.05, journal=journal
    )
    await first.start()
    await _until(lambda: first.pool is not None)
    await server.astop()
    for i in range(20):
        first.record(rec(n=i))
    assert await first.close(timeout=10) == 0  # nothing unwritten: it is all in the journal
    assert journal.exists()

    with journal.path.open("a") as f:
        f.write('{"fire_id": "torn')  # a crash in the middle of a write

    await server.astart()
    second = Recorder(
        database=_database(server.dsn(), _apply_schema), flush_interval=0.05, journal=journal
    )
    await second.start()
    await _until(lambda: not journal.exists())
    second.record(rec(n=0))  # a replayed row arriving again is not written twice
    assert await second.close(timeout=10) == 0
    assert await _count(server.dsn()) == 20


# -- a damaged journal: every valid row lands once, bad lines are quarantined, writes go on ------

_BAD_LINES = {
    "non-utf8-byte": b'{"job_name": "\xff"}\n',
    "null-scheduled": b"scheduled_at=null",
    "null-started": b"started_at=null",
    "unknown-status": b"status=exploded",
    "torn-line": b'{"fire_id": "torn',  # a crash mid-append: the next append must stay intact
}


def _damage(journal: Journal, case: str) -> bytes:
    """Rows 0-4, one bad line of kind ``case``, rows 5-9 appended after it; the bad line."""
    journal.append([rec(n=i) for i in range(5)])
    bad = _BAD_LINES[case]
    if b"=" in bad and not bad.startswith(b"{"):
        field, value = bad.decode().split("=")
        data = rows.to_json(rec(n=100))
        data[field] = None if value == "null" else value
        bad = json.dumps(data).encode() + b"\n"
    with journal.path.open("ab") as f:
        f.write(bad)
    journal.append([rec(n=i) for i in range(5, 10)])
    return bad


async def _replayed_rows(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch("SELECT scheduled_at, count(*) AS n FROM executions GROUP BY 1")
    finally:
        await conn.close()
    assert all(r["n"] == 1 for r in found)  # exactly once
    return sorted(int((r["scheduled_at"] - T).total_seconds()) for r in found)


@pytest.mark.parametrize("case", list(_BAD_LINES))
async def test_a_damaged_journal_at_start_replays_its_valid_rows_and_quarantines_the_rest(
    database_url: str, tmp_path: Path, case: str
) -> None:
    journal = Journal(tmp_path / "journal" / "executions.jsonl")
    bad = _damage(journal, case)
    recorder = Recorder(database=_database(database_url), flush_interval=0.05, journal=journal)
    with capture_logs() as logs:
        await recorder.start()
        await _until(lambda: not journal.exists(), timeout=10)
        recorder.record(rec(n=20))  # writes go on after the replay
        assert await recorder.close(timeout=10) == 0
    assert recorder.failures == 0  # the replay was not retried
    assert await _replayed_rows(database_url) == [*range(10), 20]
    assert journal.quarantine_path.read_bytes() == bad.rstrip(b"\n") + b"\n"
    [quarantined] = [e for e in logs if e["event"] == "journal_lines_quarantined"]
    assert quarantined["lines"] == 1 and quarantined["path"] == str(journal.quarantine_path)
    assert len(quarantined["examples"]) == 1 and not quarantined["kept_in_journal"]
    assert stat.S_IMODE(journal.quarantine_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


async def test_a_wholly_garbage_journal_is_quarantined_and_writes_go_on(
    database_url: str, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "executions.jsonl")
    garbage = b"\x00\xff\xfe garbage\n" * 1000 + b"\x89PNG\r\n\x1a\n"
    journal.path.write_bytes(garbage)
    recorder = Recorder(database=_database(database_url), flush_interval=0.05, journal=journal)
    await recorder.start()
    await _until(lambda: not journal.exists(), timeout=10)
    recorder.record(rec(n=1))
    assert await recorder.close(timeout=10) == 0
    assert recorder.failures == 0
    assert await _replayed_rows(database_url) == [1]
    assert journal.quarantine_path.read_bytes() == garbage


async def test_a_journal_damaged_during_an_outage_is_replayed_when_the_database_is_back(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal" / "executions.jsonl")
    recorder = Recorder(
        database=_database(server.dsn(), _apply_schema),
        flush_interval=0.05,
        buffer_limit=4,
        journal=journal,
    )
    with capture_logs() as logs:
        await recorder.start()
        await _until(lambda: recorder.pool is not None)
        await server.astop()
        for i in range(5):
            recorder.record(rec(n=i))
        await _until(lambda: journal.exists() and recorder.pending == 0)
        with journal.path.open("ab") as f:
            f.write(b'{"job_name": "\xff", "fire_id": "torn')  # a bad byte, and torn
        for i in range(5, 10):
            recorder.record(rec(n=i))  # spilled after the torn line
        await _until(lambda: recorder.journaled == 10)

        await server.astart()
        await _until(lambda: not journal.exists())
        recorder.record(rec(n=20))
        await _until(lambda: recorder.pending == 0)
        assert await recorder.close(timeout=10) == 0
    events = [e["event"] for e in logs if e["event"].startswith("recorder_db")]
    assert events == ["recorder_db_unavailable", "recorder_db_recovered"]
    assert await _replayed_rows(server.dsn()) == [*range(10), 20]
    assert journal.quarantine_path.read_bytes() == b'{"job_name": "\xff", "fire_id": "torn\n'
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


# -- results and items: the same path, the same guarantees ---------------------------------------


def _with_items(n: int, count: int = 100) -> ExecutionRecord:
    elements = [{"i": i, "fire": n} for i in range(count)]
    keys = tuple(f"k{i}" for i in range(count))
    return rec(n=n, result=json.dumps(elements), items=Items(json.dumps(elements), count, keys))


async def _items_per_fire(dsn: str) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch(
            "SELECT scheduled_at, count(*) AS n, count(DISTINCT idx) AS d FROM job_items GROUP BY 1"
        )
    finally:
        await conn.close()
    assert all(r["n"] == r["d"] for r in found)  # no item twice
    return {int((r["scheduled_at"] - T).total_seconds()): r["n"] for r in found}


async def test_items_recorded_during_an_outage_land_once_even_replayed_twice(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "executions.jsonl")
    first = Recorder(
        database=_database(server.dsn(), _apply_schema), flush_interval=0.05, journal=journal
    )
    await first.start()
    for n in range(5):  # before the outage: written at once
        first.record(_with_items(n))
    await _until(lambda: first.written == 5)
    await server.astop()
    for n in range(5, 30):  # extracted while the database is away
        first.record(_with_items(n))
    assert await first.close(timeout=10) == 0  # all in the journal
    kept = journal.path.read_bytes()

    await server.astart()
    for _ in range(2):  # a replay, then the same journal again (a replay cut short and redone)
        journal.path.write_bytes(kept)
        again = Recorder(
            database=_database(server.dsn(), _apply_schema), flush_interval=0.05, journal=journal
        )
        await again.start()
        await _until(lambda: not journal.exists())
        assert await again.close(timeout=10) == 0
        assert await _items_per_fire(server.dsn()) == {n: 100 for n in range(30)}
    assert await _count(server.dsn()) == 30


async def test_a_result_postgresql_refuses_costs_the_result_not_the_row(database_url: str) -> None:
    refused = rec(n=1, result='{"text": "nul \\u0000 here"}', items=Items('["\\u0000"]', 1))
    recorder = Recorder(database=_database(database_url), flush_interval=0.05)
    await recorder.start()
    with capture_logs() as logs:
        recorder.record(refused)
        recorder.record(rec(n=2, result='{"fine": true}'))
        assert await recorder.close(timeout=10) == 0
    conn = await asyncpg.connect(database_url)
    try:
        found = await conn.fetch(
            "SELECT status, result, error FROM executions ORDER BY scheduled_at"
        )
        items = await conn.fetchval("SELECT count(*) FROM job_items")
    finally:
        await conn.close()
    assert [(r["status"], r["result"]) for r in found] == [
        ("succeeded", None),
        ("succeeded", '{"fine": true}'),
    ]
    assert "result not kept: PostgreSQL refused it" in found[0]["error"]
    assert items == 0
    assert recorder.rejected == 0
    assert [e["event"] for e in logs if e["event"].startswith("recorder_result")] == [
        "recorder_result_rejected"
    ]
