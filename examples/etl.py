"""Example Python jobs for examples/nightly_etl.yaml. `args` arrive as keyword arguments."""

from __future__ import annotations

import asyncio


async def run(source: str, levels: list[int], dry_run: bool = False) -> dict[str, object]:
    """A coroutine job: awaited on the daemon's loop. The return value is kept in `output`."""
    await asyncio.sleep(0.1)  # stand-in for extract / transform / load
    return {"source": source, "levels": levels, "rows": 1000 * len(levels), "dry_run": dry_run}


def rollup(window: str) -> str:
    """A plain function job: run in a worker thread so the scheduler loop is never blocked."""
    return f"rolled up the last {window}"
