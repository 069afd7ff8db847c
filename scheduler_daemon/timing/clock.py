"""Time as the scheduler sees it: wall time, monotonic time and sleeping.

Only the scheduler loop and the runner read the clock; scheduling maths takes time as an argument.
Tests inject :class:`FakeClock` (tests/fakes.py) so that time-dependent behaviour runs instantly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from scheduler_daemon.timing.deadlines import Deadline


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock time, seconds since the epoch (UTC)."""

    def monotonic(self) -> float:
        """Monotonic seconds, for measuring elapsed time and detecting wall-clock jumps."""

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of monotonic time; cancellable."""

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """Like ``asyncio.timeout``: cancel the block after ``seconds``, raising TimeoutError."""


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        # One loop timer shared by every block rather than one each (deadlines.py).
        return contextlib.nullcontext() if seconds is None else Deadline(seconds)
