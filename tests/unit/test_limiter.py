import asyncio

import pytest

from scheduler_daemon.running.limiter import Limiter


async def _take(limiter: Limiter, priority: str, order: list[str], label: str) -> None:
    await limiter.acquire(priority)  # type: ignore[arg-type]
    order.append(label)


async def test_capacity_is_never_exceeded() -> None:
    limiter = Limiter(2)
    await limiter.acquire()
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert limiter.in_use == 2 and limiter.waiting() == 1
    limiter.release()
    await waiter
    assert limiter.in_use == 2 and limiter.waiting() == 0


async def test_admits_by_priority_then_fifo() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    order: list[str] = []
    tasks = [
        asyncio.create_task(_take(limiter, prio, order, label))
        for prio, label in [
            ("low", "low1"),
            ("normal", "n1"),
            ("high", "h1"),
            ("normal", "n2"),
            ("high", "h2"),
            ("low", "low2"),
        ]
    ]
    await asyncio.sleep(0)
    assert limiter.waiting("high") == 2 and limiter.waiting("low") == 2
    for _ in tasks:
        limiter.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["h1", "h2", "n1", "n2", "low1", "low2"]


async def test_cancelled_waiter_does_not_hold_a_slot() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    cancelled = asyncio.create_task(limiter.acquire("high"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    limiter.release()
    assert limiter.in_use == 0
    await asyncio.wait_for(limiter.acquire("low"), 1)
    assert limiter.in_use == 1


async def test_resize_up_admits_waiters_and_down_waits_for_releases() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    limiter.resize(3)
    await asyncio.gather(*waiters)
    assert limiter.in_use == 3
    limiter.resize(1)
    late = asyncio.create_task(limiter.acquire())
    limiter.release()
    limiter.release()
    await asyncio.sleep(0)
    assert not late.done()  # 1 still in use: capacity 1 is full
    limiter.release()
    await late
    assert limiter.in_use == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Limiter(0)
