"""Scale: N jobs that are rarely due. Start time, RSS, one-job SIGHUP reload time, idle CPU,
and a restart on the same file (the jobs as last loaded read back from state_dir).

    python -m bench.scale --jobs 100000 [--idle 30]     # prints one JSON object

The daemon runs on a throwaway embedded PostgreSQL; every job fires once an hour, at an offset
that keeps it out of the measured window, so what is measured is holding N jobs, not running them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scheduler_daemon.storage.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent
HZ = os.sysconf("SC_CLK_TCK")
LAST_LINE = [""]  # the last awaited log line, for its fields


# Offsets spread over the hour but never in the next ~10 minutes of a benchmark run; fixed once
# so that rewriting the file for the reload changes exactly one job.
BASE = int(time.time()) % 3600


ADMIN = ("127.0.0.1", 18_089)
TOKEN = secrets.token_hex(16)


def write_config(path: Path, jobs: int, dsn: str, *, extra: str = "", cron: bool = False) -> None:
    """``cron``: each job a daily cron at one of the day's minutes, but this hour's and the
    next one's (the run is measured without fires)."""
    base = BASE
    admin = f'admin: {{listen: "{ADMIN[0]}:{ADMIN[1]}", token: "{TOKEN}"}}'
    lines = [f'database: {{url: "{dsn}"}}', "state_dir: ./state", admin, "jobs:"]
    if cron:
        now = time.gmtime().tm_hour
        minutes = [m for m in range(1440) if m // 60 not in (now, (now + 1) % 24)]
        lines += [
            f'  j{i:07d}: {{cron: "{m % 60} {m // 60} * * *", command: ["true"]}}'
            for i, m in ((i, minutes[i % len(minutes)]) for i in range(jobs))
        ]
    else:
        offsets = ((i, (base + 900 + i % 2400) % 3600) for i in range(jobs))
        lines += [f'  j{i:07d}: {{every: 1h, offset: {o}s, command: ["true"]}}' for i, o in offsets]
    path.write_text("\n".join(lines) + "\n" + extra)


def api_call(method: str, path: str, body: dict[str, object]) -> float:
    """Seconds from sending one admin API request to its (successful) answer."""
    request = urllib.request.Request(
        f"http://{ADMIN[0]}:{ADMIN[1]}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    sent = time.monotonic()
    with urllib.request.urlopen(request, timeout=600) as answer:
        answer.read()
    return time.monotonic() - sent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for_line(proc: subprocess.Popen[str], event: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"daemon exited before {event}")
        if f'"event": "{event}"' in line:
            LAST_LINE[0] = line
            return time.monotonic()
    raise TimeoutError(event)


def start_daemon(config: Path) -> tuple[subprocess.Popen[str], float, float, float]:
    """The daemon on ``config``: it, and seconds to scheduling, to jobs synced, RSS then."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEDULER_LOG_LEVEL": "info"}
    daemon = Path(sys.executable).with_name("scheduler-daemon")
    began = time.monotonic()
    proc = subprocess.Popen(
        [str(daemon), "run", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = wait_for_line(proc, "scheduler_started", 600) - began
    synced = wait_for_line(proc, "database_connected", 600) - began
    return proc, started, synced, rss_mb(proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=30)
    parser.add_argument("--settle", type=float, default=10, help="seconds before the idle window")
    parser.add_argument("--cron", action="store_true", help="daily cron jobs, not hourly `every`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sd-scale-") as tmp:
        work = Path(tmp)
        server = EmbeddedPostgres(work / "pg")
        dsn = server.start()
        try:
            config = work / "config.yaml"
            write_config(config, args.jobs, dsn, cron=args.cron)
            proc, started, synced, rss = start_daemon(config)
            # Idle means after the start-up work that follows the first connection (catch-up
            # checks every job): measured from right after it, 100k jobs showed ~1 %, 0.2 % later.
            time.sleep(args.settle)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.idle)
            idle_cpu = 100 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            added = '  added: {every: 1h, command: ["true"]}\n'
            write_config(config, args.jobs, dsn, extra=added, cron=args.cron)
            sent = time.monotonic()
            proc.send_signal(signal.SIGHUP)
            reload_s = wait_for_line(proc, "reload_succeeded", 600) - sent
            print(LAST_LINE[0], file=sys.stderr)
            # A job through the API: scheduled by the time the answer comes (it has next_fires).
            job = {"name": "api-job", "every": "1h", "http": {"url": "http://127.0.0.1:9/"}}
            api_create = api_call("POST", "/jobs", job)
            api_change = api_call("PATCH", "/jobs/api-job", {"every": "2h"})
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            # Again on the same file: the jobs as loaded last time are read back from state_dir.
            proc, restarted, resynced, restarted_rss = start_daemon(config)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            print(
                json.dumps(
                    {
                        "scheduler": "scheduler_daemon",
                        "jobs": args.jobs,
                        "schedules": "cron" if args.cron else "every",
                        "start_to_scheduling_s": round(started, 2),
                        "start_to_jobs_synced_s": round(synced, 2),
                        "rss_mb": round(rss, 1),
                        "idle_cpu_percent": round(idle_cpu, 2),
                        "one_job_reload_s": round(reload_s, 3),
                        "api_create_s": round(api_create, 4),
                        "api_change_s": round(api_change, 4),
                        "restart_to_scheduling_s": round(restarted, 2),
                        "restart_to_jobs_synced_s": round(resynced, 2),
                        "restart_rss_mb": round(restarted_rss, 1),
                    }
                )
            )
        finally:
            server.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
