"""Every attempt's record → PostgreSQL, in batches, off the dispatch path, through outages.

``record`` only appends to an in-memory buffer and wakes the writer task. The writer waits up to
``flush_interval`` (or until a batch is full), then writes a batch with COPY. A row leaves the
buffer only once its batch is committed (or fsynced to the journal), so nothing is lost in
between; on a database error the rows stay, in order, and the writer retries on a fresh pool
(the :class:`Database` owns the pool and the capped exponential backoff; the writer is what keeps
trying while the database is away). Past ``buffer_limit`` rows or ``buffer_bytes`` (an estimate of
the rows' memory: their output and error text plus a fixed cost per row), and at close if the
database is still unreachable, the buffer spills to the journal, which is replayed first when the
database is back — in this process or the next. The spill starts as soon as the bound is passed,
whatever the writer is doing (waiting to reconnect, or stuck in a write): it moves every row but
the batch being written, which leaves when committed. Without a journal, rows are never dropped:
the buffer keeps growing and ``recorder_buffer_full`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import asyncpg
import structlog

from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.storage import store
from scheduler_daemon.storage.database import Database
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.rows import row_size
from scheduler_daemon.storage.store import Conn
from scheduler_daemon.timing.clock import Clock, SystemClock

log = structlog.get_logger("scheduler_daemon.storage.recorder")

# The database refuses a row as data: isolate it so the rest of its batch gets through.
_REJECTED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
# After a spill failed (disk full, ...), new rows wait this long before they start another one
# (the writer still retries at each failed write): one error per few seconds, not one per row.
SPILL_RETRY = 5.0


class Recorder:
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock | None = None,
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        buffer_limit: int = 100_000,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        journal: Journal | None = None,
        events: bool = True,
    ) -> None:
        """``database``'s on-connect hooks run on every new pool before any write (schema, job
        sync, recovery); ``journal`` is where rows go past ``buffer_limit`` rows or
        ``buffer_bytes`` (None: they stay in memory)."""
        self.database = database
        self._clock: Clock = clock or SystemClock()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer_limit = buffer_limit
        self._buffer_bytes = buffer_bytes
        # A batch holds at most a quarter of the byte bound: what a spill leaves (the batch being
        # written) stays well under the bound, and so does one COPY's copy of its rows.
        self._batch_bytes = max(1, buffer_bytes // 4)
        self._journal = journal
        self._events = events
        self._journal_pending = journal is not None and journal.exists()
        self._buffer: deque[ExecutionRecord] = deque()
        self._sizes: deque[int] = deque()  # row_size() of each row of the buffer, in step
        self._bytes = 0  # their sum
        self._appended = 0  # rows ever recorded: a spill finds its rows by what came after them
        self._seqs: deque[int] = deque()  # each row's number (1, 2, ...), in step with the buffer
        # Told each time rows leave the buffer (the start log forgets the starts they cover).
        self.on_durable: Callable[[], None] | None = None
        self._batch = 0  # rows at the buffer's front that the writer is writing now
        self._spiller: asyncio.Task[None] | None = None
        self._spill_again_at = 0.0  # monotonic; see SPILL_RETRY
        # One journal user at a time: a spill appending during a replay would be removed with it.
        self._journal_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._over_limit = False
        # Counters for metrics (see ``stats``).
        self.written = 0  # rows committed (journal replays included)
        self.batches = 0  # committed write transactions
        self.failures = 0  # failed connects or writes
        self.rejected = 0  # rows the database refused as data (logged, not retried)
        self.journaled = 0  # rows spilled to the journal

    # -- the caller's side: never blocks, never raises -------------------------------------------

    def record(self, rec: ExecutionRecord) -> None:
        buffer = self._buffer
        was_empty = not buffer
        buffer.append(rec)
        size = row_size(rec)
        self._sizes.append(size)
        self._bytes += size
        self._appended += 1
        self._seqs.append(self._appended)
        pending = len(buffer)
        if was_empty or pending >= self._batch_size:
            self._wake.set()
        if pending > self._buffer_limit or self._bytes > self._buffer_bytes:
            self._buffer_full()

    def _over(self) -> bool:
        return len(self._buffer) > self._buffer_limit or self._bytes > self._buffer_bytes

    def _buffer_full(self) -> None:
        if not self._over_limit:
            self._over_limit = True  # re-armed once the buffer is back under the limit
            self._wake.set()
            log.warning(
                "recorder_buffer_full",
                pending=len(self._buffer),
                pending_bytes=self._bytes,
                limit=self._buffer_limit,
                limit_bytes=self._buffer_bytes,
                action="spill to journal" if self._journal else "keep in memory",
            )
        spilling = self._spiller is not None and not self._spiller.done()
        if (
            self._journal is not None
            and not spilling
            and not self._closing  # close() spills what is left itself
            and self._clock.monotonic() >= self._spill_again_at
        ):
            self._spiller = asyncio.create_task(self._spill_while_over(), name="recorder-spill")
            self._spiller.add_done_callback(self._task_ended)

    @property
    def pending(self) -> int:
        """Rows in memory, not yet written (rows in the journal are not counted)."""
        return len(self._buffer)

    @property
    def pending_bytes(self) -> int:
        """The estimated memory of those rows (``row_size``)."""
        return self._bytes

    @property
    def appended(self) -> int:
        """Rows handed to ``record`` so far."""
        return self._appended

    @property
    def durable(self) -> int:
        """Rows 1 to this one (in record order) are all committed or journaled. (A spill leaves
        the batch being written at the front: rows do not always leave in order.)"""
        return self._seqs[0] - 1 if self._seqs else self._appended

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The database's pool, or None while disconnected (others may query through it)."""
        return self.database.pool

    @property
    def connected(self) -> bool:
        return self.database.connected

    def stats(self) -> dict[str, int]:
        """Counters for metrics."""
        return {
            "written": self.written,
            "pending": self.pending,
            "pending_bytes": self._bytes,
            "batches": self.batches,
            "failures": self.failures,
            "rejected": self.rejected,
            "journaled": self.journaled,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")
        self._task.add_done_callback(self._task_ended)

    async def close(self, timeout: float) -> int:
        """Flush what can be flushed within ``timeout`` seconds; return the rows left unwritten
        (rows moved to the journal are not: the next start writes them)."""
        self._closing = True
        self._wake.set()
        task = self._task
        try:
            if task is not None and not task.done():
                async with self._clock.timeout(timeout):
                    await asyncio.wait({task})  # never raises the task's error; cancels only us
        except TimeoutError:
            log.error("recorder_close_timeout", pending=len(self._buffer), timeout_s=timeout)
        finally:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._spiller is not None:
            await asyncio.wait({self._spiller})  # bounded by the disk; its rows leave with it
        await self._spill()  # what is still in memory waits in the journal, if there is one
        if self._buffer:
            log.error("recorder_unwritten", pending=len(self._buffer))
        return len(self._buffer)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Never expected (the loop survives every error); said loudly if it happens anyway.
            log.error("recorder_task_died", error=repr(task.exception()))

    # -- the writer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._closing and not self._has_rows():
                return
            if self.database.pool is not None and not self._has_rows():
                await self._wait(None)  # idle: until a row arrives or close()
                continue
            if not self._closing and 0 < len(self._buffer) < self._batch_size:
                await self._wait(self._flush_interval)  # gather a batch
            try:
                await self._write_some()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the writer outlives every failure
                self._on_failure(exc)
                if await self._after_failure():
                    return
                await self.database.pause_before_retry()

    def _has_rows(self) -> bool:
        return bool(self._buffer) or self._journal_pending

    async def _write_some(self) -> None:
        """Connect if needed (even with nothing to write: ``on_connect`` does recovery and job
        sync), then replay the journal (older rows first), then write one batch."""
        pool = await self.database.connect()
        if self._journal_pending:
            await self._replay_journal(pool)
        if self._buffer:
            await self._flush_batch(pool)
        self.database.succeeded(pending=len(self._buffer), failures=self.failures)

    async def _after_failure(self) -> bool:
        """Move rows out of memory if they must; True when the writer can stop (closing)."""
        if self._closing:
            await self._spill()
            # With nothing left in memory, a journal left unreplayed waits for the next start.
            return not self._buffer
        if self._over():
            await self._spill()
        return False

    async def _wait(self, seconds: float | None) -> None:
        """Until ``record``/``close`` wakes us, or ``seconds`` pass."""
        self._wake.clear()
        if self._closing:
            return
        with contextlib.suppress(TimeoutError):
            async with self._clock.timeout(seconds):
                await self._wake.wait()

    async def _flush_batch(self, pool: asyncpg.Pool) -> None:
        if self._spiller is not None and not self._spiller.done():
            await asyncio.wait({self._spiller})  # it is moving rows a batch would take
        batch = self._next_batch()
        if not batch:
            return  # all spilled meanwhile
        self._batch = len(batch)  # a spill from now on leaves these rows alone
        try:
            async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
                written = await self._write(conn, batch)
            for _ in batch:  # only now: rows stay buffered until their batch is committed
                self._buffer.popleft()
                self._bytes -= self._sizes.popleft()
                self._seqs.popleft()
        finally:
            self._batch = 0
        self._rows_left()
        self.written += written
        if self._over_limit and not self._over():
            self._over_limit = False

    def _next_batch(self) -> list[ExecutionRecord]:
        """The oldest rows: at most ``batch_size`` of them, and ``_batch_bytes`` (one row at
        least) when they are large."""
        if self._bytes <= self._batch_bytes:  # the common case: no row needs sizing
            return list(islice(self._buffer, self._batch_size))
        count = size = 0
        for row_bytes in islice(self._sizes, self._batch_size):
            size += row_bytes
            if count and size > self._batch_bytes:
                break
            count += 1
        return list(islice(self._buffer, count))

    async def _write(self, conn: Conn, batch: Sequence[ExecutionRecord]) -> int:
        """Write a batch; if the database refuses it as data, row by row, skipping the bad ones.
        Returns how many rows were handled (an ignored replay counts as handled)."""
        try:
            await store.write_executions(conn, batch, events=self._events)
        except _REJECTED as exc:
            log.error("recorder_batch_rejected", rows=len(batch), error=type(exc).__name__)
            return sum([await self._write_one(conn, rec) for rec in batch])
        self.batches += 1
        return len(batch)

    async def _write_one(self, conn: Conn, rec: ExecutionRecord) -> int:
        try:
            await store.write_executions(conn, [rec], events=self._events)
        except _REJECTED as exc:
            if rec.result is not None or rec.items:
                return await self._write_one(conn, without_result(rec, exc))
            self.rejected += 1
            # Identify the row, never dump it: its output or error may hold anything.
            log.error(
                "recorder_row_rejected",
                job=rec.job_name,
                fire_id=str(rec.fire_id),
                attempt=rec.attempt,
                status=str(rec.status),
                error=f"{type(exc).__name__}: {exc}",
            )
            return 0
        return 1

    # -- the journal -----------------------------------------------------------------------------

    async def _spill_while_over(self) -> None:
        """Spill until under the bounds (rows recorded during a spill may pass them again)."""
        while await self._spill() and self._over():
            pass

    async def _spill(self) -> int:
        """Move the buffer to the journal (oldest first), but for the batch the writer is writing
        (it may be committing now: it leaves when written); without a journal, keep it. Returns
        how many rows moved."""
        journal = self._journal
        if journal is None:
            return 0
        async with self._journal_lock:
            rows = list(islice(self._buffer, self._batch, None))
            if not rows:
                return 0
            recorded = self._appended
            try:
                await _append(journal, rows)
            except OSError as exc:
                self._spill_again_at = self._clock.monotonic() + SPILL_RETRY
                log.error("journal_write_failed", path=str(journal.path), error=str(exc))
                return 0
            self._drop_spilled(len(rows), newer=self._appended - recorded)
            self._journal_pending = True
        if not self._over():
            self._over_limit = False
        self.journaled += len(rows)
        log.warning(
            "recorder_spilled_to_journal",
            rows=len(rows),
            bytes=sum(map(row_size, rows)),  # (once per spill: off the fire path)
            path=str(journal.path),
        )
        return len(rows)

    def _drop_spilled(self, count: int, *, newer: int) -> None:
        """Take out the ``count`` rows just journaled: they lie right before the ``newer`` rows
        recorded since (the writer takes rows from the front only: its batch, before them)."""
        buffer, sizes, seqs = self._buffer, self._sizes, self._seqs
        kept = [(buffer.pop(), sizes.pop(), seqs.pop()) for _ in range(newer)]
        for _ in range(count):
            buffer.pop()
            self._bytes -= sizes.pop()
            seqs.pop()
        for rec, size, seq in reversed(kept):
            buffer.append(rec)
            sizes.append(size)
            seqs.append(seq)
        self._rows_left()

    def _rows_left(self) -> None:
        if self.on_durable is not None:
            self.on_durable()

    async def replay_journal(self, pool: asyncpg.Pool) -> None:
        """Replay a pending journal now (``on_connect`` does, before recovery reads the table)."""
        if self._journal_pending:
            await self._replay_journal(pool)

    async def _replay_journal(self, pool: asyncpg.Pool) -> None:
        """Write the journal's valid rows (older than the buffer's), then remove it; its bad lines
        are in the quarantine file by then. Idempotent: a replay cut short and done again writes
        nothing twice."""
        async with self._journal_lock:
            await self._replay_locked(pool)

    async def _replay_locked(self, pool: asyncpg.Pool) -> None:
        assert self._journal is not None
        batches: Iterator[list[ExecutionRecord]] = self._journal.read(self._batch_size)
        replayed = 0
        async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
            # Batch by batch: a journal from a long outage may not fit in memory at once.
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                replayed += await self._write(conn, batch)
        journal = self._journal
        if journal.quarantined:
            log.error(
                "journal_lines_quarantined",
                lines=journal.quarantined,
                path=str(journal.quarantine_path),
                journal=str(journal.path),
                kept_in_journal=journal.quarantine_failed,
                examples=journal.examples,
            )
        if not journal.quarantine_failed:  # else its bad lines are nowhere else: keep it
            await asyncio.to_thread(journal.remove)
        # Its valid rows are committed either way: a journal kept for its bad lines is replayed
        # again (harmlessly) at the next start or spill, never in a loop now.
        self._journal_pending = False
        self.written += replayed
        log.info("journal_replayed", rows=replayed, path=str(journal.path))

    def _on_failure(self, exc: BaseException) -> None:
        self.failures += 1
        self.database.failed(exc, pending=len(self._buffer))


def without_result(rec: ExecutionRecord, exc: Exception) -> ExecutionRecord:
    """The attempt's row without the result and items PostgreSQL refused (a JSON string with
    \\u0000 in it, say): the attempt itself is never lost for what it returned."""
    refused = f"result not kept: PostgreSQL refused it ({type(exc).__name__}: {exc})"
    log.error("recorder_result_rejected", job=rec.job_name, fire_id=str(rec.fire_id),
              attempt=rec.attempt, error=refused)  # fmt: skip
    error = f"{rec.error}; {refused}" if rec.error else refused
    return dataclasses.replace(rec, result=None, items=None, error=error)


async def _append(journal: Journal, rows: Sequence[ExecutionRecord]) -> None:
    """Append and fsync in a worker thread. Cancelled (close's timeout), it still waits for the
    thread: a second append meanwhile would interleave its lines with this one's."""
    append = asyncio.ensure_future(asyncio.to_thread(journal.append, rows))
    try:
        await asyncio.shield(append)
    except asyncio.CancelledError:
        await asyncio.wait({append})
        raise
