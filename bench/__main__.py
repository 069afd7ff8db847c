"""Side-by-side benchmarks, run by hand: python -m bench burst --jobs 1000 10000 --seconds 20

burst: N jobs all due at the same instant every second. Each N runs the real daemon (bench.drift:
generated config, embedded PostgreSQL, figures from the executions table) and APScheduler 3.11
(bench.aps) one after the other on this machine, and prints both with the ratio of p99 drift.
Results are appended to bench/results/burst.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_json(module: str, jobs: int, seconds: float, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", module, "--jobs", str(jobs), "--seconds", str(seconds), *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    obj, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])
    return obj  # type: ignore[no-any-return]


def compare(scenario: str, jobs_list: list[int], seconds: float) -> None:
    """Ours, then APScheduler, for each N; a table and bench/results/<scenario>.jsonl."""
    RESULTS.mkdir(exist_ok=True)
    extra = ("--spread",) if scenario == "spread" else ()
    rows = []
    for jobs in jobs_list:
        ours = run_json("bench.drift", jobs, seconds, *extra)
        theirs = run_json("bench.aps", jobs, seconds, *extra)
        ratio = (theirs["drift_ms_p99"] or 0) / max(float(ours["drift_ms_p99"] or 0), 0.001)  # type: ignore[arg-type]
        row = {
            "scenario": "burst",
            "jobs": jobs,
            "seconds": seconds,
            "ours": ours,
            "apscheduler": theirs,
            "p99_ratio": round(ratio, 1),
            "at": time.time(),
            "machine": f"{platform.machine()} {platform.python_version()}",
        }
        rows.append(row)
        with open(RESULTS / f"{scenario}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    print(
        f"{'jobs':>7} | {'ours p50/p99/max ms':>24} | {'APScheduler p50/p99/max ms':>27} | "
        f"{'recorded ours/aps/expected':>28} | p99 ratio"
    )
    for row in rows:
        o, a = row["ours"], row["apscheduler"]  # type: ignore[index]
        print(
            f"{row['jobs']:>7} | "
            f"{o['drift_ms_p50']:>7}/{o['drift_ms_p99']:>7}/{o['drift_ms_max']:>8} | "
            f"{a['drift_ms_p50']:>8}/{a['drift_ms_p99']:>8}/{a['drift_ms_max']:>9} | "
            f"{o['fires_recorded']:>8}/{a['fires_recorded']:>8}/{o['fires_expected']:>9} | "
            f"{row['p99_ratio']}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    b = sub.add_parser("burst", help="N jobs all due at the same instant every second")
    b.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    b.add_argument("--seconds", type=float, default=20)
    sp = sub.add_parser("spread", help="N every-second jobs spread evenly: N fires/s")
    sp.add_argument("--jobs", type=int, nargs="+", default=[5000, 20000])
    sp.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    compare(args.scenario, args.jobs, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
