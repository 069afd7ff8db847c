"""What a timeout costs a fire: bursts through the real runner with asyncio.timeout, with the
shared deadlines (timing/deadlines.py, what the daemon uses) and with no timeout, alternating.

    python -m bench.timeouts --fires 10000 --runs 3     # prints one JSON object

bench.startlog's burst (in one process on uvloop, the real Runner and start log fire N jobs
due at the same instant; the recorder is a counter), with an action that awaits
``asyncio.sleep(0)`` (a job that yields once, as `asyncio:sleep` with delay 0 does) under a 5 s
timeout. Each figure is the
median over the runs: ``cpu_us_per_fire`` (the process's CPU over the burst, divided by N),
``median_start_ms`` and ``last_start_ms`` (from the first submit until half of the actions,
and the last one, began).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import uvloop

from bench.startlog import OK, Noop, one_run
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.specs import CommandSpec, JobSpec
from scheduler_daemon.timing.clock import SystemClock

Timeout = Callable[[SystemClock, float | None], AbstractAsyncContextManager[object]]
FIGURES = ("cpu_us_per_fire", "median_start_ms", "last_start_ms")
SIDES: dict[str, tuple[Timeout, float | None]] = {
    "asyncio_timeout": (lambda _, seconds: asyncio.timeout(seconds), 5.0),
    "shared_deadlines": (SystemClock.timeout, 5.0),
    "no_timeout": (SystemClock.timeout, None),
}


class YieldOnce(Noop):
    """The action: notes when it began, yields to the loop once."""

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        self.began.append(time.perf_counter())
        await asyncio.sleep(0)
        return OK


def _jobs(fires: int, timeout: float | None) -> list[JobSpec]:
    action = CommandSpec(argv=("true",))
    return [
        JobSpec(name=f"j{i:06d}", every=1.0, timeout=timeout, action=action) for i in range(fires)
    ]


async def compare(fires: int, runs: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    original = SystemClock.timeout
    with tempfile.TemporaryDirectory(prefix="sd-timeouts-") as tmp:
        try:
            for run in range(runs):
                order = list(SIDES) if run % 2 == 0 else list(reversed(SIDES))
                for side in order:
                    timeout, seconds = SIDES[side]
                    SystemClock.timeout = timeout  # type: ignore[method-assign]
                    burst = await one_run(
                        _jobs(fires, seconds), Path(tmp) / f"{side}{run}", YieldOnce()
                    )
                    results[side].append({key: burst[key] for key in FIGURES})
        finally:
            SystemClock.timeout = original  # type: ignore[method-assign]
    return {
        "fires": fires,
        "runs": runs,
        **{
            side: {key: round(statistics.median(r[key] for r in rs), 1) for key in rs[0]}
            for side, rs in results.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="per side, alternating")
    args = parser.parse_args()
    configure_logging(level="warning", json=True, cache=True)  # the fire path's own cost only
    print(json.dumps(uvloop.run(compare(args.fires, args.runs)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
