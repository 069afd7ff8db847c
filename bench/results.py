"""What keeping results and items costs per fire: daemon and PostgreSQL CPU, by payload.

    python -m bench.results --variant json900-items --jobs 10 --seconds 20

N HTTP jobs every second, spread over the second, GET a local server (bench.target) that answers
a Binance ticker/24hr-shaped JSON list; the real daemon records them in a throwaway embedded
PostgreSQL. After a warm-up, CPU is sampled from /proc for the daemon and for every PostgreSQL
process, and divided by the fires recorded in between. Variants:

    text           a text/plain "ok": no result (the baseline)
    json1          1 ticker (~450 bytes) kept as the result
    json1-items    the same, and its one element as a row of job_items
    json900        900 tickers (~400 KB) kept as the result
    json900-items  the same, and 900 rows of job_items per fire
    json900-none   900 tickers with `result: none`: only the head in `output`, as before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.drift import REPO, wait_for_first_row
from scheduler_daemon.storage.embedded import EmbeddedPostgres

VARIANTS = {
    "text": ("/ping", ""),
    "json1": ("/json/1", ""),
    "json1-items": ("/json/1", ', items: {path: "[*]", key: symbol}'),
    "json900": ("/json/900", ""),
    "json900-items": ("/json/900", ', items: {path: "[*]", key: symbol}'),
    "json900-none": ("/json/900", ", result: none"),
}
_TICKS = os.sysconf("SC_CLK_TCK")


def write_config(path: Path, dsn: str, base: str, variant: str, jobs: int) -> None:
    route, extra = VARIANTS[variant]
    lines = [
        f'database: {{url: "{dsn}"}}',
        "state_dir: ./state",
        f"max_concurrency: {max(64, jobs)}",
        "shutdown_grace: 5s",
        "jobs:",
    ]
    lines += [
        f'  j{i:05d}: {{every: 1s, offset: {i / jobs:.6f}s, http: {{url: "{base}{route}"}}'
        f", timeout: 10s{extra}}}"
        for i in range(jobs)
    ]
    path.write_text("\n".join(lines) + "\n")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def postgres_cpu(data_dir: Path) -> float:
    """The postmaster's and its children's CPU (backends come and go: the live ones)."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == postmaster:
                    total += cpu_seconds(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return total


async def counts(dsn: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM executions WHERE status <> 'running') AS fires,
                      (SELECT count(*) FROM job_items) AS items,
                      (SELECT count(*) FROM executions WHERE error IS NOT NULL) AS errors"""
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["fires"]), int(row["items"]), int(row["errors"])


def sample(proc: subprocess.Popen[bytes], data_dir: Path, dsn: str) -> dict[str, float]:
    fires, items, errors = asyncio.run(counts(dsn))
    return {
        "t": time.monotonic(),
        "daemon_cpu": cpu_seconds(proc.pid),
        "pg_cpu": postgres_cpu(data_dir),
        "fires": fires,
        "items": items,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="json900-items")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sd-bench-") as tmp:
        work = Path(tmp)
        server = EmbeddedPostgres(work / "pg")
        dsn = server.start()
        target = subprocess.Popen([sys.executable, "-m", "bench.target"], stdout=subprocess.PIPE)
        try:
            assert target.stdout is not None
            base = f"http://127.0.0.1:{int(target.stdout.readline())}"
            config = work / "config.yaml"
            write_config(config, dsn, base, args.variant, args.jobs)
            env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEDULER_LOG_LEVEL": "warning"}
            daemon = Path(sys.executable).with_name("scheduler-daemon")
            proc = subprocess.Popen(
                [str(daemon), "run", "-c", str(config)], env=env, stdout=sys.stderr
            )
            try:
                asyncio.run(wait_for_first_row(dsn, proc))
                time.sleep(args.warmup)
                first = sample(proc, server.pgdata, dsn)
                time.sleep(args.seconds)
                last = sample(proc, server.pgdata, dsn)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
        finally:
            target.kill()
            target.wait()
            server.remove()
    fires = last["fires"] - first["fires"]
    wall = last["t"] - first["t"]
    per_fire = 1000.0 / max(fires, 1)
    print(
        json.dumps(
            {
                "variant": args.variant,
                "jobs": args.jobs,
                "fires_per_s": round(fires / wall, 1),
                "items_per_s": round((last["items"] - first["items"]) / wall, 1),
                "daemon_cpu_ms_per_fire": round(
                    (last["daemon_cpu"] - first["daemon_cpu"]) * per_fire, 3
                ),
                "postgres_cpu_ms_per_fire": round((last["pg_cpu"] - first["pg_cpu"]) * per_fire, 3),
                "errors": int(last["errors"]),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
