"""Python job targets for the end-to-end tests (imported by the daemon under test)."""

from __future__ import annotations

import asyncio
import threading
import time

# Gates a test opens: a greet with ``hold=KEY`` runs until the test sets HELD[KEY] (in-process
# daemons only), so "still running" is a fact, not a race.
HELD: dict[str, asyncio.Event] = {}


async def greet(name: str, times: int = 1, hold: str | None = None) -> str:
    await asyncio.sleep(0)
    if hold is not None:
        await HELD.setdefault(hold, asyncio.Event()).wait()
    return " ".join([f"hello {name}"] * times)


# How many `block` calls wait on each event (by id): lets a test see them all parked.
BLOCKED: dict[int, int] = {}
_BLOCKED_LOCK = threading.Lock()


def block(until: threading.Event) -> None:
    """A plain function that hangs until the test sets ``until`` (in-process only)."""
    with _BLOCKED_LOCK:
        BLOCKED[id(until)] = BLOCKED.get(id(until), 0) + 1
    until.wait()


def explode(reason: str) -> None:
    raise ValueError(reason)


async def add(n: int, to: int = 1) -> int:
    """Given a string ``n``, the body raises a TypeError of its own (a job's bug: retried)."""
    await asyncio.sleep(0)
    return n + to


def hang(path: str, seconds: float = 600) -> None:
    """A plain function that hangs: writes ``path`` once it runs (for a test to wait on)."""
    with open(path, "a") as f:
        f.write("started\n")
    time.sleep(seconds)


def mark(path: str) -> None:
    """Append a line to ``path``: lets a test count how many times a job really ran."""
    with open(path, "a") as f:
        f.write("ran\n")


def summarise(result: dict[str, list[dict[str, str]]], currency: str = "USD") -> dict[str, object]:
    """A chained job's transform step: the parent's prices → a summary (its own result)."""
    prices = {row["symbol"]: float(row["price"]) for row in result["data"]}
    return {"currency": currency, "coins": len(prices), "top": max(prices, key=prices.__getitem__)}
