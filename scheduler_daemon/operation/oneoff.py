"""One-off runs requested through the admin API: each waits for its instant, then starts once.

The runs live in PostgreSQL (`runs`), so a restart reloads the pending ones; a run is claimed in
the database just before it starts, so a run cancelled meanwhile, or started by an earlier
process, does not start again.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable

import structlog

from scheduler_daemon.storage.queries import OneOffRun
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.oneoff")

# Waits are re-checked against the wall clock at least this often (clock steps, suspend).
MAX_WAIT = 60.0

Start = Callable[[OneOffRun], Awaitable[None]]


class OneOffRuns:
    def __init__(self, *, clock: Clock, start: Start) -> None:
        self._clock = clock
        self._start = start
        self._waiting: dict[uuid.UUID, asyncio.Task[None]] = {}

    def schedule(self, runs: Iterable[OneOffRun]) -> None:
        for run in runs:
            if run.id not in self._waiting:
                task = asyncio.create_task(self._wait_then_start(run), name=f"run:{run.id}")
                self._waiting[run.id] = task
                task.add_done_callback(functools.partial(self._done, run.id))

    def _done(self, run_id: uuid.UUID, _: asyncio.Task[None]) -> None:
        self._waiting.pop(run_id, None)

    def cancel(self, run_id: uuid.UUID) -> None:
        task = self._waiting.pop(run_id, None)
        if task is not None:
            task.cancel()

    def pending(self) -> int:
        return len(self._waiting)

    async def close(self) -> None:
        tasks = list(self._waiting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_then_start(self, run: OneOffRun) -> None:
        due = run.run_at.timestamp()
        while (delay := due - self._clock.time()) > 0:
            await self._clock.sleep(min(delay, MAX_WAIT))
        try:
            await self._start(run)
        except Exception:
            log.exception("oneoff_run_failed_to_start", run_id=str(run.id), job=run.job_name)
