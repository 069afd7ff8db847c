"""The start log: an attempt's start is on disk before its action begins.

Rows reach PostgreSQL in batches (every 200 ms); a crash in between would lose the only trace of
an attempt that had begun, and the catch-up would then run its instant again. So the runner logs
each attempt's `running` record here and awaits :meth:`StartLog.durable` before the action
starts. One writer task group-commits: whatever was logged while the previous write was under way
is written and fsynced at once, in the log's own thread, and all its waiters go on — a burst of
10,000 starts costs a handful of fsyncs, not 10,000.

An entry matters until a row of its attempt (`running` or final) is durable in the recorder:
committed, or spilled to the journal. The log is a series of files ``starts-<n>.jsonl`` beside the
journal: one is closed after ``segment_entries`` entries and deleted once each of its attempts has
a durable row; the current one is emptied whenever that holds for all of it (a quiet moment), and
a clean stop removes them all. Late deletion is harmless: an entry whose row exists writes nothing.

At the next start, before the catch-up, the files an earlier process left are replayed
(:meth:`StartLog.replay`): an attempt with no row gets one, `running`, which recovery then marks
`abandoned` (and retries per policy), and the catch-up does not run those fires again. Lines are
read like the journal's: a bad one goes to ``starts.quarantine.jsonl`` and never stops a replay.
(A torn last line is a start whose fsync never returned: its action never began.)

Availability first: when the log cannot be written (disk full, read-only, gone), or the disk does
not answer within ``stall_after`` seconds, attempts run anyway, and ``startlog_write_failed`` /
``startlog_stalled`` say that their starts are not durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import os
import re
import stat
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
import structlog

from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.storage import store
from scheduler_daemon.storage.journal import FILE_MODE, Journal, ensure_dir, fsync_dir
from scheduler_daemon.storage.startline import decode_start, encode_fire, encode_start
from scheduler_daemon.timing.clock import Clock, SystemClock

log = structlog.get_logger("scheduler_daemon.storage.startlog")

SEGMENT_ENTRIES = 4096  # about 1 MB of entries per file
STALL_AFTER = 5.0  # seconds a write may take before attempts stop waiting for it
REPLAY_BATCH = 1000
_NAME = re.compile(r"starts-(\d{1,18})\.jsonl")
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
_REJECTED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class RowCounts(Protocol):
    """The recorder's two watermarks: rows handed to it, and how many of those are durable."""

    @property
    def appended(self) -> int: ...

    @property
    def durable(self) -> int: ...


@dataclass(slots=True, eq=False)
class Segment:
    """One file of the log and what is known of its entries (the runner's token for them)."""

    path: Path
    rows: RowCounts
    entries: int = 0  # logged into it
    unwritten: int = 0  # logged, not yet through the writer (written, or failed to be)
    outstanding: int = 0  # logged, and no row of their attempt recorded yet
    through: int = 0  # the recorder's row count when the last of those rows was recorded
    size: int = 0  # bytes written since it was created or emptied
    fd: int | None = None  # the writer thread's, like the two below
    linked: bool = False  # its directory entry is fsynced
    torn: bool = False  # a write failed part way: the next one starts on a new line

    def recorded(self) -> None:
        self.outstanding -= 1
        self.through = self.rows.appended

    def settled(self) -> bool:
        """Each entry is through the writer and its attempt has a durable row."""
        return not self.unwritten and not self.outstanding and self.through <= self.rows.durable


class StartLog:
    def __init__(
        self,
        directory: Path,
        *,
        rows: RowCounts,
        clock: Clock | None = None,
        segment_entries: int = SEGMENT_ENTRIES,
        stall_after: float = STALL_AFTER,
    ) -> None:
        """``rows``: the recorder (its watermarks say when an entry is no longer needed)."""
        self.directory = directory
        self.quarantine_path = directory / "starts.quarantine.jsonl"
        self._rows = rows
        self._clock: Clock = clock or SystemClock()
        self._segment_entries = segment_entries
        self._stall_after = stall_after
        # Left by earlier processes (found by ``start``): replayed at the first connection.
        self._previous: list[tuple[int, Path]] = []
        self._began: set[uuid.UUID] = set()  # the fire ids they hold
        self._number = 0
        self._segments: deque[Segment] = deque()  # ours, oldest first; the last is logged into
        self._queue: list[tuple[str, Segment]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._then: list[tuple[Callable[[Fire], None], Fire]] = []  # see log_fire
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="startlog")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stalled = False  # a write has taken longer than stall_after: nobody waits
        self._failing = False
        self.commits = 0  # writes, each with one fsync (and one more per new file)
        self.failures = 0

    # -- the runner's side -----------------------------------------------------------------------

    def log(self, rec: ExecutionRecord) -> Segment:
        """Queue ``rec`` (an attempt's `running` record) for the next group commit."""
        return self._enqueue(encode_start(rec))

    def log_fire(
        self,
        fire: Fire,
        started: float,
        drift_ms: float,
        node: str,
        then: Callable[[Fire], None] | None = None,
    ) -> Segment:
        """Queue the start of ``fire``'s current attempt (begun at ``started``, epoch seconds)
        for the next group commit, and call ``then(fire)`` once it is durable, or failed to be
        (like ``durable``): a burst's fires wait for their commit without a future or a task
        each. ``then`` is called at once (before this returns) while the log is stalled."""
        segment = self._enqueue(encode_fire(fire, started, drift_ms, node))
        if then is not None:
            if self._stalled:
                then(fire)
            else:
                self._then.append((then, fire))
        return segment

    def _enqueue(self, line: str) -> Segment:
        segment = self._segments[-1]
        if segment.entries >= self._segment_entries:
            segment = self._new_segment()
            self._segments.append(segment)
        segment.entries += 1
        segment.unwritten += 1
        segment.outstanding += 1
        self._queue.append((line, segment))
        self._wake.set()
        return segment

    def durable(self) -> asyncio.Future[None]:
        """Done once every record logged so far is written and fsynced, or failed to be (said
        in the log). Joins the next commit when called, not when awaited."""
        waiter = asyncio.get_running_loop().create_future()
        if self._stalled or not self._queue:
            waiter.set_result(None)
        else:
            self._waiters.append(waiter)  # with the records queued so far: woken by their commit
        return waiter

    def rows_durable(self) -> None:
        """The recorder's hook: rows have just become durable; settled files can go."""
        if not self._segments:
            return  # not started
        current = self._segments[-1]
        if any((s is not current or s.size) and s.settled() for s in self._segments):
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the files earlier processes left (only now: the daemon holds the state_dir's lock
        by then, and ours are numbered after theirs), then start the writer."""
        self._previous = _files_in(self.directory)
        self._number = max((n for n, _ in self._previous), default=0)
        self._segments.append(self._new_segment())
        self._task = asyncio.create_task(self._run(), name="startlog")

    async def close(self, timeout: float = STALL_AFTER) -> None:
        """Write what is queued, then remove every file whose attempts all have durable rows
        (all of them after a clean stop: the recorder is closed first)."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:  # a disk that does not answer: leave the files for the next start
                log.error("startlog_close_timeout", timeout_s=timeout)
                task.cancel()
        self._executor.shutdown(wait=False)

    # -- the writer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            final = self._closing  # read first: a close() meanwhile wakes us for one more pass
            try:
                if self._queue:
                    await self._commit()
                await self._tidy(final=final and not self._queue)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours: attempts must not wait on a dead writer
                log.exception("startlog_writer_error")
            if final and not self._queue:
                return

    async def _commit(self) -> None:
        batch, self._queue = self._queue, []
        waiters, self._waiters = self._waiters, []
        then, self._then = self._then, []
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, _write, batch)
        try:
            try:
                async with self._clock.timeout(self._stall_after):
                    written, error = await asyncio.shield(work)
            except TimeoutError:
                self._stalled = True
                log.error("startlog_stalled", seconds=self._stall_after, attempts=len(batch))
                _wake_all(waiters, then)  # they run now; the ones that come meanwhile do not wait
                written, error = await work
                self._stalled = False
                log.warning("startlog_unstalled")
        finally:
            _wake_all(waiters, then)
            for _, segment in batch:  # through the writer, whatever happened
                segment.unwritten -= 1
        for segment, size in written.items():
            segment.size += size
        self.commits += 1
        self._report(error)

    def _report(self, error: OSError | None) -> None:
        if error is not None:
            self.failures += 1
            if not self._failing:  # once per episode, not once per commit
                self._failing = True
                log.error(
                    "startlog_write_failed",
                    path=str(self.directory),
                    error=str(error),
                    action="attempts run without a durable start",
                )
        elif self._failing:
            self._failing = False
            log.warning("startlog_recovered", path=str(self.directory))

    async def _tidy(self, *, final: bool = False) -> None:
        """Delete the closed files whose attempts all have durable rows; empty the current one
        when that holds for it too (or delete it: ``final``)."""
        current = self._segments[-1]
        doomed = [s for s in self._segments if (final or s is not current) and s.settled()]
        emptied = current if not final and current.size and current.settled() else None
        leftover = [s for s in self._segments if s not in doomed] if final else []
        for segment in doomed:
            if segment is not current:  # the current one stays the one logged into
                self._segments.remove(segment)
        if doomed or emptied or leftover:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, _tidy_files, doomed, emptied, leftover)
        if emptied is not None:
            emptied.size = 0

    def _new_segment(self) -> Segment:
        self._number += 1
        return Segment(self.directory / f"starts-{self._number}.jsonl", self._rows)

    # -- replay at the next start ----------------------------------------------------------------

    async def replay(self, pool: asyncpg.Pool) -> set[uuid.UUID]:
        """Give each attempt the earlier processes' files hold a row if it has none
        (`running`: recovery marks it `abandoned` next), then remove the files; the fire ids
        they hold (the catch-up must not run those fires again)."""
        began = self._began  # kept across a replay cut short by the database and done again
        while self._previous:
            _, path = self._previous[0]
            starts = Journal(path, quarantine_path=self.quarantine_path, decode=decode_start)
            batches = starts.read(REPLAY_BATCH)
            entries = inserted = 0
            async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
                while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                    inserted += await _insert(conn, batch)
                    entries += len(batch)
                    began.update(rec.fire_id for rec in batch)
            if starts.quarantined:
                log.error(
                    "startlog_lines_quarantined",
                    lines=starts.quarantined,
                    path=str(starts.quarantine_path),
                    file=str(path),
                    kept=starts.quarantine_failed,
                    examples=starts.examples,
                )
            if not starts.quarantine_failed:  # else its bad lines are nowhere else: keep it
                await asyncio.to_thread(starts.remove)
            log.info("startlog_replayed", path=str(path), entries=entries, without_row=inserted)
            self._previous.pop(0)
        return began


async def _insert(conn: store.Conn, batch: Sequence[ExecutionRecord]) -> int:
    try:
        return await store.insert_started(conn, batch)
    except _REJECTED:  # not expected (lines are checked); one bad entry must not block the rest
        inserted = 0
        for rec in batch:
            try:
                inserted += await store.insert_started(conn, [rec])
            except _REJECTED as exc:
                log.error(
                    "startlog_entry_rejected",
                    job=rec.job_name,
                    fire_id=str(rec.fire_id),
                    attempt=rec.attempt,
                    error=type(exc).__name__,
                )
        return inserted


def _files_in(directory: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("startlog_unreadable", path=str(directory), error=str(exc))
        return []
    found = [(int(m[1]), directory / name) for name in names if (m := _NAME.fullmatch(name))]
    return sorted(found)


# -- in the log's thread -------------------------------------------------------------------------


Batch = list[tuple[str, Segment]]


def _write(batch: Batch) -> tuple[dict[Segment, int], OSError | None]:
    """Append the batch's lines to their files and fsync each once; bytes written per file, and
    the first error (the other files are still written)."""
    written: dict[Segment, int] = {}
    error: OSError | None = None
    for segment, entries in itertools.groupby(batch, key=operator.itemgetter(1)):
        payload = "".join([line for line, _ in entries]).encode()
        try:
            written[segment] = written.get(segment, 0) + _append(segment, payload)
        except OSError as exc:
            error = error or exc
    return written, error


def _append(segment: Segment, payload: bytes) -> int:
    if segment.fd is None:
        ensure_dir(segment.path.parent)
        try:
            segment.fd = os.open(segment.path, _FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            segment.fd = os.open(segment.path, _FLAGS)
            segment.linked = True
        if stat.S_IMODE(os.fstat(segment.fd).st_mode) != FILE_MODE:  # the umask
            os.fchmod(segment.fd, FILE_MODE)
    if segment.torn:
        payload = b"\n" + payload
    segment.torn = True
    view = memoryview(payload)
    while view:
        view = view[os.write(segment.fd, view) :]
    segment.torn = False
    os.fsync(segment.fd)
    if not segment.linked:  # a new file: its directory entry must survive a crash too
        fsync_dir(segment.path.parent)
        segment.linked = True
    return len(payload)


def _tidy_files(doomed: list[Segment], emptied: Segment | None, leftover: list[Segment]) -> None:
    """Delete ``doomed``, empty ``emptied``, close ``leftover``. A failure only leaves entries
    that a replay finds covered: logged, never raised."""
    for segment in doomed:
        _close(segment)
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("startlog_remove_failed", path=str(segment.path), error=str(exc))
    if emptied is not None and emptied.fd is not None:
        try:
            os.ftruncate(emptied.fd, 0)
        except OSError as exc:
            log.warning("startlog_truncate_failed", path=str(emptied.path), error=str(exc))
    for segment in leftover:
        _close(segment)


def _close(segment: Segment) -> None:
    if segment.fd is not None:
        with contextlib.suppress(OSError):
            os.close(segment.fd)
        segment.fd = None


def _wake_all(
    waiters: list[asyncio.Future[None]], then: list[tuple[Callable[[Fire], None], Fire]]
) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()
    for call, fire in then:
        try:
            call(fire)
        except Exception:  # a bug of ours: the other fires must still start
            log.exception("startlog_then_failed", job=fire.job.name)
    then.clear()
