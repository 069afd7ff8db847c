"""The jobs the daemon runs — the config file's and the database's — and every change to them.

The two are kept side by side (the file's config, the database's jobs by name) and only put
together when something asks for every job: one API write to a config of 100k jobs touches its
own job, not the 100k. A SIGHUP reload and a write to the database's jobs (api_jobs.py) are
applied the same way: the running jobs are compared with the new ones (``plan_reload``,
``plan_api_jobs``); added and changed jobs are (re)scheduled — an unchanged one keeps its next
fire — and removed ones unscheduled (an attempt already running finishes); then a reload syncs
the file's rows in ``jobs``. A reload is all or nothing: one that fails to load or to apply
leaves the old schedule running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

import asyncpg
import structlog

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.operation.api_jobs import ApiJobs, name_taken
from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.reload import (
    ReloadPlan,
    load_for_reload,
    plan_api_jobs,
)
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.specs.api_job import ApiJobRules
from scheduler_daemon.specs.job_blocks import JobBlocks
from scheduler_daemon.specs.pytargets import use_python_path
from scheduler_daemon.storage import store
from scheduler_daemon.storage.database import Database
from scheduler_daemon.timing.clock import Clock
from scheduler_daemon.timing.scheduler import Scheduler

log = structlog.get_logger("scheduler_daemon.operation.job_set")


class JobSet:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        scheduler: Scheduler,
        limiter: Limiter,
        metrics: Metrics,
        database: Database,
        blocks: JobBlocks,
    ) -> None:
        self.config = config  # the file's settings and jobs, as they run
        self._file_jobs: Mapping[str, JobSpec] = {job.name: job for job in config.jobs}
        self._file_chains: tuple[tuple[JobSpec, ...], dict[str, tuple[str, ...]]] = ((), {})
        self._api_jobs: dict[str, JobSpec] = {}  # the database's, as they run, by name
        self._all: tuple[JobSpec, ...] | None = None  # the two together, once asked for
        self.reload_error: str | None = None  # why the last reload was refused, if it was
        self._clock = clock
        self._scheduler = scheduler
        self._limiter = limiter
        self._metrics = metrics
        self._database = database
        self._blocks = blocks
        self._saving: asyncio.Task[None] | None = None
        self.api = ApiJobs(
            rules=ApiJobRules.of(config),
            cache=config.state_dir / "api_jobs.json",
            taken=lambda: self.file_names,
            chained=self._chains_of_file_jobs,
            on_change=self._api_jobs_changed,
        )

    @property
    def all(self) -> tuple[JobSpec, ...]:
        """Every job that runs: the file's, then the database's by name. Built when first asked
        for after a change: an API write to a config of 100k jobs must not copy them all (a
        tuple of 100k jobs took 3-5 ms of the daemon's 13 ms per write)."""
        if self._all is None:
            self._all = (*self.config.jobs, *self._api_jobs.values())
        return self._all

    def __len__(self) -> int:
        return len(self.config.jobs) + len(self._api_jobs)

    @property
    def file_names(self) -> Collection[str]:
        return self._file_jobs.keys()

    def job(self, name: str) -> JobSpec | None:
        """The job of that name that runs (a file's or the database's), if any."""
        job = self._file_jobs.get(name)
        return job if job is not None else self._api_jobs.get(name)

    def _chains_of_file_jobs(self) -> dict[str, tuple[str, ...]]:
        """The file's jobs' `then:`, worked out once per file: every API write checks its job's
        chains against them (walking 100k jobs was half of its 100 ms)."""
        of, chains = self._file_chains
        if of is not self.config.jobs:
            chains = {job.name: job.then for job in self.config.jobs if job.then}
            self._file_chains = (self.config.jobs, chains)
        return chains

    async def start(self, *, database_reached: bool) -> None:
        """Before the first fire: the database's jobs join the file's (the copy under state_dir
        when the database is away)."""
        if not database_reached:
            await self.api.start(None, self.config.path)
        else:
            async with self._database.connection() as conn:
                await self.api.start(conn, self.config.path)
        self._api_jobs = {name: self.api.specs[name] for name in sorted(self.api.specs)}
        self._all = None

    def save_blocks(self) -> None:
        """Keep the jobs as loaded for the next start (pickling 100k jobs takes a second: in a
        thread; the daemon asks once the first fires are scheduled)."""
        if self._blocks.unsaved and (self._saving is None or self._saving.done()):
            self._saving = asyncio.create_task(asyncio.to_thread(self._write_blocks))

    def _write_blocks(self) -> None:
        try:
            self._blocks.save(self.config.state_dir)
        except OSError as exc:
            log.warning("config_cache_not_written", error=str(exc))

    async def reread(self, names: Collection[str] | None = None) -> None:
        """The database's jobs (those of ``names``) as another process may have changed them."""
        if self._database.pool is not None:
            await self.api.reread(self._database.pool, names)

    async def sync(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        changed: Sequence[JobSpec] | None = None,
        removed: Sequence[str] | None = None,
    ) -> None:
        """Mirror the file's jobs in the database: all of them, or after a reload what changed
        (the API writes its own jobs' rows)."""
        pool = pool or self._database.pool
        if pool is None:
            return  # not connected: the next connection syncs the then-current jobs
        jobs = self.config.jobs if changed is None else changed
        next_runs = {job.name: self._scheduler.next_fire(job.name) for job in jobs}
        await store.sync_jobs(pool, jobs, next_runs, removed=removed)

    # -- reload ----------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file; apply it only if it is entirely valid.

        Any exception while loading or applying is a failed reload: the old schedule stays and
        the daemon keeps running (under Restart=on-failure a crash here would keep it down)."""
        began = self._clock.monotonic()
        try:
            plan = await asyncio.to_thread(
                load_for_reload, self.config.path, self._blocks, self.config, self._file_jobs
            )
        except ConfigError as exc:
            return self._reload_failed(exc.problems)
        except Exception as exc:
            log.exception("reload_load_crashed")
            return self._reload_failed([f"unexpected {type(exc).__name__} while loading"])
        loaded = self._clock.monotonic()
        clashes = sorted(self.api.stored.keys() & plan.by_name.keys())
        if clashes:
            path = plan.config.path
            taken = [f"{path}: {name_taken(n, 'created through the API')}" for n in clashes]
            return self._reload_failed(taken)
        old, old_jobs = self.config, self._file_jobs
        # Set before applying: an API change applied meanwhile checks against the new file.
        self._file_jobs = plan.by_name
        try:
            await self._apply(plan)
        except Exception as exc:
            log.exception("reload_apply_crashed")
            self._file_jobs = old_jobs
            self._restore(old, plan)
            return self._reload_failed([f"unexpected {type(exc).__name__} while applying"])
        await self.api.retake()  # a database job the file held until now may run
        self.save_blocks()
        self.reload_error = None
        self._metrics.reloads["succeeded"] += 1
        log.info(
            "reload_succeeded",
            added=len(plan.added),
            removed=len(plan.removed),
            changed=len(plan.changed),
            jobs_reused=self._blocks.reused,
            load_s=round(loaded - began, 3),
            apply_s=round(self._clock.monotonic() - loaded, 3),
        )
        return True

    def _reload_failed(self, problems: list[str]) -> bool:
        self.reload_error = f"{len(problems)} error(s): {problems[0]}"
        self._metrics.reloads["failed"] += 1
        log.error("reload_failed", problems=problems)
        return False

    def _restore(self, old: Config, plan: ReloadPlan) -> None:
        """Undo a partly applied plan: every job it touched goes back to its old spec."""
        now = self._now()
        for name in (*plan.added, *plan.changed, *plan.removed):
            job = self._file_jobs.get(name)
            if job is None:
                self._scheduler.remove(name)
            else:
                self._scheduler.add(job, after=now)
        self._limiter.resize(old.max_concurrency)
        use_python_path(old.python_path)  # loading the new config put its own on sys.path
        self.config, self._all = old, None

    # -- applying --------------------------------------------------------------------------------

    async def _api_jobs_changed(self) -> None:
        """Schedule the database's jobs as they now are: a reload of just those jobs (their rows
        are the API's to write)."""
        plan = plan_api_jobs(self._api_jobs, self.api.specs)
        if plan.added or plan.changed or plan.removed:
            log.info(
                "api_jobs_applied",
                added=list(plan.added),
                changed=list(plan.changed),
                removed=list(plan.removed),
            )
        self._schedule(plan.removed, plan.to_schedule)
        self._api_jobs, self._all = plan.jobs, None

    async def _apply(self, plan: ReloadPlan) -> None:
        """Run a reload's ``plan``: the file's jobs and settings from now on."""
        if plan.restart_only:
            log.warning("reload_needs_restart", settings=list(plan.restart_only))
        self._schedule(plan.removed, plan.to_schedule)
        self._limiter.resize(plan.config.max_concurrency)
        self.config, self._all = plan.config, None
        try:
            await self.sync(changed=plan.to_schedule, removed=plan.removed)
        except store.DB_ERRORS as exc:
            log.warning("jobs_sync_failed", error=str(exc))  # retried at the next connection

    def _schedule(self, removed: Sequence[str], jobs: Sequence[JobSpec]) -> None:
        """Unschedule ``removed``, (re)schedule ``jobs``: the added and the changed ones."""
        now = self._now()
        for name in removed:
            self._scheduler.remove(name)
            self._metrics.forget_job(name)
        for job in jobs:
            self._scheduler.add(job, after=now)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)
