"""Timeouts sharing one loop timer (timing/deadlines.py): asyncio.timeout's behaviour, cheaper.

These use the real clock with deadlines of a few milliseconds: what is tested is how blocks and
the shared timer interact on a real event loop (asyncio's and uvloop's), which a fake clock
cannot stand in for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from scheduler_daemon.timing.clock import SystemClock
from scheduler_daemon.timing.deadlines import queues_of_running_loop

clock = SystemClock()
SHORT = 0.02


async def test_a_block_that_outlives_its_deadline_raises_timeout_and_leaves_no_cancel() -> None:
    with pytest.raises(TimeoutError):
        async with clock.timeout(SHORT):
            await asyncio.sleep(10)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # the task goes on: nothing left pending for it


async def test_a_block_that_ends_in_time_is_never_cancelled_later() -> None:
    async with clock.timeout(SHORT):
        await asyncio.sleep(0)
    await asyncio.sleep(SHORT * 3)  # past the deadline: no stray cancel arrives
    assert queues_of_running_loop().blocks() == 0


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    started = asyncio.Event()

    async def guarded() -> None:
        async with clock.timeout(10):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(guarded())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_outside_after_the_deadline_fired_stays_a_cancel() -> None:
    async def guarded() -> None:
        async with clock.timeout(SHORT):
            try:
                await asyncio.sleep(10)
            finally:
                asyncio.current_task().cancel()  # type: ignore[union-attr]  # a second request
                await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(guarded())


async def test_blocks_of_different_lengths_expire_in_deadline_order() -> None:
    expired: list[float] = []

    async def guarded(seconds: float) -> None:
        try:
            async with clock.timeout(seconds):
                await asyncio.sleep(10)
        except TimeoutError:
            expired.append(seconds)

    lengths = [0.06, 0.02, 0.04, 0.02, 0.06]
    await asyncio.gather(*(guarded(s) for s in lengths))
    assert expired == sorted(lengths)


async def test_nested_blocks_each_raise_at_their_own_deadline() -> None:
    with pytest.raises(TimeoutError):
        async with clock.timeout(10):
            async with clock.timeout(SHORT):
                await asyncio.sleep(10)
            pytest.fail("the inner block should have raised")
    outer_fired = False
    try:
        async with clock.timeout(SHORT):
            try:
                async with clock.timeout(10):
                    await asyncio.sleep(10)
            except TimeoutError:
                pytest.fail("the inner block's deadline had not come")
    except TimeoutError:
        outer_fired = True
    assert outer_fired


async def test_ended_blocks_do_not_pile_up_behind_a_long_one() -> None:
    async def quick() -> None:
        async with clock.timeout(3600):
            await asyncio.sleep(0)

    holder = asyncio.Event()

    async def long() -> None:
        async with clock.timeout(3600):
            await holder.wait()

    waiting = asyncio.create_task(long())
    await asyncio.sleep(0)
    await asyncio.gather(*(quick() for _ in range(10_000)))  # end behind the long one
    assert queues_of_running_loop().blocks() < 200  # compacted, not 10,001
    holder.set()
    await waiting
    assert queues_of_running_loop().blocks() == 0


def _on_uvloop(test: Callable[[], Awaitable[None]]) -> None:
    async def run() -> None:
        await test()

    uvloop.run(run())


def test_the_same_on_uvloop() -> None:
    for test in (
        test_a_block_that_outlives_its_deadline_raises_timeout_and_leaves_no_cancel,
        test_a_block_that_ends_in_time_is_never_cancelled_later,
        test_blocks_of_different_lengths_expire_in_deadline_order,
        test_ended_blocks_do_not_pile_up_behind_a_long_one,
    ):
        _on_uvloop(test)
