"""Side-by-side benchmarks, run by hand: python -m bench {burst,spread,http,scale,recorder,all}

    python -m bench burst --sizes 10000 --runs 3 --realistic   # realistic burst, 3 runs a side
    python -m bench all --seconds 20                           # realistic, then every plain one

Each scenario runs the real daemon (generated config, throwaway embedded PostgreSQL, figures read
back from the executions table) and APScheduler 3.11's AsyncIOScheduler on the same jobs on this
machine, alternating ours, APScheduler, ours, APScheduler... --runs times each (default 3), and
prints every run and the medians with their ratio. `all` runs the realistic burst and spread, then
every plain scenario, with the issue's sizes; --realistic runs the realistic variant alone. Rows
are appended to bench/results/<scenario>.jsonl: `ours` and `apscheduler` hold the median of each
figure, `ours_runs` and `apscheduler_runs` every run's, with `runs` and `variant`.

    burst     N every-second python jobs all due at the same instant   (bench.drift / bench.aps)
    spread    N every-second python jobs at offsets i/N: N fires/s     (bench.drift / bench.aps)
    http      N every-second HTTP jobs spread over the second against a local aiohttp server
    scale     N hourly jobs: start time, RSS, idle CPU, one-job reload (bench.scale / bench.aps)
    recorder  rows/s into PostgreSQL and lag at steady loads: ours vs one INSERT per row (one run)

The plain burst and spread jobs are no-ops, the floor of a fire's cost. The realistic variant
(burst and spread) gives every job a 5 s timeout and keyword arguments, and makes every tenth job
an HTTP GET of a local aiohttp server (bench.target): `python: "asyncio:sleep", args: {delay: 0}`
for ours, `asyncio.wait_for(asyncio.sleep(delay=0), 5)` and a shared aiohttp session for
APScheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULTS = {
    "burst": [1000, 10000, 50000],
    "spread": [5000, 20000, 50000],
    "http": [2000, 5000, 8000],
    "scale": [100_000, 1_000_000],
    "recorder": [5000, 20000, 50000],
}
REALISTIC = ("burst", "spread")  # the scenarios with a realistic variant
Figures = dict[str, Any]


def run_json(module: str, *args: object) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, check=True
    ).stdout
    obj, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])
    return obj  # type: ignore[no-any-return]


@contextlib.contextmanager
def http_target() -> Iterator[str]:
    server = subprocess.Popen([sys.executable, "-m", "bench.target"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        yield f"http://127.0.0.1:{int(server.stdout.readline())}/ping"
    finally:
        server.kill()
        server.wait()


def ratio(theirs: Any, ours: Any) -> float:
    return round(float(theirs or 0) / max(float(ours or 0), 0.001), 1)


def median(values: list[Any]) -> Any:
    """The median of one figure over the runs: ints stay ints; None (e.g. APScheduler ran no
    fire, so it has no drift) when most runs have no number; anything else from the first run."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return values[0]
    if 2 * len(numbers) <= len(values):
        return None
    mid = statistics.median(numbers)
    if all(isinstance(v, int) for v in numbers):
        return round(mid)
    # Two decimals, or three significant digits below 1 (7.3 ms of an API change read "0.01 s").
    return round(mid, 2) if abs(mid) >= 1 else float(f"{mid:.3g}")


def medians(runs: list[Figures]) -> Figures:
    return {key: median([run.get(key) for run in runs]) for key in runs[0]}


def alternate(
    label: str, runs: int, ours: tuple[object, ...], theirs: tuple[object, ...]
) -> dict[str, Any]:
    """ours, APScheduler, ours, APScheduler... ``runs`` times each (``ours`` and ``theirs``: a
    module and its arguments): a machine that slows down (shared cores) weighs on both sides
    alike, and the medians leave out an odd run."""
    ours_runs: list[Figures] = []
    theirs_runs: list[Figures] = []
    for k in range(runs):
        ours_runs.append(run_json(str(ours[0]), *ours[1:]))
        theirs_runs.append(run_json(str(theirs[0]), *theirs[1:]))
        if runs > 1:
            print_row(f"{label} run {k + 1}/{runs}", sides(ours_runs[-1:], theirs_runs[-1:]))
    return sides(ours_runs, theirs_runs)


def sides(ours_runs: list[Figures], theirs_runs: list[Figures]) -> dict[str, Any]:
    ours, theirs = medians(ours_runs), medians(theirs_runs)
    row = {"ours": ours, "apscheduler": theirs, "ours_runs": ours_runs,
           "apscheduler_runs": theirs_runs, "runs": len(ours_runs)}  # fmt: skip
    if "drift_ms_p99" in ours:
        row["p99_ratio"] = ratio(theirs["drift_ms_p99"], ours["drift_ms_p99"])
    return row


def drift_pair(label: str, jobs: int, seconds: float, runs: int, *extra: str) -> dict[str, Any]:
    args = ("--jobs", jobs, "--seconds", seconds, *extra)
    return alternate(label, runs, ("bench.drift", *args), ("bench.aps", *args))


def scenario_rows(
    scenario: str, sizes: list[int], args: argparse.Namespace, variant: str
) -> list[dict[str, Any]]:
    seconds, runs = args.seconds, args.runs
    if scenario == "recorder":  # one run: every rate, then a burst, both sides inside it
        rates = [str(size) for size in sizes]
        row = {"size": max(sizes), **run_json("bench.recorder", "--rates", *rates, "--seconds",
               seconds)}  # fmt: skip
        print_row(f"{scenario} {max(sizes):>9,}", row)
        return [{"scenario": scenario, "variant": variant, "runs": 1, **row}]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        label = f"{scenario}{' realistic' if variant == 'realistic' else ''} {size:>9,}"
        shape = ["--spread"] if scenario == "spread" else []
        if variant == "realistic":
            with http_target() as url:
                row = drift_pair(label, size, seconds, runs, *shape, "--realistic", "--http", url)
        elif scenario in REALISTIC:
            row = drift_pair(label, size, seconds, runs, *shape)
        elif scenario == "http":
            with http_target() as url:
                row = drift_pair(label, size, seconds, runs, "--spread", "--http", url)
        elif scenario == "scale":
            scale = ("--jobs", size, "--idle", args.idle)
            row = alternate(label, runs, ("bench.scale", *scale), ("bench.aps", "--scale", *scale))
        else:
            raise ValueError(scenario)
        rows.append({"scenario": scenario, "variant": variant, "size": size, **row})
        print_row(f"{label} median" if runs > 1 else label, rows[-1])
    return rows


def print_row(label: str, row: dict[str, Any]) -> None:
    if "ours" not in row:  # recorder: a pair of sides per load
        for load, pair in row.items():
            if isinstance(pair, dict) and "ours" in pair:
                o, b = pair["ours"], pair["per_row_insert"]
                print(f"{label} {load}: ours {o['rows_per_s']:,} rows/s lag {o['max_lag_rows']:,}"
                      f" drain {o['drain_s']} s | per-row INSERT {b['rows_per_s']:,} rows/s"
                      f" lag {b['max_lag_rows']:,} drain {b['drain_s']} s")  # fmt: skip
        return
    o, a = row["ours"], row["apscheduler"]
    if "start_to_scheduling_s" in o:  # scale
        print(f"{label}: ours start {o['start_to_scheduling_s']} s, {o['rss_mb']} MB, idle"
              f" {o['idle_cpu_percent']}%, reload {o['one_job_reload_s']} s | APScheduler start"
              f" {a['start_to_scheduling_s']} s, {a['rss_mb']} MB, idle {a['idle_cpu_percent']}%,"
              f" add_job {a['one_job_add_s']} s", flush=True)  # fmt: skip
        return
    print(f"{label}: ours p50/p99/max {o['drift_ms_p50']}/{o['drift_ms_p99']}/"
          f"{o['drift_ms_max']} ms"
          f" recorded {o['fires_recorded']:,}/{o['fires_expected']:,} ok/s {o['succeeded_per_s']:,}"
          f" cpu {o['cpu_s']} s | APScheduler {a['drift_ms_p50']}/{a['drift_ms_p99']}/"
          f"{a['drift_ms_max']} ms ran {a['fires_recorded']:,} dropped"
          f" {a['fires_dropped_misfire']:,} ok/s {a['succeeded_per_s']:,} cpu {a['cpu_percent']}%"
          f" | p99 ratio {row['p99_ratio']}x", flush=True)  # fmt: skip


def plan(scenario: str, realistic: bool) -> list[tuple[str, str]]:
    """(scenario, variant) in running order: realistic first, then plain."""
    if scenario != "all":
        return [(scenario, "realistic" if realistic else "plain")]
    steps = [(name, "realistic") for name in REALISTIC]
    return steps if realistic else steps + [(name, "plain") for name in DEFAULTS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*DEFAULTS, "all"])
    parser.add_argument("--sizes", type=int, nargs="+", help="jobs (fires/s for recorder)")
    parser.add_argument("--seconds", type=float, default=20, help="run length of each side")
    parser.add_argument("--idle", type=float, default=30, help="scale: idle CPU window")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each side")
    parser.add_argument(
        "--realistic", action="store_true", help="burst/spread: 5 s timeouts, kwargs, 10%% HTTP"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.realistic and args.scenario not in (*REALISTIC, "all"):
        parser.error(f"--realistic applies to {' and '.join(REALISTIC)} (and all)")
    RESULTS.mkdir(exist_ok=True)
    machine = f"{platform.machine()} {platform.python_version()} {platform.node()}"
    for scenario, variant in plan(args.scenario, args.realistic):
        sizes = args.sizes or DEFAULTS[scenario]
        for row in scenario_rows(scenario, sizes, args, variant):
            row.update(seconds=args.seconds, at=time.time(), machine=machine)
            with open(RESULTS / f"{scenario}.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
