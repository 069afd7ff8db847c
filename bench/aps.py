"""The same burst on APScheduler 3.11 (AsyncIOScheduler): N jobs all due every second.

    python -m bench.aps --jobs 1000 --seconds 30      # prints one JSON object

Lateness is measured like ours: from the scheduled instant to the moment the job function starts.
A fire APScheduler drops (misfire) is counted, not silently lost from the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(jobs: int, seconds: float, spread: bool = False) -> dict[str, object]:
    started: dict[str, float] = {}
    lateness_ms: list[float] = []
    missed = 0

    async def job(job_id: str) -> None:
        started[job_id] = time.time()

    def listener(event: JobEvent) -> None:
        nonlocal missed
        if event.code == EVENT_JOB_MISSED:
            missed += 1
            return
        scheduled: datetime = event.scheduled_run_time  # type: ignore[attr-defined]
        began = started.pop(event.job_id, None)
        if began is not None:
            lateness_ms.append((began - scheduled.timestamp()) * 1000.0)

    scheduler = AsyncIOScheduler()
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    base = datetime.fromtimestamp(int(time.time()) + 2, UTC)
    for i in range(jobs):
        job_id = f"j{i:06d}"
        if spread:  # every second at offset i/N, like the daemon's `every: 1s, offset: ...`
            start = base + timedelta(seconds=i / jobs)
            scheduler.add_job(
                job, "interval", seconds=1, start_date=start, id=job_id, args=[job_id]
            )
        else:
            scheduler.add_job(job, "cron", second="*", id=job_id, args=[job_id])
    cpu0 = time.process_time()
    scheduler.start()
    await asyncio.sleep(seconds)
    scheduler.shutdown(wait=False)
    cpu = time.process_time() - cpu0
    # whole seconds fully inside the run, like the daemon's figures
    expected = int(seconds) * jobs
    return {
        "scheduler": "apscheduler-3.11 AsyncIOScheduler",
        "jobs": jobs,
        "fires_recorded": len(lateness_ms),
        "fires_expected": expected,
        "fires_dropped_misfire": missed,
        "drift_ms_p50": round(statistics.median(lateness_ms), 2) if lateness_ms else None,
        "drift_ms_p99": round(percentile(lateness_ms, 0.99), 2),
        "drift_ms_max": round(max(lateness_ms), 2) if lateness_ms else None,
        "cpu_percent": round(100 * cpu / seconds, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="APScheduler burst benchmark")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--spread", action="store_true", help="fires evenly over each second")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.jobs, args.seconds, args.spread))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
