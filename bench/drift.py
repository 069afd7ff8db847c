"""Drift of N python jobs all firing every second, measured by the real daemon on a real database.

    python -m bench.drift --jobs 1000 --seconds 30
    python -m bench.drift --jobs 1000 --seconds 30 --realistic --http URL   # 90 % python, 10 % HTTP

Starts `scheduler-daemon run` on a generated config (embedded PostgreSQL unless --database-url),
lets it run, stops it with SIGTERM and reports from the executions table: fires recorded vs
expected, drift p50/p99/max, and the daemon's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from scheduler_daemon.storage.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent


# Realistic jobs: a 5 s timeout and keyword arguments; every tenth one an HTTP GET.
REALISTIC_PYTHON = 'python: "asyncio:sleep", args: {delay: 0}, timeout: 5s'


def realistic_action(i: int, url: str) -> str:
    """Job i of the realistic mix: 90 % async python jobs with kwargs, 10 % HTTP, 5 s timeouts."""
    return f'http: {{url: "{url}"}}, timeout: 5s' if i % 10 == 9 else REALISTIC_PYTHON


def write_config(
    path: Path,
    jobs: int,
    database_url: str,
    *,
    spread: bool = False,
    http: str | None = None,
    realistic: bool = False,
) -> None:
    """N every-second jobs: all due at the same instant, or (spread) evenly over each second.

    Python no-op jobs, or (``http``) GETs of that URL, or (``realistic``, with ``http``) the
    realistic mix of :func:`realistic_action`."""
    action = f'http: {{url: "{http}"}}, timeout: 10s' if http else 'python: "bench.jobs:noop"'

    def job_action(i: int) -> str:
        return realistic_action(i, http) if realistic and http else action

    lines = [
        f'database: {{url: "{database_url}"}}',
        "state_dir: ./state",
        f"max_concurrency: {max(64, jobs)}",
        "shutdown_grace: 5s",
        "jobs:",
    ]
    lines += [
        f"  j{i:06d}: {{every: 1s, offset: {(i / jobs) if spread else 0:.6f}s, {job_action(i)}}}"
        for i in range(jobs)
    ]
    path.write_text("\n".join(lines) + "\n")


async def wait_for_first_row(dsn: str, proc: subprocess.Popen[bytes]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while proc.poll() is None:
            try:
                if await conn.fetchval("SELECT EXISTS (SELECT FROM executions)"):
                    return
            except asyncpg.UndefinedTableError:
                pass  # the daemon has not applied the schema yet
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the daemon exited with {proc.returncode} before its first fire")
    finally:
        await conn.close()


async def report(dsn: str, started: float, stopped: float, jobs: int) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS fires,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY drift_ms) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY drift_ms) AS p99,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY drift_ms) FILTER (
                          WHERE scheduled_at > (SELECT min(scheduled_at) FROM executions)
                                               + interval '3 seconds') AS p99_warm,
                      max(drift_ms) AS max,
                      count(*) FILTER (WHERE status <> 'succeeded') AS not_ok,
                      min(scheduled_at) AS first, max(scheduled_at) AS last,
                      extract(epoch FROM max(finished_at) - min(scheduled_at)) AS busy_s,
                      (SELECT sum(round(extract(epoch FROM last - first)) + 1)
                       FROM (SELECT min(scheduled_at) AS first, max(scheduled_at) AS last
                             FROM executions GROUP BY job_name) AS per_job) AS expected
               FROM executions"""
        )
    finally:
        await conn.close()
    assert row is not None
    # from the first fire due to the last attempt finished: stretches if we fall behind
    window = float(row["busy_s"] or 0)
    return {
        "jobs": jobs,
        "fires_recorded": row["fires"],
        "succeeded_per_s": round((row["fires"] - row["not_ok"]) / window) if window else 0,
        "fires_expected": int(row["expected"] or 0),  # each job: every second first..last
        "not_succeeded": row["not_ok"],
        "drift_ms_p50": round(row["p50"] or 0, 2),
        "drift_ms_p99": round(row["p99"] or 0, 2),
        "drift_ms_p99_after_3s": round(row["p99_warm"] or 0, 2),
        "drift_ms_max": round(row["max"] or 0, 2),
        "wall_s": round(stopped - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    parser.add_argument("--spread", action="store_true", help="fires evenly over each second")
    parser.add_argument("--http", metavar="URL", help="HTTP jobs GETting URL instead of python")
    parser.add_argument(
        "--realistic", action="store_true", help="5 s timeouts, kwargs, every 10th job HTTP"
    )
    args = parser.parse_args()
    if args.realistic and not args.http:
        parser.error("--realistic needs --http URL (the target of its HTTP jobs)")
    with tempfile.TemporaryDirectory(prefix="sd-bench-") as tmp:
        work = Path(tmp)
        server = None
        dsn = args.database_url
        if not dsn:
            server = EmbeddedPostgres(work / "pg")
            dsn = server.start()
        try:
            config = work / "config.yaml"
            write_config(
                config, args.jobs, dsn, spread=args.spread, http=args.http, realistic=args.realistic
            )
            env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEDULER_LOG_LEVEL": "warning"}
            daemon = Path(sys.executable).with_name("scheduler-daemon")
            started = time.monotonic()
            # The daemon's log lines go to stderr: stdout is this benchmark's JSON alone.
            proc = subprocess.Popen(
                [str(daemon), "run", "-c", str(config)], env=env, stdout=sys.stderr
            )
            # The run is counted from the first recorded fire: with 50k jobs, start-up alone
            # takes seconds, and a fixed wall time would leave little of it scheduling.
            asyncio.run(wait_for_first_row(dsn, proc))
            time.sleep(args.seconds)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            stopped = time.monotonic()
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = asyncio.run(report(dsn, started, stopped, args.jobs))
            result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
            result["max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
            print(json.dumps(result, indent=2))
        finally:
            if server is not None:
                server.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
