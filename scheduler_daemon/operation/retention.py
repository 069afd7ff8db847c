"""Retention: history older than `retention` is removed, a round every `retention.every`.

A round takes each kind whose age is not 0 in turn (whole executions, then results, then items),
a batch at a time (storage/retention.py), resting after each batch as long as it took: the
recorder's writes, which a batch never blocks, get at least half of the database's time
(README: Performance, retention: the rest cut the writes' slowdown during a round from ~85 % to
~25 % at the median, for a round ~20 % longer). It runs on a connection of its own (the pool
stays the recorder's and the API's) holding the pruning lock: in cluster mode the replicas
share one database, and only one of them prunes at a time (the others skip the round). A round
that fails (the database went away) is logged and tried again at the next one; a round is never
started while the database is away.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import asyncpg
import structlog

from scheduler_daemon.errors import DatabaseUnavailable
from scheduler_daemon.specs.results import RetentionSpec
from scheduler_daemon.storage import retention, store
from scheduler_daemon.storage.retention import KINDS, Totals
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.retention")

FIRST_AFTER = 30.0  # the first round, after start: recovery and the catch-up write first
RETRY_AFTER = 10.0  # the database was away: look again this soon
BATCH = 5000  # rows per statement (README: Performance, retention)
PAUSE = 0.02  # at least, between two batches: the recorder's COPY runs meanwhile
REST = 1.0  # and at least this times the batch's own time (the database's share it may take)
PROGRESS_EVERY = 10.0  # seconds between two `history_pruning` lines of a long round
_OLDEST = datetime(1970, 1, 1, tzinfo=UTC)

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


class Pruner:
    """The pruning loop (``run``) and its totals (the metrics)."""

    def __init__(
        self,
        *,
        clock: Clock,
        connect: Connect,
        ready: Callable[[], bool],
        settings: Callable[[], RetentionSpec],
        batch: int = BATCH,
        pause: float = PAUSE,
        rest: float = REST,
    ) -> None:
        """``connect``: a connection of its own (Database.connection); ``ready``: connected, and
        the start's recovery done; ``settings``: the config's `retention`, now (a reload
        changes it)."""
        self._clock = clock
        self._connect = connect
        self._ready = ready
        self._settings = settings
        self._batch = batch
        self._pause = pause
        self._rest = rest
        self._rows = collections.Counter[str]()
        self._bytes = collections.Counter[str]()
        self._last_at: float | None = None
        self._last_seconds: float | None = None
        self.kind_seconds: dict[str, float] = {}  # the last round's time on each kind

    def totals(self) -> Totals:
        return Totals(dict(self._rows), dict(self._bytes), self._last_at, self._last_seconds)

    async def run(self) -> None:
        """A round soon after start, then one every `retention.every` (runs until cancelled)."""
        wait = FIRST_AFTER
        while True:
            await self._clock.sleep(wait)
            if not self._ready():
                wait = RETRY_AFTER
                continue
            wait = self._settings().every
            try:
                await self.prune()
            except (*store.DB_ERRORS, DatabaseUnavailable) as exc:
                log.warning("history_prune_failed", error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug must not stop the daemon: the next round retries
                log.error("history_prune_failed", error=repr(exc), exc_info=True)

    async def prune(self) -> dict[str, tuple[int, int]] | None:
        """One round: (rows, bytes) removed by kind; None if another replica holds the lock."""
        settings = self._settings()
        kinds = {kind: age for kind in KINDS if (age := getattr(settings, kind)) > 0}
        if not kinds:
            return {}
        async with self._connect() as conn:
            if not await retention.try_lock(conn):
                log.info("history_prune_skipped", reason="another replica is pruning")
                return None
            try:
                return await self._round(conn, kinds)
            finally:
                with contextlib.suppress(*store.DB_ERRORS):  # a lost session drops it anyway
                    await retention.unlock(conn)

    async def _round(
        self, conn: asyncpg.Connection, kinds: dict[str, float]
    ) -> dict[str, tuple[int, int]]:
        began = time.monotonic()  # real time: what the round cost, whatever the clock says
        now = self._clock.time()
        removed = {kind: (0, 0) for kind in kinds}
        batches = 0
        progress_at = began + PROGRESS_EVERY
        for kind, age in kinds.items():
            before = datetime.fromtimestamp(now - age, UTC)
            after = _OLDEST
            kind_began = time.monotonic()
            while True:
                batch_began = time.monotonic()
                batch = await retention.prune_batch(
                    conn, kind, after=after, before=before, limit=self._batch
                )
                batches += 1
                rows, size = removed[kind]
                removed[kind] = (rows + batch.rows, size + batch.bytes)
                self._rows[kind] += batch.rows
                self._bytes[kind] += batch.bytes
                if batch.rows < self._batch:
                    break
                if kind in retention.IN_AGE_ORDER and batch.last is not None:
                    after = batch.last
                if time.monotonic() >= progress_at:
                    progress_at = time.monotonic() + PROGRESS_EVERY
                    log.info("history_pruning", kind=kind, batches=batches, **_fields(removed))
                took = time.monotonic() - batch_began
                await self._clock.sleep(max(self._pause, took * self._rest))
            self.kind_seconds[kind] = time.monotonic() - kind_began
        self._last_at = self._clock.time()
        self._last_seconds = time.monotonic() - began
        log.info(
            "history_pruned",
            duration_s=round(self._last_seconds, 3),
            batches=batches,
            **_fields(removed),
        )
        return removed


def _fields(removed: dict[str, tuple[int, int]]) -> dict[str, int]:
    """``executions_rows``, ``executions_bytes``, ``results_rows`` ... for the log."""
    fields: dict[str, int] = {}
    for kind, (rows, size) in removed.items():
        fields[f"{kind}_rows"] = rows
        fields[f"{kind}_bytes"] = size
    return fields
