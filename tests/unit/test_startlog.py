"""The start log on disk: group commits, files deleted once covered, bad lines quarantined."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.startline import decode_start, encode_fire, encode_start
from scheduler_daemon.storage.startlog import Segment, StartLog
from scheduler_daemon.timing.clock import SystemClock
from tests.helpers import FakeClock, T, make_job, rec, wait_until

TOKYO = ZoneInfo("Asia/Tokyo")


class Rows:
    """The recorder's watermarks, moved by hand."""

    def __init__(self) -> None:
        self.appended = 0
        self.durable = 0


def started(n: int, **kw: object) -> ExecutionRecord:
    """The `running` record of job j's fire at T + n seconds, as the runner logs it."""
    kw.setdefault("status", Status.RUNNING)
    return rec(n=n, finished_at=None, duration_ms=None, **kw)  # type: ignore[arg-type]


async def blocked_log(tmp_path: Path, rows: Rows) -> tuple[StartLog, Path]:
    """A started log whose directory cannot be made (a file stands in its way), and that file."""
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    starts = StartLog(blocker / "journal", rows=rows)
    await starts.start()
    return starts, blocker


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


@pytest.fixture
def rows() -> Rows:
    return Rows()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal"


@pytest.fixture
async def starts(directory: Path, rows: Rows) -> Iterator[StartLog]:
    log = StartLog(directory, rows=rows)
    await log.start()
    yield log
    await log.close()


FsyncCounter = list[bool]  # one entry per fsync: True for a directory


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncCounter:
    calls: FsyncCounter = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def gated_fsync(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[int]]:
    """File fsyncs wait for the returned gate; the list counts them (as they begin)."""
    gate, calls = threading.Event(), []
    real = os.fsync

    def fsync(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append(fd)
            assert gate.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return gate, calls


async def true_soon(check: Callable[[], bool]) -> None:
    """Until ``check`` holds: the writer works in its own thread."""

    async def holds() -> bool:
        return check()

    await wait_until(holds)


# -- group commit --------------------------------------------------------------------------------


async def test_a_burst_of_starts_costs_one_fsync_and_each_waits_for_it(
    starts: StartLog, directory: Path, fsyncs: FsyncCounter
) -> None:
    async def attempt(n: int) -> bool:
        starts.log(started(n))
        await starts.durable()
        # once durable returns, its line is on disk
        return started(n).fire_id.hex.encode() in (directory / "starts-1.jsonl").read_bytes()

    assert all(await asyncio.gather(*(attempt(n) for n in range(200))))
    assert fsyncs.count(False) == 1  # the file, once for all 200
    assert starts.commits == 1
    assert [decode_start(line) for line in lines(directory / "starts-1.jsonl")] == [
        started(n) for n in range(200)
    ]


async def test_starts_logged_during_a_write_wait_for_the_next_one(
    starts: StartLog, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, calls = gated_fsync(monkeypatch)
    starts.log(started(0))
    first = starts.durable()
    await true_soon(lambda: len(calls) == 1)  # the first write is being fsynced
    later = []
    for n in range(1, 51):
        starts.log(started(n))
        later.append(starts.durable())
    await asyncio.sleep(0)
    assert not first.done() and not any(w.done() for w in later)
    gate.set()
    await asyncio.gather(first, *later)
    assert len(calls) == 2  # one fsync for the first start, one for the 50 that came meanwhile
    assert len(lines(directory / "starts-1.jsonl")) == 51


async def test_a_fires_then_runs_once_its_line_is_fsynced_with_the_whole_burst(
    starts: StartLog, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, calls = gated_fsync(monkeypatch)
    on_disk: list[tuple[Fire, int]] = []

    def then(fire: Fire) -> None:  # what each sees of the file when told
        on_disk.append((fire, len(lines(directory / "starts-1.jsonl"))))

    fires = [scheduled(n) for n in range(50)]
    for fire in fires:
        starts.log_fire(fire, T.timestamp(), 0.0, "n1", then)
    await true_soon(lambda: len(calls) == 1)  # written, being fsynced
    await asyncio.sleep(0)
    assert on_disk == []
    gate.set()
    await true_soon(lambda: len(on_disk) == 50)
    assert on_disk == [(fire, 50) for fire in fires]  # in order, after the one fsync
    assert len(calls) == 1


async def test_a_fires_then_runs_when_its_line_cannot_be_written(
    tmp_path: Path, rows: Rows
) -> None:
    starts, _ = await blocked_log(tmp_path, rows)
    fire, told = scheduled(0), list[Fire]()
    with capture_logs():
        starts.log_fire(fire, T.timestamp(), 0.0, "n1", told.append)
        await true_soon(lambda: len(told) == 1)
    await starts.close()
    assert told == [fire] and starts.failures == 1


async def test_durable_returns_at_once_when_nothing_is_queued(starts: StartLog) -> None:
    await asyncio.wait_for(starts.durable(), 1)


async def test_a_cancelled_waiter_does_not_disturb_the_others(
    starts: StartLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, calls = gated_fsync(monkeypatch)
    starts.log(started(0))
    starts.log(started(1))
    waiters = [starts.durable() for _ in range(2)]
    await true_soon(lambda: len(calls) == 1)
    waiters[0].cancel()
    gate.set()
    await waiters[1]
    assert waiters[0].cancelled()


# -- when the disk will not --------------------------------------------------------------------


async def test_a_log_that_cannot_be_written_lets_attempts_run_and_says_so_once(
    tmp_path: Path, rows: Rows
) -> None:
    starts, blocker = await blocked_log(tmp_path, rows)
    with capture_logs() as logs:
        for n in range(3):
            starts.log(started(n))
            await asyncio.wait_for(starts.durable(), 5)  # not held back
        blocker.unlink()
        starts.log(started(3))
        await starts.durable()
    await starts.close()
    events = [e["event"] for e in logs]
    assert events == ["startlog_write_failed", "startlog_recovered"]
    assert starts.failures == 3
    assert [decode_start(line) for line in lines(blocker / "journal" / "starts-1.jsonl")] == [
        started(3)
    ]


async def test_a_disk_that_does_not_answer_stops_holding_attempts_back(
    directory: Path, rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, calls = gated_fsync(monkeypatch)
    clock = FakeClock()
    starts = StartLog(directory, rows=rows, clock=clock, stall_after=5)
    await starts.start()
    with capture_logs() as logs:
        starts.log(started(0))
        first = starts.durable()
        await true_soon(lambda: len(calls) == 1)
        await clock.advance(4)
        assert not first.done()
        await clock.advance(1)
        assert first.done()
        starts.log(started(1))  # while stalled, a start does not wait at all
        await asyncio.wait_for(starts.durable(), 1)
        told: list[Fire] = []
        starts.log_fire(scheduled(2), T.timestamp(), 0.0, "n1", told.append)
        assert len(told) == 1  # at once
        gate.set()
        await true_soon(lambda: len(lines(directory / "starts-1.jsonl")) == 3)
    await starts.close()
    assert [e["event"] for e in logs][:2] == ["startlog_stalled", "startlog_unstalled"]


# -- files: written, rotated, emptied, deleted --------------------------------------------------


def _cover(entries: list[Segment], rows: Rows, *, durable: bool) -> None:
    """A row of each attempt reaches the recorder (and, with ``durable``, PostgreSQL)."""
    for entry in entries:
        rows.appended += 1
        entry.recorded()
    if durable:
        rows.durable = rows.appended


async def test_a_file_goes_once_each_of_its_attempts_has_a_durable_row(
    directory: Path, rows: Rows
) -> None:
    starts = StartLog(directory, rows=rows, segment_entries=3)
    await starts.start()
    entries = [starts.log(started(n)) for n in range(7)]
    await starts.durable()
    files = [directory / f"starts-{i}.jsonl" for i in (1, 2, 3)]
    assert [len(lines(f)) for f in files] == [3, 3, 1]

    _cover(entries[:3], rows, durable=False)  # recorded, not yet committed
    starts.rows_durable()
    _cover(entries[3:5], rows, durable=True)  # file 2 still has an attempt without a row
    starts.rows_durable()
    await true_soon(lambda: not files[0].exists())
    assert files[1].exists() and files[2].exists()

    _cover(entries[5:], rows, durable=True)
    starts.rows_durable()
    await true_soon(lambda: not files[1].exists())
    await true_soon(lambda: lines(files[2]) == [])  # the current file is emptied, kept
    starts.log(started(8))
    await starts.durable()
    assert [decode_start(line) for line in lines(files[2])] == [started(8)]
    await starts.close()


async def test_close_removes_the_files_whose_attempts_have_rows_and_keeps_the_others(
    directory: Path, rows: Rows
) -> None:
    starts = StartLog(directory, rows=rows, segment_entries=2)
    await starts.start()
    entries = [starts.log(started(n)) for n in range(4)]
    await starts.durable()
    _cover(entries[:3], rows, durable=True)  # the 4th attempt was still going at the crash
    await starts.close()
    assert sorted(p.name for p in directory.iterdir()) == ["starts-2.jsonl"]

    again = StartLog(directory, rows=rows)  # the next process: replays it, writes a new file
    await again.start()
    entry = again.log(started(9))
    await again.durable()
    _cover([entry], rows, durable=True)
    await again.close()
    assert sorted(p.name for p in directory.iterdir()) == ["starts-2.jsonl"]


async def test_files_are_0600_in_a_0700_directory_whatever_the_umask(
    directory: Path, rows: Rows
) -> None:
    old = os.umask(0)
    try:
        starts = StartLog(directory, rows=rows)
        await starts.start()
        starts.log(started(0))
        await starts.durable()
        await starts.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "starts-1.jsonl").stat().st_mode) == 0o600


async def test_a_new_file_fsyncs_its_directory(
    starts: StartLog, directory: Path, fsyncs: FsyncCounter
) -> None:
    starts.log(started(0))
    await starts.durable()
    assert fsyncs.count(True) >= 1
    fsyncs.clear()
    starts.log(started(1))
    await starts.durable()
    assert fsyncs == [False]


# -- lines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        started(0),
        started(1, drift_ms=None, node='nœud "1"', attempt=3, trigger=FireKind.CATCHUP),
        started(2, scheduled_at=(T + timedelta(microseconds=7)).astimezone(TOKYO)),
    ],
)
def test_a_start_line_reads_back_as_its_record(record: ExecutionRecord) -> None:
    line = encode_start(record)
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    decoded = decode_start(line.rstrip("\n").encode())
    assert decoded == record
    assert decoded.scheduled_at.utcoffset() == timedelta(0)


def scheduled(n: int, trigger: FireKind = FireKind.SCHEDULE, attempt: int = 1) -> Fire:
    """Job j's fire at T + n seconds, as the scheduler submits it."""
    return Fire(make_job("j"), T + timedelta(seconds=n), trigger, None, attempt=attempt)


@pytest.mark.parametrize(
    "at", [T, (T + timedelta(seconds=1, microseconds=7)).astimezone(TOKYO)], ids=["utc", "tokyo"]
)
def test_a_scheduled_fires_line_leaves_its_id_to_the_reader_which_derives_the_same(
    at: datetime,
) -> None:
    fire = Fire(make_job("j"), at, FireKind.CATCHUP, None, attempt=2)
    line = encode_fire(fire, at.timestamp() + 0.003, 3.0, 'nœud "1"')
    assert fire.given_id is None  # not hashed on the way to the action
    assert '"fire_id"' not in line and line.endswith("\n") and line.isascii()
    decoded = decode_start(line.rstrip("\n").encode())
    assert decoded == ExecutionRecord(
        fire_id=fire.fire_id,  # what the runner's rows of this fire carry
        job_name="j",
        scheduled_at=at,
        attempt=2,
        trigger=FireKind.CATCHUP,
        status=Status.RUNNING,
        started_at=at + timedelta(milliseconds=3),
        finished_at=None,
        drift_ms=3.0,
        duration_ms=None,
        node='nœud "1"',
    )


def test_a_fire_with_a_given_id_writes_it() -> None:
    given = uuid.uuid4()
    fire = Fire(make_job("j"), T, FireKind.MANUAL, None, given_id=given)
    decoded = decode_start(encode_fire(fire, T.timestamp(), 0.0, "n1").rstrip("\n").encode())
    assert (decoded.fire_id, decoded.trigger, decoded.drift_ms) == (given, FireKind.MANUAL, 0.0)


# Written by the version before fire ids were left out (scheduled_fire_id of j at T+2s, T+1s).
PREVIOUS_VERSION_LINES = [
    b'{"fire_id":"147acb5f64275f53a917623bb6e90853","job":"j","scheduled_us":1767225600000007,'
    b'"attempt":1,"trigger":"schedule","started_us":1767225602003000,"drift_ms":3.0,"node":"n1"}',
    b'{"fire_id":"78337c2c0537586ab905a7b338ad8525","job":"j","scheduled_us":1767225601000000,'
    b'"attempt":2,"trigger":"catchup","started_us":1767225601003000,"drift_ms":3.0,"node":"n1"}',
]


def test_lines_of_the_previous_version_read_back_with_their_fire_ids() -> None:
    first, second = (decode_start(line) for line in PREVIOUS_VERSION_LINES)
    assert first.fire_id == scheduled_fire_id("j", T + timedelta(seconds=2))  # as written
    assert first.scheduled_at == T + timedelta(microseconds=7)
    assert (second.fire_id, second.attempt, second.trigger) == (
        scheduled_fire_id("j", T + timedelta(seconds=1)),
        2,
        FireKind.CATCHUP,
    )
    started_at = (T + timedelta(seconds=1, milliseconds=3)).timestamp()
    line = encode_fire(scheduled(1, attempt=2, trigger=FireKind.CATCHUP), started_at, 3.0, "n1")
    assert decode_start(line.rstrip("\n").encode()) == second  # the same entry, either way


BAD_LINES = [
    b"\xff\xfe not utf-8",
    b'{"fire_id": "trunc',  # torn by a crash
    b"[1, 2]",
    b'{"job": "j"}',
    encode_start(started(5)).replace('"trigger":"schedule"', '"trigger":"secret-xyz"').encode(),
    encode_start(started(5)).replace('"attempt":1', '"attempt":0').encode(),
    encode_start(started(5)).replace('"attempt":1', '"attempt":true').encode(),
    encode_start(started(5)).replace('"fire_id":"', '"fire_id":"x').encode(),
    re.sub(r'"fire_id":"\w+"', '"fire_id":null', encode_start(started(5))).encode(),
    encode_fire(scheduled(5), T.timestamp(), 1.0, "n1")
    .replace('{"job"', '{"fire_id":7,"job"')
    .encode(),
    encode_start(started(5)).replace('"scheduled_us":', '"scheduled_us":9').encode() + b"9" * 30,
    encode_fire(scheduled(5), T.timestamp(), 1.0, "n1")
    .replace('"drift_us":1000', '"drift_us":1.5')
    .encode(),
    encode_fire(scheduled(5), T.timestamp(), 1.0, "n1")
    .replace('"node"', '"drift_ms":1,"node"')
    .encode(),
]


@pytest.mark.parametrize("bad", BAD_LINES)
def test_a_bad_start_line_is_refused_without_quoting_it(bad: bytes) -> None:
    with pytest.raises(ValueError) as refused:
        decode_start(bad.rstrip(b"\n"))
    assert "secret" not in str(refused.value)


def test_a_torn_and_damaged_start_file_reads_its_valid_lines_and_quarantines_the_rest(
    directory: Path,
) -> None:
    directory.mkdir(parents=True)
    path = directory / "starts-1.jsonl"
    good = [encode_start(started(n)).encode() for n in range(4)]
    path.write_bytes(good[0] + good[1] + b"garbage\n" + good[2] + good[3] + good[0][:30])
    quarantine = directory / "starts.quarantine.jsonl"
    reader = Journal(path, quarantine_path=quarantine, decode=decode_start)
    assert [r for batch in reader.read(2) for r in batch] == [started(n) for n in range(4)]
    assert reader.quarantined == 2
    assert quarantine.read_bytes() == b"garbage\n" + good[0][:30] + b"\n"


# -- with the runner: no action begins before its start line is fsynced -------------------------


class Recorded:
    """The recorder for the runner: rows counted, each durable at once."""

    def __init__(self) -> None:
        self.rows: list[ExecutionRecord] = []

    def record(self, rec: ExecutionRecord) -> None:
        self.rows.append(rec)

    @property
    def appended(self) -> int:
        return len(self.rows)

    @property
    def durable(self) -> int:
        return len(self.rows)


async def test_a_bursts_actions_begin_only_once_their_lines_are_fsynced(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, calls = gated_fsync(monkeypatch)
    recorded = Recorded()
    starts = StartLog(directory, rows=recorded)
    await starts.start()
    on_disk_when_begun: list[int] = []

    class Action:
        async def run(self, overrides: object = None) -> Outcome:
            # the fsync has returned: what the file holds now survives a crash
            on_disk_when_begun.append(len(lines(directory / "starts-1.jsonl")))
            return Outcome(status=Status.SUCCEEDED, retryable=False)

    runner = Runner(
        clock=SystemClock(),
        limiter=Limiter(10),
        recorder=recorded,
        action_for=lambda job: Action(),
        node="n1",
        starts=starts,
    )
    fires = [runner.submit(make_job(f"j{i}"), T) for i in range(5)]
    await true_soon(lambda: len(calls) == 1)  # the burst's one write, held in its fsync
    for _ in range(20):  # whatever the loop had to run has run
        await asyncio.sleep(0)
    assert on_disk_when_begun == [] and recorded.rows == []
    gate.set()
    await asyncio.gather(*(runner.finished(f) for f in fires if f is not None))
    assert on_disk_when_begun == [5] * 5 and len(calls) == 1
    assert [r.status for r in recorded.rows] == [Status.SUCCEEDED] * 5
    replayed = [decode_start(line) for line in lines(directory / "starts-1.jsonl")]
    assert [r.fire_id for r in replayed] == [r.fire_id for r in recorded.rows]  # the same fires
    await starts.close()
