"""Test doubles that stand in for time: a fake clock driven by the test."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from scheduler_daemon.config import JobSpec


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False


class FakeClock:
    """A clock whose time only moves when the test says so.

    ``sleep`` parks the caller until ``advance`` moves monotonic time past its deadline; a
    ``timeout`` block is cancelled the same way. Wall time moves with monotonic time, and can also
    be stepped alone with ``jump`` (an NTP or manual clock change).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._wall = start
        self._mono = 1000.0
        self._due: list[tuple[float, int, asyncio.Future[None] | _Timer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self._mono + seconds, next(self._seq), fut))
        await fut

    @asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[object]:
        if seconds is None:
            yield None
            return
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = _Timer(expire)
        heapq.heappush(self._due, (self._mono + seconds, next(self._seq), timer))
        try:
            yield None
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            timer.cancelled = True

    def jump(self, seconds: float) -> None:
        """Step the wall clock alone (monotonic time does not move)."""
        self._wall += seconds

    async def settle(self) -> None:
        """Let every task that can run, run (several loop turns: tasks wake tasks)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its own deadline in order."""
        target = self._mono + seconds
        await self.settle()
        while self._due and self._due[0][0] <= target:
            deadline, _, waiter = heapq.heappop(self._due)
            if _done(waiter):
                continue
            self._wall += deadline - self._mono
            self._mono = deadline
            if isinstance(waiter, _Timer):
                waiter.cancelled = True
                waiter.callback()
            else:
                waiter.set_result(None)
            await self.settle()
        self._wall += target - self._mono
        self._mono = target
        await self.settle()

    @property
    def pending_sleepers(self) -> int:
        return sum(1 for _, _, w in self._due if not _done(w))


def _done(waiter: asyncio.Future[None] | _Timer) -> bool:
    return waiter.cancelled if isinstance(waiter, _Timer) else waiter.done()


def make_job(name: str = "job", **fields: object) -> JobSpec:
    """A JobSpec with a harmless default action and schedule; override any field."""
    from scheduler_daemon.config import CommandAction, JobSpec

    fields.setdefault("action", CommandAction(argv=("true",)))
    if not any(k in fields for k in ("cron", "every", "at")):
        fields["every"] = 1.0
    return JobSpec(name=name, **fields)  # type: ignore[arg-type]


@asynccontextmanager
async def serve_locally(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 on a free port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
