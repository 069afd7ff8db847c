"""Replicas on one PostgreSQL: R daemons in cluster mode sharing N every-second jobs, by hand.

    python -m bench.replicas --replicas 1 2 3 --jobs 500 --seconds 30 [--spread]

For each R (and `--replicas 0`: one daemon without cluster mode, the baseline), starts R
`scheduler-daemon run` processes with distinct node names on one throwaway embedded PostgreSQL
(or --database-url), lets them run, stops them with SIGTERM and reports from the database:
fires run per second (over the whole run, and `sustained_per_s`: finished in its steady part,
after a warm-up, before the stop), drift p50/p99 (also of the steady part alone), claim latency
(claimed_at - scheduled_at, database time) p50/p99, each replica's share, takeovers, instants
run twice (must be 0), the CPU time of the daemons, and the cores each daemon and PostgreSQL
(embedded only) used in the steady part: on one host, where the CPU goes when R replicas do not
run R times the fires.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.drift import REPO, wait_for_first_row
from bench.results import cpu_seconds, postgres_cpu
from scheduler_daemon.storage.embedded import EmbeddedPostgres

WARM_UP = 5.0  # seconds of a run left out of `sustained_per_s`: start, first claims, sync


def write_config(
    path: Path, node: str, jobs: int, dsn: str, *, cluster: bool, spread: bool
) -> None:
    lines = [
        f'database: {{url: "{dsn}"}}',
        "state_dir: ./state",
        f"node: {node}",
        f"max_concurrency: {max(64, jobs)}",
        "shutdown_grace: 5s",
        f"cluster: {{enabled: {'true' if cluster else 'false'}}}",
        "jobs:",
    ]
    lines += [
        f"  j{i:06d}: {{every: 1s, offset: {(i / jobs) if spread else 0:.6f}s, "
        'python: "bench.jobs:noop"}'
        for i in range(jobs)
    ]
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("executions", "fire_claims", "jobs", "nodes"):
            # A fresh database has none: the first daemon creates them.
            with contextlib.suppress(asyncpg.UndefinedTableError):
                await conn.execute(f"TRUNCATE {table}")
    finally:
        await conn.close()


async def report(dsn: str, steady: tuple[float, float]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        sustained = await conn.fetchrow(
            """SELECT count(*) AS fires,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY drift_ms) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY drift_ms) AS p99
               FROM executions WHERE started_at IS NOT NULL
               AND finished_at BETWEEN to_timestamp($1) AND to_timestamp($2)""",
            *steady,
        )
        row = await conn.fetchrow(
            """SELECT count(*) AS fires,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY drift_ms) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY drift_ms) AS p99,
                      extract(epoch FROM max(finished_at) - min(scheduled_at)) AS busy_s
               FROM executions WHERE started_at IS NOT NULL"""
        )
        claims = await conn.fetchrow(
            """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
                      count(*) FILTER (WHERE takeover) AS takeovers
               FROM (SELECT extract(epoch FROM claimed_at - scheduled_at) * 1000 AS ms,
                            takeover FROM fire_claims) c"""
        )
        late = await conn.fetch(
            """SELECT floor(extract(epoch FROM scheduled_at - (SELECT min(scheduled_at)
                                                                FROM fire_claims)))::int AS s,
                      count(*) AS n
               FROM fire_claims WHERE takeover GROUP BY 1 ORDER BY 1"""
        )
        shares = await conn.fetch(
            "SELECT node, count(*) AS n FROM executions WHERE started_at IS NOT NULL "
            "GROUP BY node ORDER BY node"
        )
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT job_name, scheduled_at FROM executions "
            "WHERE attempt = 1 GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
    finally:
        await conn.close()
    assert row is not None and claims is not None
    window = float(row["busy_s"] or 0)
    return {
        "fires": row["fires"],
        "fires_per_s": round(row["fires"] / window) if window else 0,
        "sustained_per_s": round(sustained["fires"] / (steady[1] - steady[0])),
        "steady_drift_ms_p50": round(sustained["p50"] or 0, 2),
        "steady_drift_ms_p99": round(sustained["p99"] or 0, 2),
        "drift_ms_p50": round(row["p50"] or 0, 2),
        "drift_ms_p99": round(row["p99"] or 0, 2),
        "claim_ms_p50": round(claims["p50"] or 0, 2),
        "claim_ms_p99": round(claims["p99"] or 0, 2),
        "takeovers": claims["takeovers"],
        "shares": {r["node"]: round(r["n"] / max(row["fires"], 1), 3) for r in shares},
        "instants_run_twice": twice,
        "takeovers_by_second": {r["s"]: r["n"] for r in late},
    }


def cpu_now(procs: list[subprocess.Popen[bytes]], pgdata: Path | None) -> list[float]:
    """CPU seconds so far of each daemon, then of PostgreSQL's processes (0 if not ours)."""
    daemons = [cpu_seconds(proc.pid) for proc in procs]
    return [*daemons, postgres_cpu(pgdata) if pgdata is not None else 0.0]


def run(
    work: Path, dsn: str, replicas: int, jobs: int, seconds: float, spread: bool,
    pgdata: Path | None,
) -> dict[str, Any]:  # fmt: skip
    asyncio.run(reset(dsn))
    count = max(replicas, 1)
    configs = []
    for i in range(count):
        config = work / f"r{replicas}-{i}" / "config.yaml"
        write_config(config, f"node{i}", jobs, dsn, cluster=replicas > 0, spread=spread)
        configs.append(config)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEDULER_LOG_LEVEL": "warning"}
    daemon = Path(sys.executable).with_name("scheduler-daemon")
    procs = [
        subprocess.Popen([str(daemon), "run", "-c", str(c)], env=env, stdout=sys.stderr)
        for c in configs
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    asyncio.run(wait_for_first_row(dsn, procs[0]))
    began = time.time()
    warm_up = min(WARM_UP, seconds / 3)
    time.sleep(warm_up)
    cpu_before, monotonic_before = cpu_now(procs, pgdata), time.monotonic()
    time.sleep(seconds - warm_up)
    cores = [
        round((after - before) / (time.monotonic() - monotonic_before), 2)
        for before, after in zip(cpu_before, cpu_now(procs, pgdata), strict=True)
    ]
    steady = (began + warm_up, time.time())  # one host: the database's clock
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=120)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"replicas": replicas, "jobs": jobs, "spread": spread}
    result |= asyncio.run(report(dsn, steady))
    result["cores"] = {"daemons": cores[:-1], "postgres": cores[-1]}
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    result["cpu_s"] = round(cpu, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--spread", action="store_true", help="fires evenly over each second")
    parser.add_argument("--database-url", help="default: a throwaway embedded PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sd-bench-") as tmp:
        work = Path(tmp)
        server = None
        dsn = args.database_url
        if not dsn:
            server = EmbeddedPostgres(work / "pg")
            dsn = server.start()
        try:
            for replicas in args.replicas:
                pgdata = server.pgdata if server is not None else None
                result = run(work, dsn, replicas, args.jobs, args.seconds, args.spread, pgdata)
                print(json.dumps(result), flush=True)
        finally:
            if server is not None:
                server.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
