"""Every attempt's record → PostgreSQL, in batches, off the dispatch path, through outages.

``record`` only appends to an in-memory buffer. A background task writes the buffer in batches
(COPY); if the database is down or slow, rows stay buffered in order and are written when it comes
back. A row leaves the buffer only once its batch is committed (or fsynced to the journal), so
nothing is lost in between. Past ``buffer_limit`` rows during an outage, and at close if the
database is still unreachable, the buffer spills to the journal, which is replayed first when the
database is back — in this process or the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice

import asyncpg
import structlog

from scheduler_daemon import store
from scheduler_daemon.clock import Clock, SystemClock
from scheduler_daemon.journal import Journal
from scheduler_daemon.records import ExecutionRecord

log = structlog.get_logger("scheduler_daemon.recorder")

OnConnect = Callable[[asyncpg.Pool], Awaitable[None]]
_DB_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_MAX_BACKOFF = 5.0


class Recorder:
    def __init__(
        self,
        *,
        dsn: str,
        clock: Clock | None = None,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        buffer_limit: int = 100_000,
        on_connect: OnConnect | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.dsn = dsn
        self._clock = clock or SystemClock()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer_limit = buffer_limit
        self._on_connect = on_connect
        self._journal = journal
        self._journal_pending = journal is not None and journal.exists()
        self.journaled = 0
        self._buffer: deque[ExecutionRecord] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._pool: asyncpg.Pool | None = None
        self._outage = False
        self._over_limit = False
        self.written = 0
        self.failures = 0

    # -- the caller's side: never blocks, never raises -------------------------------------------

    def record(self, rec: ExecutionRecord) -> None:
        self._buffer.append(rec)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()
        if len(self._buffer) > self._buffer_limit and not self._over_limit:
            self._over_limit = True  # the writer spills to the journal (or, without one, keeps all)
            self._wake.set()
            log.warning("recorder_buffer_full", pending=len(self._buffer), limit=self._buffer_limit)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def pool(self) -> asyncpg.Pool | None:
        return self._pool

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")

    async def close(self, timeout: float) -> int:
        """Flush what can be flushed within ``timeout`` seconds; return the rows left unwritten."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.error("recorder_close_timeout", pending=len(self._buffer))
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)
            self._pool = None
        if self._buffer:
            log.error("recorder_unwritten", pending=len(self._buffer))
        return len(self._buffer)

    # -- the writer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        with contextlib.suppress(*_DB_DOWN):
            await self._ensure_pool()  # connect early (schema, job sync); failures retry below
        backoff = 0.1
        while True:
            if not self._buffer and not self._journal_pending and self._closing:
                return
            idle = not self._buffer and not self._journal_pending
            if idle or (len(self._buffer) < self._batch_size and not self._closing):
                await self._wait(self._flush_interval)
            if not self._buffer and not self._journal_pending:
                continue
            try:
                if self._journal_pending:
                    await self._replay_journal()
                if self._buffer:
                    await self._flush_batch()
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                await self._flush_one_by_one(exc)
            except _DB_DOWN as exc:
                self._on_failure(exc)
                if self._closing:
                    await self._spill()  # what cannot be written now waits in the journal
                    if not self._buffer:
                        return  # a journal left unreplayed is replayed at the next start
                elif len(self._buffer) > self._buffer_limit:
                    await self._spill()
                await self._wait(backoff, wakeable=False)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            backoff = 0.1

    async def _spill(self) -> bool:
        """Move the whole buffer to the journal (oldest first); False without a journal."""
        if self._journal is None or not self._buffer:
            return False
        rows = list(self._buffer)
        try:
            await asyncio.to_thread(self._journal.append, rows)
        except OSError as exc:
            log.error("journal_write_failed", path=str(self._journal.path), error=str(exc))
            return False
        for _ in rows:
            self._buffer.popleft()
        self._journal_pending = True
        self._over_limit = False
        self.journaled += len(rows)
        log.warning("recorder_spilled_to_journal", rows=len(rows), path=str(self._journal.path))
        return True

    async def _replay_journal(self) -> None:
        """Write the journal's rows (older than the buffer's), then remove it."""
        assert self._journal is not None
        pool = await self._ensure_pool()
        batches = self._journal.read(self._batch_size)
        replayed = 0
        async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
            # Batch by batch: a journal from a long outage may not fit in memory at once.
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await store.write_executions(conn, batch)
                replayed += len(batch)
        await asyncio.to_thread(self._journal.remove)
        self._journal_pending = False
        self.written += replayed
        log.info("journal_replayed", rows=replayed, path=str(self._journal.path))

    async def _wait(self, seconds: float, *, wakeable: bool = True) -> None:
        if not wakeable:
            await self._clock.sleep(seconds)
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _flush_batch(self) -> None:
        pool = await self._ensure_pool()
        batch = list(islice(self._buffer, self._batch_size))
        async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
            await store.write_executions(conn, batch)
        for _ in batch:  # only now: rows stay buffered until their batch is committed
            self._buffer.popleft()
        self.written += len(batch)
        if self._over_limit and len(self._buffer) <= self._buffer_limit:
            self._over_limit = False
        if self._outage:
            self._outage = False
            log.info("recorder_db_recovered", pending=len(self._buffer))

    async def _flush_one_by_one(self, exc: BaseException) -> None:
        """A batch the database rejects as data: isolate the bad rows so the rest get through."""
        log.error("recorder_batch_rejected", error=f"{type(exc).__name__}: {exc}")
        pool = await self._ensure_pool()
        batch = list(islice(self._buffer, self._batch_size))
        async with pool.acquire(timeout=store.COMMAND_TIMEOUT) as conn:
            for rec in batch:
                try:
                    await store.write_executions(conn, [rec])
                    self.written += 1
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as row_exc:
                    log.error("recorder_row_rejected", record=repr(rec), error=str(row_exc))
                self._buffer.popleft()

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await store.connect(self.dsn)
            try:
                if self._on_connect is not None:
                    await self._on_connect(pool)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self._pool

    def _on_failure(self, exc: BaseException) -> None:
        self.failures += 1
        if not self._outage:
            self._outage = True
            log.warning(
                "recorder_db_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                pending=len(self._buffer),
            )
        if self._pool is not None:
            self._pool.terminate()  # start afresh on the next try: connections may be dead
            self._pool = None
