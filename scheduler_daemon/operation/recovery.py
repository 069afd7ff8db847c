"""After a restart: retry abandoned attempts, and catch up on the fires missed while down.

:class:`Recovery` is the database's on-connect hook: on the first connection of a process it
settles what the previous one left behind; on every later one it re-syncs the jobs. It also owns
the catch-up sequences in progress (after a restart or a forward clock jump).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from scheduler_daemon.operation.claims import Claims
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.operation.pauses import Pauses
from scheduler_daemon.running.fire import RecordSink
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage import queries, store
from scheduler_daemon.storage.fire_claims import ClaimRequest
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.startlog import StartLog
from scheduler_daemon.timing.catchup import CatchUpPlan, plan_catch_up
from scheduler_daemon.timing.clock import Clock
from scheduler_daemon.timing.schedules import build_schedule

log = structlog.get_logger("scheduler_daemon.operation.recovery")

SyncJobs = Callable[[asyncpg.Pool], Awaitable[None]]


class Recovery:
    """The database's on-connect hook (after the schema), and the catch-up sequences."""

    def __init__(
        self,
        *,
        clock: Clock,
        runner: Runner,
        recorder: Recorder,
        node: str,
        jobs: Callable[[], Sequence[JobSpec]],
        pauses: Pauses,
        runs: OneOffRuns,
        sync_jobs: SyncJobs,
        starts: StartLog | None = None,
        claims: Claims | None = None,
    ) -> None:
        """``jobs``: the configured jobs, now; ``sync_jobs``: mirror them all in the database;
        ``starts``: the start log, whose earlier files say which attempts began; ``claims``:
        cluster mode, a missed fire is run or recorded only by the replica that claims it."""
        self._claims = claims
        self._clock = clock
        self._runner = runner
        self._recorder = recorder
        self._node = node
        self._jobs = jobs
        self._pauses = pauses
        self._runs = runs
        self._sync_jobs = sync_jobs
        self._starts = starts
        self._catchups: set[asyncio.Task[None]] = set()
        self._closed = False
        self.done = False  # the first connection settled what the last process left
        # Fires up to this instant that never ran are the catch-up's (the daemon sets it when
        # its schedule starts: the schedule takes the fires after it).
        self.resumed_at = self._now()

    async def on_connect(self, pool: asyncpg.Pool) -> None:
        if self.done:
            await self._sync_jobs(pool)
            log.info("database_connected")
            return
        # First connection of this process: before any row of ours is written, settle what the
        # previous process left behind. Its journal first: rows in it are attempts that ended
        # (not abandoned) and fires that ran (not to catch up) — read after, they ran twice.
        await self._recorder.replay_journal(pool)
        # Then the starts it made durable: an attempt that began and has no row gets one, to be
        # abandoned below with those left `running`; the catch-up does not run those fires again.
        began = await self._starts.replay(pool) if self._starts is not None else set()
        abandoned = await store.abandon_running(pool, self._node)
        last = await store.last_scheduled(pool)
        await self._sync_jobs(pool)
        self._pauses.adopt(await queries.paused_jobs(pool))
        self._runs.schedule(await queries.pending_runs(pool))
        self.done = True
        log.info("database_connected", abandoned=len(abandoned))
        jobs = self._jobs()
        now = self._now()
        manual = [row["fire_id"] for row in abandoned if row["trigger"] == FireKind.MANUAL]
        runs = await self._runs.resumable(pool, manual)
        retry_abandoned(abandoned, {job.name: job for job in jobs}, self._runner, now, runs=runs)
        # Read lazily, as the catch-up yields between jobs: a job paused meanwhile is skipped,
        # and none starts once we are closed.
        await catch_up(
            (job for job in jobs if not self._closed and job.name not in self._pauses),
            last,
            resumed_at=self.resumed_at,
            now=now,
            runner=self._runner,
            recorder=self._recorder,
            node=self._node,
            track=self._track,
            began=began,
            claims=self._claims,
        )

    def on_clock_jump(self, job: JobSpec, first_skipped: datetime, now: datetime) -> None:
        """The scheduler skipped ``job``'s fires from ``first_skipped`` to ``now``."""
        if self._closed:
            return
        task = catch_up_job(
            job,
            last=first_skipped - timedelta(microseconds=1),
            until=now,
            now=now,
            runner=self._runner,
            recorder=self._recorder,
            node=self._node,
            why="the wall clock jumped forward",
            claims=self._claims,
        )
        if task is not None:
            self._track(task)

    async def close(self) -> None:
        """Cancel the catch-up sequences (the runner drains their running fires)."""
        self._closed = True
        tasks = list(self._catchups)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._catchups.add(task)
        task.add_done_callback(self._catchups.discard)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)


def retry_abandoned(
    abandoned: Iterable[asyncpg.Record],
    jobs: Mapping[str, JobSpec],
    runner: Runner,
    now: datetime,
    *,
    runs: Mapping[uuid.UUID, tuple[JobSpec, Mapping[str, Any] | None]] | None = None,
) -> int:
    """Resume each abandoned fire at its next attempt, where the job's retry policy allows.

    ``runs``: one-off runs' fires by id, with the job and overrides each ran with (an ad-hoc
    run's own job, a run's own retry)."""
    retried = 0
    for row in abandoned:
        job, overrides = (runs or {}).get(row["fire_id"]) or (jobs.get(row["job_name"]), None)
        at_most_once = job is not None and job.delivery == "at_most_once"
        # A chained fire's input was its parent's result, in memory: it cannot be given again.
        chained = row["trigger"] == FireKind.CHAIN
        log.warning(
            "attempt_abandoned",
            job=row["job_name"],
            attempt=row["attempt"],
            scheduled_at=row["scheduled_at"].isoformat(),
            # The attempt may have had its effects: at most once, it is not tried again.
            **({"not_retried": "delivery: at_most_once"} if at_most_once else {}),
            **({"not_retried": "a chained fire (its parent's result is gone)"} if chained else {}),
        )
        if job is None or at_most_once or chained or row["attempt"] >= job.retry.attempts:
            continue
        if not job.enabled:
            continue
        if _too_late(job, row["scheduled_at"], now):
            continue
        runner.submit(
            job,
            row["scheduled_at"],
            trigger=FireKind(row["trigger"]),
            overrides=overrides,
            fire_id=row["fire_id"],
            attempt=row["attempt"] + 1,
        )
        retried += 1
    return retried


async def catch_up(
    jobs: Iterable[JobSpec],
    last_scheduled: Mapping[str, datetime],
    *,
    resumed_at: datetime,
    now: datetime,
    runner: Runner,
    recorder: RecordSink,
    node: str,
    track: Callable[[asyncio.Task[None]], None],
    began: Collection[uuid.UUID] = frozenset(),
    claims: Claims | None = None,
) -> None:
    """Run or record every fire missed between each job's last handled fire and ``resumed_at``,
    but those in ``began`` (fire ids of attempts that began: they have their row).

    ``track`` is given each catch-up sequence as it starts. Yields to the loop after each job, so
    that however many jobs there are, fires, the watchdog and the API go on meanwhile.
    """
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
            began=began,
            claims=claims,
        )
        if task is not None:
            track(task)
        await asyncio.sleep(0)


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
    began: Collection[uuid.UUID] = frozenset(),
    claims: Claims | None = None,
) -> asyncio.Task[None] | None:
    """Apply ``job``'s catch-up policy to its fires in (last, until], but those in ``began``
    (with ``claims``, but those another replica claims)."""
    plan = plan_catch_up(job, build_schedule(job), last=last, until=until, now=now)
    if began:
        _leave_out(job, plan, began)
    if not plan.run and not plan.missed_total:
        return None
    if claims is not None:
        task = _claimed_catch_up(job, plan, claims, runner, recorder, node, now, why)
        return asyncio.create_task(task, name=f"catchup:{job.name}")
    if not _begin_catch_up(job, plan, recorder, node, now, why):
        return None
    task = _run_in_order(job, plan.run, runner, claimed=False)
    return asyncio.create_task(task, name=f"catchup:{job.name}")


async def _claimed_catch_up(
    job: JobSpec,
    plan: CatchUpPlan,
    claims: Claims,
    runner: Runner,
    recorder: RecordSink,
    node: str,
    now: datetime,
    why: str,
) -> None:
    """Every replica plans the same catch-up: each instant is run or recorded missed by the one
    that claims it (one statement for the job's instants)."""
    instants = [*plan.missed, *plan.run]
    won = await claims.claim_all(
        [
            ClaimRequest(scheduled_fire_id(job.name, t), 1, job.name, t, FireKind.CATCHUP)
            for t in instants
        ]
    )
    mine = [t for t in instants if scheduled_fire_id(job.name, t) in won]
    unrecorded = plan.missed_total - len(plan.missed)
    first_is_mine = bool(plan.missed) and plan.missed[0] in mine
    plan.missed = [t for t in plan.missed if t in mine]
    plan.missed_total = len(plan.missed) + (unrecorded if first_is_mine else 0)
    plan.run = [t for t in plan.run if t in mine]
    if not plan.run and not plan.missed_total:
        return
    if _begin_catch_up(job, plan, recorder, node, now, why):
        await _run_in_order(job, plan.run, runner, claimed=True)


def _begin_catch_up(
    job: JobSpec, plan: CatchUpPlan, recorder: RecordSink, node: str, now: datetime, why: str
) -> bool:
    """Record the missed fires and say what the catch-up does; whether it runs any."""
    _record_missed(job, plan, recorder, node, now, why)
    log.info(
        "catch_up",
        job=job.name,
        policy="none" if job.delivery == "at_most_once" else job.catch_up,
        delivery=job.delivery,
        run=len(plan.run),
        missed=plan.missed_total,
        counted_all=plan.counted_all,
        why=why,
    )
    return bool(plan.run)


async def _run_in_order(
    job: JobSpec, instants: list[datetime], runner: Runner, *, claimed: bool
) -> None:
    # One after another, so `catch_up: all` works whatever the job's overlap policy.
    for at in instants:
        fire = runner.submit(job, at, trigger=FireKind.CATCHUP, claimed=claimed)
        if fire is not None:
            await runner.finished(fire)


def _leave_out(job: JobSpec, plan: CatchUpPlan, began: Collection[uuid.UUID]) -> None:
    """Fires whose attempt began before the crash (the start log holds them) are neither run
    again nor recorded missed: their row is there, `abandoned`, and their retry is the policy's.
    (Their instants can lie past the last one handled: rows recorded before them may have been
    lost in the crash, and those instants are still the catch-up's.)"""
    plan.run = [t for t in plan.run if scheduled_fire_id(job.name, t) not in began]
    missed = [t for t in plan.missed if scheduled_fire_id(job.name, t) not in began]
    plan.missed_total -= len(plan.missed) - len(missed)
    plan.missed = missed


def _record_missed(
    job: JobSpec, plan: CatchUpPlan, recorder: RecordSink, node: str, now: datetime, why: str
) -> None:
    reason = f"missed: {why} ({_policy(job)})"
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


def _policy(job: JobSpec) -> str:
    """What decided the fate of the job's missed fires, as the config says it."""
    if job.delivery == "at_most_once":
        return "delivery: at_most_once"
    return f"catch_up: {job.catch_up}"


def _too_late(job: JobSpec, scheduled_at: datetime, now: datetime) -> bool:
    if job.starting_deadline is None:
        return False
    return now - scheduled_at > timedelta(seconds=job.starting_deadline)
