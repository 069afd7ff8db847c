"""Every attempt's record → PostgreSQL, in batches, off the dispatch path, through outages.

``record`` only appends to an in-memory buffer and wakes the writer task. The writer waits up to
``flush_interval`` (or until a batch is full), then writes a batch with COPY. A row leaves the
buffer only once its batch is committed (or fsynced to the journal), so nothing is lost in
between; on a database error the rows stay, in order, and the writer retries on a fresh pool
(the :class:`Database` owns the pool and the capped exponential backoff; the writer is what keeps
trying while the database is away). Past ``buffer_limit`` rows during an outage, and at close if
the database is still unreachable, the buffer spills to the journal, which is replayed first when
the database is back — in this process or the next. Without a journal, rows are never dropped:
the buffer keeps growing and ``recorder_buffer_full`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import asyncpg
import structlog

from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.storage import store
from scheduler_daemon.storage.database import Database
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.store import Conn
from scheduler_daemon.timing.clock import Clock, SystemClock

log = structlog.get_logger("scheduler_daemon.storage.recorder")

# The database refuses a row as data: isolate it so the rest of its batch gets through.
_REJECTED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class Recorder:
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock | None = None,
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        buffer_limit: int = 100_000,
        journal: Journal | None = None,
        events: bool = True,
    ) -> None:
        """``database``'s on-connect hooks run on every new pool before any write (schema, job
        sync, recovery); ``journal`` is where rows go when the database stays away (None: they
        stay in memory)."""
        self.database = database
        self._clock: Clock = clock or SystemClock()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer_limit = buffer_limit
        self._journal = journal
        self._events = events
        self._journal_pending = journal is not None and journal.exists()
        self._buffer: deque[ExecutionRecord] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._over_limit = False
        self._left = 0  # rows that left the buffer: committed (or refused) or journaled
        # Told each time rows leave the buffer (the start log forgets the starts they cover).
        self.on_durable: Callable[[], None] | None = None
        # Counters for metrics (see ``stats``).
        self.written = 0  # rows committed (journal replays included)
        self.batches = 0  # committed write transactions
        self.failures = 0  # failed connects or writes
        self.rejected = 0  # rows the database refused as data (logged, not retried)
        self.journaled = 0  # rows spilled to the journal

    # -- the caller's side: never blocks, never raises -------------------------------------------

    def record(self, rec: ExecutionRecord) -> None:
        was_empty = not self._buffer
        self._buffer.append(rec)
        if was_empty or len(self._buffer) >= self._batch_size:
            self._wake.set()
        if len(self._buffer) > self._buffer_limit and not self._over_limit:
            self._over_limit = True  # re-armed once the buffer is back under the limit
            self._wake.set()
            log.warning(
                "recorder_buffer_full",
                pending=len(self._buffer),
                limit=self._buffer_limit,
                action="spill to journal" if self._journal else "keep in memory",
            )

    @property
    def pending(self) -> int:
        """Rows in memory, not yet written (rows in the journal are not counted)."""
        return len(self._buffer)

    @property
    def appended(self) -> int:
        """Rows handed to ``record`` so far."""
        return self._left + len(self._buffer)

    @property
    def durable(self) -> int:
        """How many of the first ``appended`` rows are committed or journaled: rows leave the
        buffer in the order they came, so these are always the oldest."""
        return self._left

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
        if len(self._buffer) > self._buffer_limit:
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
        batch = list(islice(self._buffer, self._batch_size))
        async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
            written = await self._write(conn, batch)
        for _ in batch:  # only now: rows stay buffered until their batch is committed
            self._buffer.popleft()
        self._rows_left(len(batch))
        self.written += written
        if self._over_limit and len(self._buffer) <= self._buffer_limit:
            self._over_limit = False

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

    async def _spill(self) -> None:
        """Move the whole buffer to the journal (oldest first); without one, keep it."""
        if self._journal is None or not self._buffer:
            return
        rows = list(self._buffer)
        try:
            await asyncio.to_thread(self._journal.append, rows)
        except OSError as exc:
            log.error("journal_write_failed", path=str(self._journal.path), error=str(exc))
            return
        for _ in rows:
            self._buffer.popleft()
        self._rows_left(len(rows))
        self._journal_pending = True
        self._over_limit = False
        self.journaled += len(rows)
        log.warning("recorder_spilled_to_journal", rows=len(rows), path=str(self._journal.path))

    async def replay_journal(self, pool: asyncpg.Pool) -> None:
        """Replay a pending journal now (``on_connect`` does, before recovery reads the table)."""
        if self._journal_pending:
            await self._replay_journal(pool)

    async def _replay_journal(self, pool: asyncpg.Pool) -> None:
        """Write the journal's valid rows (older than the buffer's), then remove it; its bad lines
        are in the quarantine file by then. Idempotent: a replay cut short and done again writes
        nothing twice."""
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

    def _rows_left(self, count: int) -> None:
        self._left += count
        if self.on_durable is not None:
            self.on_durable()

    def _on_failure(self, exc: BaseException) -> None:
        self.failures += 1
        self.database.failed(exc, pending=len(self._buffer))
