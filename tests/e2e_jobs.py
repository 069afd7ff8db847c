"""Python job targets for the end-to-end tests (imported by the daemon under test)."""

from __future__ import annotations

import asyncio


async def greet(name: str, times: int = 1) -> str:
    await asyncio.sleep(0)
    return " ".join([f"hello {name}"] * times)


def explode(reason: str) -> None:
    raise ValueError(reason)
