"""The same burst on APScheduler 3.11 (AsyncIOScheduler): N jobs all due every second.

    python -m bench.aps --jobs 1000 --seconds 30      # prints one JSON object
    python -m bench.aps --jobs 1000 --seconds 30 --realistic --http URL   # as bench.drift's

Lateness is measured like ours: from the scheduled instant to the moment the job function starts.
A fire APScheduler drops (misfire) is counted, not silently lost from the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

REALISTIC_TIMEOUT = 5.0  # seconds: every realistic job's timeout, as ours


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    jobs: int,
    seconds: float,
    spread: bool = False,
    http: str | None = None,
    realistic: bool = False,
) -> dict[str, object]:
    started: dict[str, float] = {}
    lateness_ms: list[float] = []
    finished = [0.0]  # when the last job finished
    first = [float("inf")]  # the first instant a job was due
    missed = failed = 0
    # Configured like ours: one shared session, no connection limit, the jobs' timeout.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=REALISTIC_TIMEOUT if realistic else 10),
    )

    async def job(job_id: str) -> None:
        if http is not None:
            await http_job(job_id, http)
            return
        started[job_id] = time.time()
        finished[0] = time.time()

    async def http_job(job_id: str, url: str) -> None:
        started[job_id] = time.time()
        async with session.get(url) as response:
            await response.read()
            response.raise_for_status()
        finished[0] = time.time()

    async def sleep_job(job_id: str, delay: float) -> None:
        # ours: `python: "asyncio:sleep", args: {delay: 0}, timeout: 5s`
        started[job_id] = time.time()
        await asyncio.wait_for(asyncio.sleep(delay=delay), REALISTIC_TIMEOUT)
        finished[0] = time.time()

    def listener(event: JobEvent) -> None:
        nonlocal missed, failed
        if event.code == EVENT_JOB_MISSED:
            missed += 1
            return
        if event.code == EVENT_JOB_ERROR:
            failed += 1
        scheduled: datetime = event.scheduled_run_time  # type: ignore[attr-defined]
        first[0] = min(first[0], scheduled.timestamp())
        began = started.pop(event.job_id, None)
        if began is not None:
            lateness_ms.append((began - scheduled.timestamp()) * 1000.0)

    def target(job_id: str, i: int) -> tuple[Callable[..., Awaitable[None]], dict[str, Any]]:
        """Job i's coroutine function and keyword arguments, as ours in bench.drift."""
        if realistic and http is not None:  # bench.drift.realistic_action
            if i % 10 == 9:
                return http_job, {"job_id": job_id, "url": http}
            return sleep_job, {"job_id": job_id, "delay": 0}
        return job, {"job_id": job_id}

    scheduler = AsyncIOScheduler()
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    base = datetime.fromtimestamp(int(time.time()) + 2, UTC)
    for i in range(jobs):
        job_id = f"j{i:06d}"
        func, kwargs = target(job_id, i)
        if spread:  # every second at offset i/N, like the daemon's `every: 1s, offset: ...`
            start = base + timedelta(seconds=i / jobs)
            scheduler.add_job(
                func, "interval", seconds=1, start_date=start, id=job_id, kwargs=kwargs
            )
        else:
            scheduler.add_job(func, "cron", second="*", id=job_id, kwargs=kwargs)
    cpu0 = time.process_time()
    scheduler.start()
    await asyncio.sleep(seconds)
    scheduler.shutdown(wait=False)
    cpu = time.process_time() - cpu0
    await session.close()
    # whole seconds fully inside the run, like the daemon's figures
    expected = int(seconds) * jobs
    return {
        "scheduler": "apscheduler-3.11 AsyncIOScheduler",
        "jobs": jobs,
        "fires_recorded": len(lateness_ms),
        "fires_expected": expected,
        "fires_dropped_misfire": missed,
        "not_succeeded": failed,
        # the fires started within the run, over the whole seconds it was scheduling
        "succeeded_per_s": round((len(lateness_ms) - failed) / max(finished[0] - first[0], 1e-3)),
        "drift_ms_p50": round(statistics.median(lateness_ms), 2) if lateness_ms else None,
        "drift_ms_p99": round(percentile(lateness_ms, 0.99), 2),
        "drift_ms_max": round(max(lateness_ms), 2) if lateness_ms else None,
        "cpu_percent": round(100 * cpu / seconds, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def scale(jobs: int, idle: float) -> dict[str, object]:
    """N hourly jobs (none due during the run): start, RSS, idle CPU, adding one job.

    APScheduler has no config file to reload: its one-job change is an ``add_job`` call.
    """
    scheduler = AsyncIOScheduler()
    base = datetime.fromtimestamp(int(time.time()) + 900, UTC)
    for i in range(jobs):
        start = base + timedelta(seconds=i % 2400)
        scheduler.add_job(_hourly, "interval", hours=1, start_date=start, id=f"j{i:07d}")
    scheduler.start()
    await asyncio.sleep(0)
    started = _process_age()  # from process start, like the daemon's figure
    rss = _rss_mb()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(idle)
    idle_cpu = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
    t1 = time.monotonic()
    scheduler.add_job(_hourly, "interval", hours=1, id="added")
    await asyncio.sleep(0)
    added = time.monotonic() - t1
    scheduler.shutdown(wait=False)
    return {
        "scheduler": "apscheduler-3.11 AsyncIOScheduler",
        "jobs": jobs,
        "start_to_scheduling_s": round(started, 2),
        "rss_mb": round(rss, 1),
        "idle_cpu_percent": round(idle_cpu, 2),
        "one_job_add_s": round(added, 4),
    }


async def _hourly() -> None:
    return None


def _process_age() -> float:
    with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
        start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description="APScheduler burst benchmark")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--spread", action="store_true", help="fires evenly over each second")
    parser.add_argument("--http", metavar="URL", help="jobs GET this URL")
    parser.add_argument(
        "--realistic", action="store_true", help="5 s timeouts, kwargs, every 10th job HTTP"
    )
    parser.add_argument("--scale", action="store_true", help="hourly jobs: start, RSS, idle CPU")
    parser.add_argument("--idle", type=float, default=30, help="with --scale: idle seconds")
    args = parser.parse_args()
    if args.realistic and not args.http:
        parser.error("--realistic needs --http URL (the target of its HTTP jobs)")
    if args.scale:
        print(json.dumps(asyncio.run(scale(args.jobs, args.idle))))
        return 0
    print(
        json.dumps(
            asyncio.run(run(args.jobs, args.seconds, args.spread, args.http, args.realistic))
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
