"""An append-only file of execution records that could not reach PostgreSQL yet.

When the database is down for long, the recorder's memory buffer spills here (fsynced per batch);
when it is back, or at the next start, the journal is replayed — writes are idempotent on
(fire_id, attempt), so a replay cut short and done again writes nothing twice — then removed.

No line can stop a replay: each is decoded and validated on its own, and a line that is not
UTF-8, not JSON or not a record this daemon writes (a torn write, a flipped bit, a hand edit) is
moved, byte for byte, to the quarantine file beside the journal (``<stem>.quarantine<suffix>``,
append-only) for a human to look at; every valid line is still replayed. A replay cut short after
quarantining may copy a bad line there twice; nothing is lost either way.

Files are 0600 and a directory the journal creates 0700, whatever the umask (rows hold job
output); a new file's directory is fsynced so that the file itself survives a crash.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.storage import rows

log = structlog.get_logger("scheduler_daemon.storage.journal")

FILE_MODE = 0o600
DIR_MODE = 0o700
# Read and write (the last byte is read to find a torn line), never through a symlink.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
# Bad lines are written to the quarantine in chunks: bounded memory, few fsyncs.
_QUARANTINE_CHUNK = 64 * 1024
_EXAMPLES = 5
# Statuses of an attempt that began: its row always has a start instant.
_STARTED = frozenset({Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT})
_INT32 = range(-(2**31), 2**31)
_INSTANTS = ("scheduled_at", "started_at", "finished_at")


class Journal:
    def __init__(
        self,
        path: Path,
        *,
        quarantine_path: Path | None = None,
        decode: Callable[[bytes], ExecutionRecord] | None = None,
    ) -> None:
        """``decode``: a line's record, ValueError saying why when it holds none (the start log
        has its own lines and one quarantine for all its files)."""
        self.path = path
        self.quarantine_path = quarantine_path or path.with_name(
            f"{path.stem}.quarantine{path.suffix}"
        )
        self._decode = decode or decode_line
        # Of the last complete ``read``: lines moved to the quarantine, and whether that failed
        # (then the bad lines are still only in the journal, which must not be removed).
        self.quarantined = 0
        self.quarantine_failed = False
        # Why the first few bad lines are bad (a whole garbage file is one log event, not one per
        # line): "line N: expected X, got Y", never the line's content.
        self.examples: list[str] = []

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, records: Sequence[ExecutionRecord]) -> None:
        """Append and fsync (blocking: call it from a worker thread)."""
        payload = "".join(
            json.dumps(rows.to_json(r), separators=(",", ":")) + "\n" for r in records
        )
        _append(self.path, payload.encode("utf-8"))

    def read(self, batch_size: int) -> Iterator[list[ExecutionRecord]]:
        """The journal's valid records in batches; bad lines go to the quarantine (once the
        iterator is exhausted, ``quarantined`` says how many and ``examples`` why)."""
        self.quarantined = 0
        self.quarantine_failed = False
        self.examples = []
        batch: list[ExecutionRecord] = []
        bad = bytearray()
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return  # removed by hand since: nothing to replay
        with f:
            for number, raw in enumerate(f, 1):
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    continue  # an empty line holds nothing to keep
                try:
                    batch.append(self._decode(line))
                except ValueError as exc:
                    self.quarantined += 1
                    if len(self.examples) < _EXAMPLES:
                        self.examples.append(f"line {number}: {exc}")
                    bad += raw if raw.endswith(b"\n") else raw + b"\n"
                    if len(bad) >= _QUARANTINE_CHUNK:
                        self._quarantine(bad)
                        bad.clear()
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
        if bad:
            self._quarantine(bad)

    def _quarantine(self, lines: bytes | bytearray) -> None:
        try:
            _append(self.quarantine_path, bytes(lines))
        except OSError as exc:
            self.quarantine_failed = True
            log.error("journal_quarantine_failed", path=str(self.quarantine_path), error=str(exc))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def load_object(line: bytes) -> dict[str, Any]:
    """The JSON object a line holds; ValueError saying why when it holds none."""
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"expected UTF-8, got byte {line[exc.start]:#04x} at {exc.start}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"expected a JSON object, got unparsable text ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def decode_line(line: bytes) -> ExecutionRecord:
    """The record a journal line holds; ValueError saying why when it holds none."""
    data = load_object(line)
    try:
        record = rows.from_json(data)
    except ValidationError as exc:
        # Field names and error kinds only: pydantic's message quotes the values (job output).
        fields = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors())
        raise ValueError(f"expected an execution record, got invalid fields ({fields})") from None
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"expected an execution record, got {type(exc).__name__}") from None
    check(record)
    return record


def check(record: ExecutionRecord) -> None:
    """What the record's types allow but the daemon never writes and the database would refuse
    or misread: naive or missing instants, out-of-range integers, text PostgreSQL cannot hold."""
    for name in _INSTANTS:
        value: datetime | None = getattr(record, name)
        if value is not None and value.utcoffset() is None:
            raise ValueError(f"expected {name} with a UTC offset, got a naive time")
    if record.started_at is None and record.status in _STARTED:
        raise ValueError(f"expected started_at for status {record.status}, got null")
    if record.attempt < 1:
        raise ValueError(f"expected attempt >= 1, got {record.attempt}")
    for name in ("attempt", "http_status", "exit_code"):
        number: int | None = getattr(record, name)
        if number is not None and number not in _INT32:
            raise ValueError(f"expected {name} within a 32-bit integer, got {number}")
    for name in ("job_name", "node", "error", "output"):
        text: str | None = getattr(record, name)
        if text is None:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"expected {name} as valid Unicode, got a lone surrogate") from None
        if name in ("job_name", "node") and "\x00" in text:
            raise ValueError(f"expected {name} without NUL characters, got one")


def _append(path: Path, payload: bytes) -> None:
    """Append ``payload`` and fsync; a torn last line (a crash or a full disk mid-append) is
    ended first, so that it stays one bad line instead of swallowing the first new record."""
    ensure_dir(path.parent)
    try:
        fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    except FileExistsError:
        fd = os.open(path, _OPEN_FLAGS)
        created = False
    try:
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) != FILE_MODE:  # the umask, or a file of an older version
            os.fchmod(fd, FILE_MODE)
        if info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n":
            payload = b"\n" + payload
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def ensure_dir(directory: Path) -> None:
    if directory.is_dir():
        return  # an existing directory keeps its modes: it may be the operator's
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask
    fsync_dir(directory.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
