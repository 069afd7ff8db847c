"""What the start log costs: bursts of short fires through the runner, with and without it.

    python -m bench.startlog --fires 10000 --runs 7     # prints one JSON object

In one process on uvloop, the real Runner fires N jobs due at the same instant, each attempt a
no-op action; the recorder is a counter and logging is at `warning` (they cost the same on both
sides). The two sides alternate, a fresh runner and start log (in a new directory on this disk)
per run, and each figure is the median over the runs:
- ``us_per_fire``: the whole burst (submit to every attempt recorded) divided by N, and
  ``cpu_us_per_fire`` the process's CPU time in it (steadier on a shared machine);
- ``median_start_ms``, ``last_start_ms``: from the first submit until half of the actions, and
  the last one, began (the burst's median and worst drift);
- ``commits_per_burst``: group commits of the start log: one write and fsync per file touched
  (a file holds 4096 starts), one more fsync for the directory of a new file;
- ``lone_fire_start_us``: one fire at a time, submit to action start (one fsync with the log).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop

from scheduler_daemon.logs import configure_logging
from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import CommandSpec, JobSpec
from scheduler_daemon.storage.startlog import StartLog
from scheduler_daemon.timing.clock import SystemClock

OK = Outcome(status=Status.SUCCEEDED, retryable=False)
LONE_FIRES = 200


class Noop:
    """The action: returns at once, noting when it began."""

    def __init__(self) -> None:
        self.began: list[float] = []

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        self.began.append(time.perf_counter())
        return OK


class Rows:
    """The recorder, as a counter: every row is durable at once."""

    def __init__(self) -> None:
        self.appended = 0
        self._until: tuple[int, asyncio.Future[None]] | None = None

    def record(self, rec: ExecutionRecord) -> None:
        self.appended += 1
        if self._until is not None and self.appended >= self._until[0]:
            self._until[1].set_result(None)
            self._until = None

    def until(self, rows: int) -> asyncio.Future[None]:
        """Done once ``rows`` rows are in: a burst's end, without a waiter per fire."""
        done = asyncio.get_running_loop().create_future()
        if self.appended >= rows:
            done.set_result(None)
        else:
            self._until = (rows, done)
        return done

    @property
    def durable(self) -> int:
        return self.appended


async def one_run(
    jobs: list[JobSpec], directory: Path | None, action: Noop | None = None
) -> dict[str, float]:
    """One burst of ``jobs`` and the lone fires (``action``: a Noop or one of its kind)."""
    rows, action = Rows(), action or Noop()
    starts = None if directory is None else StartLog(directory, rows=rows)
    runner = Runner(
        clock=SystemClock(),
        limiter=Limiter(len(jobs)),
        recorder=rows,
        action_for=lambda job: action,
        node="bench",
        starts=starts,
    )
    if starts is not None:
        await starts.start()
    at = datetime.now(UTC).replace(microsecond=0)
    gc.collect()
    cpu = time.process_time()  # both threads: the loop's and the start log's
    began = time.perf_counter()
    for job in jobs:
        runner.submit(job, at)
    await rows.until(len(jobs))
    burst = time.perf_counter() - began
    cpu = time.process_time() - cpu
    starts_ms = [(t - began) * 1e3 for t in action.began]
    commits = starts.commits if starts is not None else 0
    lone = []
    for i in range(LONE_FIRES):
        submitted = time.perf_counter()
        fire = runner.submit(jobs[i % len(jobs)], at + timedelta(seconds=i + 1))
        assert fire is not None
        await runner.finished(fire)
        lone.append(action.began[-1] - submitted)
    if starts is not None:
        await starts.close()
    assert rows.appended == len(jobs) + LONE_FIRES
    return {
        "us_per_fire": burst / len(jobs) * 1e6,
        "cpu_us_per_fire": cpu / len(jobs) * 1e6,
        "median_start_ms": statistics.median(starts_ms),
        "last_start_ms": starts_ms[-1],
        "commits_per_burst": commits,
        "lone_fire_start_us": statistics.median(lone) * 1e6,
    }


async def compare(fires: int, runs: int, where: Path | None) -> dict[str, Any]:
    jobs = [
        JobSpec(name=f"j{i:06d}", every=1.0, action=CommandSpec(argv=("true",)))
        for i in range(fires)
    ]
    results: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="sd-startlog-", dir=where) as tmp:
        for run in range(runs):
            sides = ("without", "with") if run % 2 == 0 else ("with", "without")
            for side in sides:
                directory = Path(tmp) / f"run{run}" / "journal" if side == "with" else None
                results[side].append(await one_run(jobs, directory))
    medians = {
        side: {key: round(statistics.median(r[key] for r in rs), 2) for key in rs[0]}
        for side, rs in results.items()
    }
    return {
        "fires": fires,
        "runs": runs,
        **medians,
        **{
            f"extra_{key}": round(medians["with"][key] - medians["without"][key], 2)
            for key in ("us_per_fire", "cpu_us_per_fire", "median_start_ms", "last_start_ms")
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7, help="per side, alternating")
    parser.add_argument("--dir", type=Path, help="where the start logs go (default: $TMPDIR)")
    args = parser.parse_args()
    configure_logging(level="warning", json=True, cache=True)  # the fire path's own cost only
    print(json.dumps(uvloop.run(compare(args.fires, args.runs, args.dir)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
