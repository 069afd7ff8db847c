"""Global concurrency slots, admitted in priority order (FIFO within a priority)."""

from __future__ import annotations

import asyncio
from collections import deque

from scheduler_daemon.specs import Priority

PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


class Limiter:
    """At most ``capacity`` attempts run at once; waiters are admitted high → normal → low.

    ``acquire`` is a fast path when a slot is free (no future, no task switch). The capacity can
    change at run time (reload): shrinking lets running attempts finish and admits nobody until
    the count falls below the new capacity.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._in_use = 0
        self._waiters: dict[Priority, deque[asyncio.Future[None]]] = {
            p: deque() for p in PRIORITIES
        }
        self._queued = 0  # futures in the queues, cancelled ones included

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    def waiting(self, priority: Priority | None = None) -> int:
        if priority is not None:
            return sum(1 for f in self._waiters[priority] if not f.done())
        return sum(self.waiting(p) for p in PRIORITIES)

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._admit()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for one (then ``acquire`` would not
        wait either); whether it did."""
        if self._in_use < self._capacity and not self._queued:
            self._in_use += 1
            return True
        return False

    async def acquire(self, priority: Priority = "normal") -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[priority].append(fut)
        self._queued += 1
        self._admit()  # a free slot may be held up only by waiters that were cancelled
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._admit()

    def _admit(self) -> None:
        for priority in PRIORITIES:
            queue = self._waiters[priority]
            while queue and self._in_use < self._capacity:
                fut = queue.popleft()
                self._queued -= 1
                if fut.done():  # cancelled while waiting
                    continue
                self._in_use += 1
                fut.set_result(None)
