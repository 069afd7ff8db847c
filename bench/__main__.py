"""Side-by-side benchmarks, run by hand: python -m bench {burst,spread,http,scale,recorder,all}

Each scenario runs the real daemon (generated config, throwaway embedded PostgreSQL, figures read
back from the executions table) and APScheduler 3.11's AsyncIOScheduler on the same jobs, one
after the other on this machine, and prints both with their ratio. `all` runs every scenario
with the issue's sizes. Results are appended to bench/results/<scenario>.jsonl.

    burst     N every-second python jobs all due at the same instant   (bench.drift / bench.aps)
    spread    N every-second python jobs at offsets i/N: N fires/s     (bench.drift / bench.aps)
    http      N every-second HTTP jobs spread over the second against a local aiohttp server
    scale     N hourly jobs: start time, RSS, idle CPU, one-job reload (bench.scale / bench.aps)
    recorder  rows/s into PostgreSQL and lag at steady loads: ours vs one INSERT per row
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
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


def drift_pair(scenario: str, jobs: int, seconds: float, *extra: str) -> dict[str, Any]:
    ours = run_json("bench.drift", "--jobs", jobs, "--seconds", seconds, *extra)
    theirs = run_json("bench.aps", "--jobs", jobs, "--seconds", seconds, *extra)
    return {"ours": ours, "apscheduler": theirs, "p99_ratio": ratio(
        theirs["drift_ms_p99"], ours["drift_ms_p99"])}  # fmt: skip


def scenario_rows(
    scenario: str, sizes: list[int], seconds: float, idle: float
) -> list[dict[str, Any]]:
    if scenario == "recorder":  # one run: every rate, then a burst
        rates = [str(size) for size in sizes]
        row = run_json("bench.recorder", "--rates", *rates, "--seconds", seconds)
        print_row(scenario, {"size": max(sizes), **row})
        return [{"scenario": scenario, "size": max(sizes), **row}]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        if scenario == "burst":
            row = drift_pair(scenario, size, seconds)
        elif scenario == "spread":
            row = drift_pair(scenario, size, seconds, "--spread")
        elif scenario == "http":
            with http_target() as url:
                row = drift_pair(scenario, size, seconds, "--spread", "--http", url)
        elif scenario == "scale":
            row = {
                "ours": run_json("bench.scale", "--jobs", size, "--idle", idle),
                "apscheduler": run_json("bench.aps", "--scale", "--jobs", size, "--idle", idle),
            }
        else:
            raise ValueError(scenario)
        rows.append({"scenario": scenario, "size": size, **row})
        print_row(scenario, rows[-1])
    return rows


def print_row(scenario: str, row: dict[str, Any]) -> None:
    size = f"{scenario} {row['size']:>9,}"
    if scenario == "recorder":
        for label, sides in row.items():
            if isinstance(sides, dict) and "ours" in sides:
                o, b = sides["ours"], sides["per_row_insert"]
                print(f"{size} {label}: ours {o['rows_per_s']:,} rows/s lag {o['max_lag_rows']:,}"
                      f" drain {o['drain_s']} s | per-row INSERT {b['rows_per_s']:,} rows/s"
                      f" lag {b['max_lag_rows']:,} drain {b['drain_s']} s")  # fmt: skip
        return
    o, a = row["ours"], row["apscheduler"]
    if scenario == "scale":
        print(f"{size}: ours start {o['start_to_scheduling_s']} s, {o['rss_mb']} MB, idle"
              f" {o['idle_cpu_percent']}%, reload {o['one_job_reload_s']} s | APScheduler start"
              f" {a['start_to_scheduling_s']} s, {a['rss_mb']} MB, idle {a['idle_cpu_percent']}%,"
              f" add_job {a['one_job_add_s']} s")  # fmt: skip
        return
    print(f"{size}: ours p50/p99/max {o['drift_ms_p50']}/{o['drift_ms_p99']}/{o['drift_ms_max']} ms"
          f" recorded {o['fires_recorded']:,}/{o['fires_expected']:,} ok/s {o['succeeded_per_s']:,}"
          f" cpu {o['cpu_s']} s | APScheduler {a['drift_ms_p50']}/{a['drift_ms_p99']}/"
          f"{a['drift_ms_max']} ms ran {a['fires_recorded']:,} dropped"
          f" {a['fires_dropped_misfire']:,} ok/s {a['succeeded_per_s']:,} cpu {a['cpu_percent']}%"
          f" | p99 ratio {row['p99_ratio']}x", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*DEFAULTS, "all"])
    parser.add_argument("--sizes", type=int, nargs="+", help="jobs (fires/s for recorder)")
    parser.add_argument("--seconds", type=float, default=20, help="run length of each side")
    parser.add_argument("--idle", type=float, default=30, help="scale: idle CPU window")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    machine = f"{platform.machine()} {platform.python_version()} {platform.node()}"
    for scenario in DEFAULTS if args.scenario == "all" else [args.scenario]:
        sizes = args.sizes or DEFAULTS[scenario]
        for row in scenario_rows(scenario, sizes, args.seconds, args.idle):
            row.update(seconds=args.seconds, at=time.time(), machine=machine)
            with open(RESULTS / f"{scenario}.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
