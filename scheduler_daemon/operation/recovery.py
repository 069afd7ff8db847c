"""After a restart: retry abandoned attempts, and catch up on the fires missed while down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import asyncpg
import structlog

from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.running.runner import RecordSink, Runner
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.catchup import CatchUpPlan, plan_catch_up
from scheduler_daemon.timing.schedules import build_schedule

log = structlog.get_logger("scheduler_daemon.operation.recovery")


def retry_abandoned(
    abandoned: Iterable[asyncpg.Record], jobs: Mapping[str, JobSpec], runner: Runner, now: datetime
) -> int:
    """Resume each abandoned fire at its next attempt, where the job's retry policy allows."""
    retried = 0
    for row in abandoned:
        job = jobs.get(row["job_name"])
        log.warning(
            "attempt_abandoned",
            job=row["job_name"],
            attempt=row["attempt"],
            scheduled_at=row["scheduled_at"].isoformat(),
        )
        if job is None or not job.enabled or row["attempt"] >= job.retry.attempts:
            continue
        if _too_late(job, row["scheduled_at"], now):
            continue
        runner.submit(
            job,
            row["scheduled_at"],
            trigger=FireKind(row["trigger"]),
            fire_id=row["fire_id"],
            attempt=row["attempt"] + 1,
        )
        retried += 1
    return retried


def catch_up(
    jobs: Iterable[JobSpec],
    last_scheduled: Mapping[str, datetime],
    *,
    resumed_at: datetime,
    now: datetime,
    runner: Runner,
    recorder: RecordSink,
    node: str,
) -> list[asyncio.Task[None]]:
    """Run or record every fire missed between each job's last handled fire and ``resumed_at``."""
    tasks = []
    for job in jobs:
        last = last_scheduled.get(job.name)
        if last is None or not job.enabled:
            continue
        task = catch_up_job(
            job,
            last=last,
            until=resumed_at,
            now=now,
            runner=runner,
            recorder=recorder,
            node=node,
            why="the daemon was not running",
        )
        if task is not None:
            tasks.append(task)
    return tasks


def catch_up_job(
    job: JobSpec,
    *,
    last: datetime,
    until: datetime,
    now: datetime,
    runner: Runner,
    recorder: RecordSink,
    node: str,
    why: str,
) -> asyncio.Task[None] | None:
    """Apply ``job``'s catch-up policy to its fires in (last, until]."""
    plan = plan_catch_up(job, build_schedule(job), last=last, until=until, now=now)
    if not plan.run and not plan.missed_total:
        return None
    _record_missed(job, plan, recorder, node, now, why)
    log.info(
        "catch_up",
        job=job.name,
        policy=job.catch_up,
        run=len(plan.run),
        missed=plan.missed_total,
        counted_all=plan.counted_all,
        why=why,
    )
    if not plan.run:
        return None
    return asyncio.create_task(_run_in_order(job, plan.run, runner), name=f"catchup:{job.name}")


async def _run_in_order(job: JobSpec, instants: list[datetime], runner: Runner) -> None:
    # One after another, so `catch_up: all` works whatever the job's overlap policy.
    for at in instants:
        fire = runner.submit(job, at, trigger=FireKind.CATCHUP)
        if fire is not None and fire.task is not None:
            await asyncio.wait((fire.task,))


def _record_missed(
    job: JobSpec, plan: CatchUpPlan, recorder: RecordSink, node: str, now: datetime, why: str
) -> None:
    reason = f"missed: {why} (catch_up: {job.catch_up})"
    unrecorded = plan.missed_total - len(plan.missed)
    for i, at in enumerate(plan.missed):
        error = reason
        if i == 0 and unrecorded:
            more = f"{unrecorded}" if plan.counted_all else f"at least {unrecorded}"
            error += f"; {more} earlier missed fires are not recorded one by one"
        recorder.record(
            ExecutionRecord(
                fire_id=scheduled_fire_id(job.name, at),
                job_name=job.name,
                scheduled_at=at,
                attempt=1,
                trigger=FireKind.SCHEDULE,
                status=Status.MISSED,
                started_at=None,
                finished_at=now,
                drift_ms=None,
                duration_ms=None,
                error=error,
                node=node,
            )
        )


def _too_late(job: JobSpec, scheduled_at: datetime, now: datetime) -> bool:
    if job.starting_deadline is None:
        return False
    return now - scheduled_at > timedelta(seconds=job.starting_deadline)
