"""One-off runs (the admin API's or the CLI's): each waits for its instant, then starts once.

The runs live in PostgreSQL (`runs`), so a restart reloads the pending ones; a run is claimed in
the database just before it starts (retried while the database is away), so a run cancelled
meanwhile, or started by an earlier process, does not start again. It then runs as a manual fire
whose fire_id is the run's id: of the configured job of its name, or of its own ad-hoc job
(built again now under the daemon's rules, adhoc.py), with its own options applied.

Bounded: the API and the CLI refuse a run past ``queries.MAX_PENDING_RUNS`` pending (or
``MAX_PENDING_RUNS_PER_JOB`` of its job), and the daemon waits for at most ``capacity`` runs at a
time; runs written into the table by other means past that stay pending there, and are taken up,
the ones due first, as runs start and make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import structlog

from scheduler_daemon.operation.adhoc import RunOptions, adhoc_job
from scheduler_daemon.operation.overrides import BadOverrides, stored_overrides
from scheduler_daemon.running.fire import Submit
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems
from scheduler_daemon.storage import queries, store
from scheduler_daemon.storage.queries import OneOffRun, RunSetup
from scheduler_daemon.storage.store import Db
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.oneoff")

# Waits are re-checked against the wall clock at least this often (clock steps, suspend).
MAX_WAIT = 60.0
# How long a due run waits before it tries again to claim itself while the database is away.
RUN_CLAIM_RETRY = 5.0


class PoolSource(Protocol):
    @property
    def pool(self) -> asyncpg.Pool | None: ...


class OneOffRuns:
    def __init__(
        self,
        *,
        clock: Clock,
        database: PoolSource,
        job: Callable[[str], JobSpec | None],
        submit: Submit,
        capacity: int = queries.MAX_PENDING_RUNS,
        rules: Callable[[], ApiJobRules] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        """``job``: the configured job of that name, now; ``submit``: the runner's;
        ``capacity``: the most runs waited for at a time; ``rules``: what an ad-hoc run's job
        must obey, now (None: http jobs only, no secrets); ``environ``: where its secret
        references are resolved."""
        self._clock = clock
        self._database = database
        self._job = job
        self._rules = rules or (lambda: ApiJobRules(frozenset(), frozenset(), "UTC"))
        self._environ = environ
        self._submit = submit
        self._capacity = capacity
        self._waiting: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._full = False  # said once per time it fills up
        # Runs cancelled here lately: a control poll that read them just before would wait for
        # them again, taking room until their instant (oldest forgotten first).
        self._cancelled: OrderedDict[uuid.UUID, None] = OrderedDict()

    def schedule(self, runs: Iterable[OneOffRun]) -> None:
        """Wait for each run not waited for yet, while there is room (the rest stay pending in
        the database: the control poll offers them again, due first)."""
        fresh = {r.id: r for r in runs if r.id not in self._waiting and r.id not in self._cancelled}
        new = list(fresh.values())
        room = self._capacity - len(self._waiting)
        for run in new[: max(room, 0)]:
            task = asyncio.create_task(self._wait_then_start(run), name=f"run:{run.id}")
            self._waiting[run.id] = task
            task.add_done_callback(functools.partial(self._done, run.id))
        if len(new) > room and not self._full:
            log.warning("oneoff_runs_deferred", waiting=len(self._waiting),
                        capacity=self._capacity)  # fmt: skip
        self._full = len(new) > room

    def _done(self, run_id: uuid.UUID, _: asyncio.Task[None]) -> None:
        self._waiting.pop(run_id, None)

    async def create(
        self,
        db: Db,
        job: JobSpec,
        at: datetime,
        overrides: Mapping[str, Any] | None,
        setup: RunSetup | None = None,
    ) -> OneOffRun:
        """Store a run of ``job`` at ``at`` (it survives a restart), then wait for it."""
        run = await queries.create_run(db, job.name, at, overrides, setup)
        self.schedule([run])
        log.info("oneoff_run_created", run_id=str(run.id), job=job.name, run_at=at.isoformat())
        return run

    async def cancel(self, db: Db, run_id: uuid.UUID) -> OneOffRun | None:
        """Cancel a pending run in the database, then stop waiting for it; the run as it now
        is (None: no such run; one started already is returned unchanged)."""
        run = await queries.cancel_run(db, run_id)
        if run is not None and run.state == "cancelled":
            self._cancelled[run_id] = None
            if len(self._cancelled) > self._capacity:
                self._cancelled.popitem(last=False)
            task = self._waiting.pop(run_id, None)
            if task is not None:
                task.cancel()
        return run

    async def resumable(
        self, db: Db, fire_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[JobSpec, dict[str, Any] | None]]:
        """Of ``fire_ids`` (abandoned manual attempts), those of runs: each one's job as it
        starts (an ad-hoc run's own, its options applied) and its overrides, so that its next
        attempt runs what the first ran. A run that no longer builds is left out (logged)."""
        resumable: dict[uuid.UUID, tuple[JobSpec, dict[str, Any] | None]] = {}
        for run in await queries.runs_by_id(db, fire_ids) if fire_ids else []:
            configured = self._job(run.job_name)
            if configured is None and run.job is None:
                continue  # its job is gone: not retried, as any job's
            try:
                job = self._run_job(run, configured)
                resumable[run.id] = (job, _checked_overrides(job, run))
            except (BadOverrides, JobProblems) as exc:
                log.warning("abandoned_run_not_retried", run_id=str(run.id), job=run.job_name,
                            why=str(exc))  # fmt: skip
        return resumable

    def pending(self) -> int:
        return len(self._waiting)

    async def close(self) -> None:
        """Stop waiting (pending runs stay in the database for the next start)."""
        tasks = list(self._waiting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_then_start(self, run: OneOffRun) -> None:
        due = run.run_at.timestamp()
        while (delay := due - self._clock.time()) > 0:
            await self._clock.sleep(min(delay, MAX_WAIT))
        try:
            await self._start(run)
        except Exception:
            log.exception("oneoff_run_failed_to_start", run_id=str(run.id), job=run.job_name)

    async def _start(self, run: OneOffRun) -> None:
        configured = self._job(run.job_name)
        if configured is None and run.job is None:
            # Cancelled, not left pending: it would be loaded again at every poll, and hold a slot.
            await self._cancel(run, "oneoff_run_dropped", "the job is no longer configured")
            return
        try:
            job = self._run_job(run, configured)
            overrides = _checked_overrides(job, run)
        except (BadOverrides, JobProblems) as exc:
            # A run no API call could have made (written straight into `runs`).
            await self._cancel(run, "oneoff_run_refused", str(exc))
            return
        if not await self._claim(run):
            # Cancelled meanwhile or started by an earlier process; or, if it is still pending,
            # its id is already a fire's (see mark_run_started).
            if await self._still_pending(run):
                await self._cancel(run, "oneoff_run_refused", "its id is already another fire's")
            return
        self._submit(job, run.run_at, trigger=FireKind.MANUAL, overrides=overrides, fire_id=run.id)

    def _run_job(self, run: OneOffRun, configured: JobSpec | None) -> JobSpec:
        """The job the run runs, its options applied; JobProblems or BadOverrides if none."""
        if run.job is None:
            assert configured is not None
            job = configured
        elif configured is not None:
            # Its executions, and the overlap policy, would mix with that job's.
            raise BadOverrides(f"a job named {run.job_name!r} is configured now")
        elif not isinstance(run.job, Mapping):
            raise BadOverrides(f"its job must be a JSON object, got {type(run.job).__name__}")
        else:
            job, _ = adhoc_job(
                run.job, run.run_at, self._rules(), default=run.job_name, environ=self._environ
            )
            if job.name != run.job_name:
                raise BadOverrides(f"its job is named {job.name!r}, its row {run.job_name!r}")
        options = RunOptions.of(run.options)
        return options.applied(job) if options is not None else job

    async def _still_pending(self, run: OneOffRun) -> bool:
        pool = self._database.pool
        if pool is None:
            return False
        with contextlib.suppress(*store.DB_ERRORS):
            now = await queries.get_run(pool, run.id)
            return now is not None and now.state == "pending"
        return False

    async def _cancel(self, run: OneOffRun, event: str, why: str) -> None:
        """A run that must not start: logged as ``event`` and cancelled in the database."""
        log.warning(event, run_id=str(run.id), job=run.job_name, why=why)
        pool = self._database.pool
        if pool is not None:
            with contextlib.suppress(*store.DB_ERRORS):
                await queries.cancel_run(pool, run.id)

    async def _claim(self, run: OneOffRun) -> bool:
        """Mark the run started in the database, trying again while the database is away."""
        while True:
            pool = self._database.pool
            if pool is not None:
                with contextlib.suppress(*store.DB_ERRORS):
                    return await queries.mark_run_started(pool, run.id)
            await self._clock.sleep(RUN_CLAIM_RETRY)


def _checked_overrides(job: JobSpec, run: OneOffRun) -> dict[str, Any] | None:
    """The run's overrides, checked as the API checks them; BadOverrides if it must not start."""
    if run.id.version != 4:
        # Scheduled fires' ids are version 5: a run must never share one.
        raise BadOverrides("its id is not a random (version 4) UUID")
    return stored_overrides(job, run.overrides)
