"""Python job targets for the end-to-end tests (imported by the daemon under test)."""

from __future__ import annotations

import asyncio


async def greet(name: str, times: int = 1) -> str:
    await asyncio.sleep(0)
    return " ".join([f"hello {name}"] * times)


def explode(reason: str) -> None:
    raise ValueError(reason)


def mark(path: str) -> None:
    """Append a line to ``path``: lets a test count how many times a job really ran."""
    with open(path, "a") as f:
        f.write("ran\n")
