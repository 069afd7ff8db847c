"""A/B of the fire path between two checkouts: the same burst, alternating processes.

    python -m bench.ab --other /work/main --runs 5     # prints one JSON object

Each run is one process per side (the checkout's own ``.venv/bin/python`` if it has one, and
the checkout first on PYTHONPATH, so each side imports its own scheduler_daemon), sides
alternating (ours, other, other, ours, ...). A process warms up with one burst, then measures
two, of N jobs due at the same instant through the real Runner and StartLog (bench.startlog's
burst, written out here: only the Runner's and StartLog's constructors, ``submit`` and
``start``/``close`` are used, which both sides have), with the daemon's garbage collection
settings (the jobs frozen, its thresholds):

- ``realistic``: each job has a 5 s timeout and an action that yields once (as
  `asyncio:sleep` with delay 0 does);
- ``noop``: no timeout, an action that returns at once (the floor).

Figures per side are medians over runs (each run: the median of its two bursts):
``cpu_us_per_fire`` (the process's CPU over the burst / N: steadier on a shared machine),
``median_start_ms`` and ``last_start_ms`` (from the first submit until half of the actions, and
the last one, began).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIGURES = ("cpu_us_per_fire", "median_start_ms", "last_start_ms")
HERE = Path(__file__).resolve()


async def _burst(fires: int, realistic: bool, directory: Path) -> dict[str, float]:
    from scheduler_daemon.operation.daemon import GC_THRESHOLDS
    from scheduler_daemon.running.actions.outcome import Outcome
    from scheduler_daemon.running.limiter import Limiter
    from scheduler_daemon.running.records import Status
    from scheduler_daemon.running.runner import Runner
    from scheduler_daemon.specs import CommandSpec, JobSpec
    from scheduler_daemon.storage.startlog import StartLog
    from scheduler_daemon.timing.clock import SystemClock

    ok = Outcome(status=Status.SUCCEEDED, retryable=False)
    began_at: list[float] = []

    class Action:
        async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
            began_at.append(time.perf_counter())
            if realistic:
                await asyncio.sleep(0)
            return ok

    done = asyncio.get_running_loop().create_future()

    class Rows:
        def __init__(self) -> None:
            self.appended = 0

        def record(self, rec: object) -> None:
            self.appended += 1
            if self.appended == fires:  # the burst's last row: every fire has ended
                done.set_result(None)

        @property
        def durable(self) -> int:
            return self.appended

    spec = CommandSpec(argv=("true",))
    timeout = 5.0 if realistic else None
    jobs = [
        JobSpec(name=f"j{i:06d}", every=1.0, timeout=timeout, action=spec) for i in range(fires)
    ]
    rows, action = Rows(), Action()
    starts = StartLog(directory, rows=rows)
    runner = Runner(
        clock=SystemClock(),
        limiter=Limiter(fires),
        recorder=rows,
        action_for=lambda job: action,
        node="bench",
        starts=starts,
    )
    await starts.start()
    at = datetime.now(UTC).replace(microsecond=0)
    gc.collect()
    gc.freeze()  # the daemon's garbage collection (operation/daemon.py, _start_schedule)
    gc.set_threshold(*GC_THRESHOLDS)
    cpu = time.process_time()
    began = time.perf_counter()
    for job in jobs:
        runner.submit(job, at)
    await done
    cpu = time.process_time() - cpu
    await starts.close()
    gc.unfreeze()
    assert rows.appended == fires
    starts_ms = sorted((t - began) * 1e3 for t in began_at)
    return {
        "cpu_us_per_fire": cpu / fires * 1e6,
        "median_start_ms": statistics.median(starts_ms),
        "last_start_ms": starts_ms[-1],
    }


async def _child(fires: int, realistic: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sd-ab-") as tmp:
        await _burst(fires, realistic, Path(tmp) / "warm")
        runs = [await _burst(fires, realistic, Path(tmp) / f"run{i}") for i in range(2)]
    return {key: statistics.median(r[key] for r in runs) for key in FIGURES}


def _side(tree: Path, fires: int, scenario: str) -> dict[str, float]:
    venv = tree / ".venv/bin/python"  # else ours, importing the tree's code first
    python = str(venv) if venv.exists() else sys.executable
    out = subprocess.run(
        [python, str(HERE), "--child", scenario, "--fires", str(fires)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, default=Path("/work/main"), help="the other checkout")
    parser.add_argument("--ours", type=Path, default=HERE.parent.parent)
    parser.add_argument("--fires", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="per side, alternating")
    parser.add_argument("--scenario", choices=("realistic", "noop"), default="realistic")
    parser.add_argument("--child", choices=("realistic", "noop"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE.parent]
        import uvloop

        from scheduler_daemon.logs import configure_logging

        configure_logging(level="warning", json=True, cache=True)
        print(json.dumps(uvloop.run(_child(args.fires, args.child == "realistic"))))
        return 0
    sides = {"ours": args.ours, "other": args.other}
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for run in range(args.runs):
        for side in ("ours", "other") if run % 2 == 0 else ("other", "ours"):
            results[side].append(_side(sides[side], args.fires, args.scenario))
            print(side, results[side][-1], file=sys.stderr)
    summary = {
        side: {key: round(statistics.median(r[key] for r in rs), 1) for key in FIGURES}
        for side, rs in results.items()
    }
    print(json.dumps({"fires": args.fires, "runs": args.runs, "scenario": args.scenario,
                      **summary}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
