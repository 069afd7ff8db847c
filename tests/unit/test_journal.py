"""The journal on disk: every valid line survives damage around it, bad lines are quarantined."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.storage import rows
from scheduler_daemon.storage.journal import Journal
from tests.helpers import rec


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal" / "executions.jsonl")


def _line(**changes: object) -> bytes:
    data = rows.to_json(rec(n=99))
    data.update(changes)
    return json.dumps(data).encode() + b"\n"


def _damaged(journal: Journal, bad: bytes) -> None:
    """Rows 1-3, then ``bad`` as written (no newline added), then rows 4-5 appended after it."""
    journal.append([rec(n=1), rec(n=2), rec(n=3)])
    with journal.path.open("ab") as f:
        f.write(bad)
    journal.append([rec(n=4), rec(n=5)])


def _read_all(journal: Journal, batch_size: int = 2) -> list[ExecutionRecord]:
    return [r for batch in journal.read(batch_size) for r in batch]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _permissive_umask() -> Iterator[None]:
    """The modes must not depend on the umask: test under the loosest one."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_appended_records_read_back_in_order(journal: Journal) -> None:
    journal.append([rec(n=i) for i in range(5)])
    journal.append([rec(n=5)])
    assert _read_all(journal) == [rec(n=i) for i in range(6)]
    assert journal.quarantined == 0 and not journal.quarantine_path.exists()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b'{"fire_id": "\xff\xfe"}\n', id="non-utf8-byte"),
        pytest.param(_line(scheduled_at=None), id="null-scheduled"),
        pytest.param(_line(started_at=None), id="null-started-of-an-attempt-that-ran"),
        pytest.param(_line(status="exploded"), id="unknown-status"),
        pytest.param(_line(scheduled_at="2026-01-01T00:00:00"), id="naive-instant"),
        pytest.param(_line(attempt=2**40), id="attempt-out-of-range"),
        pytest.param(_line(output="\ud800"), id="lone-surrogate"),
        pytest.param(b"[" * 100_000 + b"\n", id="deeply-nested"),
        pytest.param(b"null\n", id="json-not-an-object"),
        pytest.param(b'{"fire_id": "torn', id="torn-line-then-an-append"),
    ],
)
def test_a_bad_line_is_quarantined_and_every_valid_line_kept(journal: Journal, bad: bytes) -> None:
    _damaged(journal, bad)
    with capture_logs() as logs:
        got = _read_all(journal)
    assert got == [rec(n=i) for i in range(1, 6)]
    assert journal.quarantined == 1 and not journal.quarantine_failed
    assert journal.quarantine_path.read_bytes() == bad.rstrip(b"\n") + b"\n"
    assert logs == []  # the recorder logs one event per replay, with the count
    [example] = journal.examples
    assert example.startswith("line 4: expected ")
    assert _mode(journal.quarantine_path) == 0o600


def test_a_null_start_of_an_attempt_that_never_ran_is_valid(journal: Journal) -> None:
    journal.path.parent.mkdir()
    journal.path.write_bytes(_line(status="skipped", started_at=None, drift_ms=None))
    [skipped] = _read_all(journal)
    assert skipped.started_at is None and journal.quarantined == 0


def test_a_wholly_garbage_file_is_quarantined_whole(journal: Journal) -> None:
    garbage = os.urandom(200_000).replace(b"\n", b"") + b"\nnot json\n\x00\x01\n"
    journal.path.parent.mkdir()
    journal.path.write_bytes(garbage)
    assert _read_all(journal) == []
    assert journal.quarantined == 3 and len(journal.examples) == 3
    assert journal.quarantine_path.read_bytes() == garbage


def test_the_error_logged_never_quotes_the_line(journal: Journal) -> None:
    _damaged(journal, _line(status="exploded", output="s3cr3t-output"))
    _read_all(journal)
    [example] = journal.examples
    assert "s3cr3t" not in example and "status" in example


def test_only_the_first_reasons_are_kept(journal: Journal) -> None:
    _damaged(journal, b"bad\n" * 1000)
    _read_all(journal)
    assert journal.quarantined == 1000 and len(journal.examples) == 5


def test_quarantine_is_append_only(journal: Journal) -> None:
    _damaged(journal, b"first\n")
    _read_all(journal)
    journal.remove()
    _damaged(journal, b"second\n")
    _read_all(journal)
    assert journal.quarantine_path.read_bytes() == b"first\nsecond\n"


def test_a_quarantine_that_cannot_be_written_is_reported(journal: Journal) -> None:
    _damaged(journal, b"bad\n")
    journal.quarantine_path.mkdir()  # in the way: the quarantine cannot be opened
    with capture_logs() as logs:
        assert len(_read_all(journal)) == 5
    assert journal.quarantine_failed and journal.quarantined == 1
    assert "journal_quarantine_failed" in [e["event"] for e in logs]


def test_files_are_0600_and_a_new_directory_0700_whatever_the_umask(journal: Journal) -> None:
    journal.append([rec()])
    assert _mode(journal.path) == 0o600
    assert _mode(journal.path.parent) == 0o700


def test_an_existing_journal_with_loose_modes_is_tightened(journal: Journal) -> None:
    journal.path.parent.mkdir()
    journal.path.write_bytes(b"")
    journal.path.chmod(0o644)
    journal.append([rec()])
    assert _mode(journal.path) == 0o600


def test_a_journal_removed_meanwhile_reads_as_empty(journal: Journal) -> None:
    assert _read_all(journal) == []


def test_a_new_journal_fsyncs_its_directory(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    journal.append([rec()])
    assert synced.count(True) >= 1  # the new file's directory (and the new directory's parent)
    synced.clear()
    journal.append([rec(n=1)])
    assert synced == [False]  # an existing file: only the file
