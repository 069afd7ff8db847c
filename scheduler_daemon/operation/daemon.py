"""Wiring and lifecycle: build the parts, start them, serve (SIGHUP reload, SIGTERM drain), stop.

Everything else lives in the parts: the database and its pool (storage/database.py), the reload
plan (reload.py), pauses (pauses.py), one-off runs (oneoff.py), recovery (recovery.py), and the
background loops, each owned by what it serves (metrics folding, the watchdog, `running` rows,
the control polling).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import uuid
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from scheduler_daemon.errors import AdminUnavailable, SchedulerDaemonError
from scheduler_daemon.operation import admin
from scheduler_daemon.operation.api_jobs import ApiJobs, follow_changes
from scheduler_daemon.operation.cluster import MEMBERSHIP, Cluster
from scheduler_daemon.operation.instance import DatabaseLock, StateLock
from scheduler_daemon.operation.job_set import JobSet
from scheduler_daemon.operation.membership import Membership
from scheduler_daemon.operation.metrics import LiveState, Metrics
from scheduler_daemon.operation.next_runs import keep_next_runs_current
from scheduler_daemon.operation.notify import Notifier
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.operation.pauses import Pauses, watch_controls
from scheduler_daemon.operation.recovery import Recovery
from scheduler_daemon.operation.reload import load_checked
from scheduler_daemon.operation.retention import Pruner
from scheduler_daemon.operation.stop_budget import FLUSH_TIMEOUT, stop_budget
from scheduler_daemon.running.actions import ActionCache, HttpClient
from scheduler_daemon.running.actions.python import job_threads
from scheduler_daemon.running.chains import Chains
from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.specs.job_blocks import JobBlocks
from scheduler_daemon.storage.database import open_database
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.queries import OneOffRun, RunSetup
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.schema import Upgrades
from scheduler_daemon.storage.startlog import StartLog
from scheduler_daemon.timing.clock import Clock, SystemClock
from scheduler_daemon.timing.scheduler import Scheduler

log = structlog.get_logger("scheduler_daemon.operation.daemon")
GC_THRESHOLDS = (50_000, 20, 100)  # gen0 allocations, gen1 and gen2 passes


class Daemon:
    def __init__(
        self, config: Config, *, clock: Clock | None = None, blocks: JobBlocks | None = None
    ) -> None:
        """``blocks``: what loaded ``config`` job by job (reloads reuse unchanged jobs)."""
        self._clock: Clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._notify = Notifier()
        self.started_at = datetime.now(UTC)
        self.metrics = Metrics()
        self._admin: web.AppRunner | None = None
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._journal = Journal(config.state_dir / "journal" / "executions.jsonl")
        self._pauses = Pauses(cache=config.state_dir / "paused.json")
        self._build_recording(config)
        self._build_running(config)
        self._build_recovery(config)
        # One daemon per state_dir and per database, settled before recovery touches a row.
        self._state_lock = StateLock(config.state_dir)
        self._database_lock = DatabaseLock(
            lambda: self.database.dsn, on_lost=self._give_up, shared=config.cluster.enabled
        )
        self._schema = Upgrades(on_refused=self._give_up)  # a newer schema, a refused migration
        self._fatal: SchedulerDaemonError | None = None  # why the daemon stopped itself
        self._scheduler = Scheduler(
            clock=self._clock, dispatch=self._dispatch, on_jump=self._recovery.on_clock_jump
        )
        self.jobs = JobSet(
            config,
            clock=self._clock,
            scheduler=self._scheduler,
            limiter=self._limiter,
            metrics=self.metrics,
            database=self.database,
            blocks=blocks or JobBlocks(),
        )
        self.database.on_connect(self._database_lock.on_connect)  # before any schema change
        self.database.on_connect(self._schema.on_connect)
        self.database.on_connect(self.api_jobs.reread)  # before recovery: it catches them up
        self.database.on_connect(self._recovery.on_connect)
        self.metrics.live = self._live_state()
        self._pruner = Pruner(  # retention (operation/retention.py)
            clock=self._clock,
            connect=self.database.connection,
            ready=lambda: self._recovery.done and self.database.connected,
            settings=lambda: self.config.retention,
        )
        self.metrics.pruned = self._pruner.totals

    def _build_recovery(self, config: Config) -> None:
        """What starts fires besides the schedule: one-off runs, recovery after a crash or an
        outage (abandoned attempts, catch-up), and in cluster mode the takeover of others'."""
        claims = self.cluster.claims if self.cluster is not None else None
        self._oneoff = OneOffRuns(
            clock=self._clock,
            database=self.database,
            job=lambda name: self.jobs.job(name),
            submit=self._runner.submit,
            rules=lambda: self.jobs.api.rules,
        )
        self._recovery = Recovery(
            clock=self._clock,
            runner=self._runner,
            recorder=self._recorder,
            node=config.node,
            jobs=lambda: self.jobs.all,
            pauses=self._pauses,
            runs=self._oneoff,
            sync_jobs=lambda pool: self.jobs.sync(pool),
            starts=self._starts,
            claims=claims,
        )
        if self.cluster is not None:
            self.cluster.attach(
                self._runner,
                jobs=lambda: self.jobs.all,
                runs=self._oneoff,
                ready=lambda: self._recovery.done,
                metrics=self.metrics,
            )

    def _build_recording(self, config: Config) -> None:
        """The database, and what writes executions to it (and to disk before it)."""
        # The recorder connects in the background: a database that is down at start delays the
        # rows, never the schedule. Each (re)connection upgrades the schema and syncs the jobs.
        self.database = open_database(config, clock=self._clock)
        self._recorder = Recorder(
            database=self.database,
            clock=self._clock,
            journal=self._journal,
            events=config.events,
            buffer_bytes=config.record_buffer,
        )
        # Each attempt's start is on disk before its action begins (README: crash).
        self._starts = StartLog(
            config.state_dir / "journal", rows=self._recorder, clock=self._clock
        )
        self._recorder.on_durable = self._starts.rows_durable

    def _build_running(self, config: Config) -> None:
        """What runs attempts: the runner, its slots and actions, and in cluster mode the claims
        each attempt takes first (cluster.py)."""
        self._http = HttpClient()
        self._job_threads = job_threads()
        self._limiter = Limiter(config.max_concurrency)
        self.cluster = (
            Cluster(
                config,
                clock=self._clock,
                database=self.database,
                limiter=self._limiter,
                on_refused=self._give_up,
            )
            if config.cluster.enabled
            else None
        )
        self._runner = Runner(
            clock=self._clock,
            limiter=self._limiter,
            recorder=self._recorder,
            action_for=ActionCache(self._http, self._job_threads),
            node=config.node,
            observer=self.metrics,
            starts=self._starts,
            claims=self.cluster.claims if self.cluster is not None else None,
            chains=Chains(lambda name: self.jobs.job(name), self._clock.time, self._pauses),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        # First: a SIGHUP or SIGTERM during start-up must not kill us with the default action.
        self._install_signal_handlers()
        self._state_lock.acquire()  # before anything: the embedded server, recovery, a fire
        unwritten: int | None = None
        try:
            async with self.database:
                await self._database_lock.try_at_start()
                if self._database_lock.held:  # reachable: an unusable schema refuses the start
                    await self._schema.at_start(self.database.dsn)
                if self.membership is not None:  # a name clash refuses the start, like the lock
                    await self.membership.start()
                self._pauses.load_cache()  # before any connection brings the database's view
                await self.jobs.start(database_reached=self._database_lock.held)
                await self._start_admin()
                await self._starts.start()
                self._start_schedule()
                self.jobs.save_blocks()
                # Only now: the first connection's recovery needs the instant the schedule
                # resumed at, and syncs each job's next fire.
                await self._recorder.start()
                try:
                    await self._serve()
                finally:
                    unwritten = await self._shutdown()
                    await self._database_lock.release()
        finally:
            if self.membership is not None:  # a start that failed after registering
                await self.membership.stop()
            await self._database_lock.release()
            self._state_lock.release()
            if unwritten is not None:  # the database and its server are closed by now
                log.info("daemon_stopped", unwritten_records=unwritten)
                self._notify.close()
        if self._fatal is not None:
            raise self._fatal
        return 0

    def _give_up(self, why: SchedulerDaemonError) -> None:
        """Stop the daemon, then fail with ``why`` (another daemon took the database, or its
        schema cannot be used)."""
        self._fatal = why
        self._stop.set()

    async def _start_admin(self) -> None:
        settings = self.config.admin
        if settings is None:
            return
        try:
            self._admin = await admin.start_server(self, settings)
        except OSError as exc:
            # Nothing has run yet (the database is closed on the way out): say why, without a
            # traceback.
            raise AdminUnavailable(
                f"admin: cannot listen on {settings.address}: {exc.strerror or exc}"
            ) from None

    def _start_schedule(self) -> None:
        config = self.config
        # The config and jobs live as long as the process: keep them out of every GC pass. Done
        # before the first fire is computed, so this one full collection delays none.
        gc.collect()
        gc.freeze()
        # A fire's objects (task, frames, rows) live until it ends, so the default thresholds
        # (700, 10, 10) collect over and over what cannot be garbage yet: at 3,000 fires/s that
        # took ~1.5 s of every 25 s, ~0.3 s with these (cycles are still freed within seconds).
        gc.set_threshold(*GC_THRESHOLDS)
        # Fires up to this instant that never ran are the catch-up's; the schedule starts after.
        resumed_at = self._recovery.resumed_at = self._now()
        jobs = self.jobs.all
        self._scheduler.set_jobs(jobs, after=resumed_at)
        starting = [
            job for job in jobs if job.run_on_start and job.enabled and job.name not in self._pauses
        ]
        if self.cluster is not None:
            self.cluster.run_on_start(starting, resumed_at)  # claimed once connected
        for job in starting if self.cluster is None else ():
            self._runner.submit(job, resumed_at)
        self._loops = {
            name: asyncio.create_task(loop, name=name)
            for name, loop in self._background_loops().items()
        }
        self._notify.ready(self.status_line())
        log.info(
            "daemon_started",
            config=str(config.path),
            state_dir=str(config.state_dir),
            jobs=len(jobs),
            max_concurrency=config.max_concurrency,
            database="url" if config.database_url else "embedded",
        )

    def _background_loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Each runs until stopped; one that ends on its own stops the daemon (``_serve``)."""
        return {
            **(self.cluster.loops() if self.cluster is not None else {}),
            "scheduler": self._scheduler.run(),
            "heartbeat": self._notify.heartbeat(self._clock, self.status_line),
            "watch-controls": watch_controls(
                clock=self._clock,
                database=self.database,
                ready=lambda: self._recovery.done,
                pauses=self._pauses,
                runs=self._oneoff,
            ),
            "fold-metrics": self.metrics.fold_when_quiet(
                self._clock, lambda: self._runner.attempts_started
            ),
            "announce-running": self._runner.announce_running_every(),
            "prune-history": self._pruner.run(),
            "follow-api-jobs": follow_changes(
                clock=self._clock,
                dsn=lambda: self.database.dsn,
                ready=lambda: self._recovery.done and self.database.pool is not None,
                reread=self.jobs.reread,
            ),
            "next-runs": keep_next_runs_current(
                clock=self._clock,
                database=self.database,
                ready=lambda: self._recovery.done,
                schedule=self._scheduler,
                owned=self.cluster.ownership if self.cluster is not None else None,
            ),
        }

    async def _serve(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload_requested.wait())
            waits = (stop, reload, *self._loops.values())
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            for name, task in self._loops.items():
                if task.done():  # a loop must never end on its own: surface why it did
                    error = None if task.cancelled() else task.exception()
                    log.error("background_task_died", task=name, error=repr(error))
                    raise RuntimeError(f"the {name} loop ended unexpectedly") from error
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                await self.reload()

    async def _shutdown(self) -> int:
        """Stop in order, within the grace; the rows left unwritten."""
        grace = self.config.shutdown_grace
        budget = stop_budget(self.config, self.jobs.all)
        log.info("daemon_stopping", grace_s=grace, budget_s=round(budget, 1))
        self._notify.stopping(
            f"stopping: draining {len(self._runner.active())} running fires", needs=budget
        )
        self._scheduler.stop()
        if self.membership is not None:
            await self.membership.leave()  # no fire is routed to us any more
        # The membership loop heartbeats through the drain: our attempts are not abandoned.
        loops = {name: task for name, task in self._loops.items() if name != MEMBERSHIP}
        for name, task in loops.items():
            if name != "scheduler":  # stop() ends its loop between two fires
                task.cancel()
        await self._recovery.close()  # catch-up sequences: their running fires are drained below
        await asyncio.gather(*loops.values(), return_exceptions=True)
        await self._oneoff.close()  # pending runs stay in the database for the next start
        await self._runner.drain(grace)
        # A plain function still running past the grace cannot be stopped: it is left behind.
        self._job_threads.shutdown(wait=False, cancel_futures=True)
        await self._stop_membership()
        if self._admin is not None:
            await self._admin.cleanup()  # kept up while draining: operators watch the drain
        unwritten = await self._recorder.close(timeout=FLUSH_TIMEOUT)
        await self._starts.close()  # after the recorder: the files of attempts with rows go
        await self._http.close()
        return unwritten

    async def _stop_membership(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop(self._loops.get(MEMBERSHIP))

    def status_line(self) -> str:
        """One line for systemd's STATUS= (and `systemctl status`)."""
        parts = [
            f"{len(self.jobs)} jobs",
            f"{len(self._runner.active())} running",
            f"{self._recorder.pending} records pending",
        ]
        if self.reload_error:  # its text quotes the config: STATUS is readable by every user
            parts.append("last reload FAILED, see the log")
        return ", ".join(parts)

    # -- signals and reload --------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        # Handlers only set events; everything else happens in the loop, between two awaits.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)

    def request_stop(self, why: str = "requested") -> None:
        first = not self._stop.is_set()
        self._stop.set()  # before anything that could fail: a signal handler must not
        if first:
            log.info("stop_requested", signal=why)

    async def reload(self) -> bool:
        """Re-read the config file; apply it only if it is entirely valid (job_set.py)."""
        self._notify.reloading()
        try:
            return await self.jobs.reload()
        finally:
            self._notify.ready(self.status_line())

    # -- operator controls (the admin API's ``Controlled``) ------------------------------------

    @property
    def membership(self) -> Membership | None:
        return self.cluster.membership if self.cluster is not None else None

    @property
    def config(self) -> Config:
        """The file's settings and jobs, as they run (`all_jobs`: the database's too)."""
        return self.jobs.config

    @property
    def all_jobs(self) -> tuple[JobSpec, ...]:
        return self.jobs.all

    def job(self, name: str) -> JobSpec | None:
        return self.jobs.job(name)

    @property
    def reload_error(self) -> str | None:
        return self.jobs.reload_error

    @property
    def api_jobs(self) -> ApiJobs:
        return self.jobs.api

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def running(self, job: str) -> list[Fire]:
        return self._runner.active(job)

    def paused(self) -> Mapping[str, datetime]:
        return self._pauses

    def _dispatch(self, job: JobSpec, fire_at: datetime) -> None:
        if job.name in self._pauses:
            return  # a paused job's fires are not run and not recorded; resume picks up from now
        if self.cluster is not None:
            self.cluster.dispatch(job, fire_at)  # claimed first: run here only if we win it
        else:
            self._runner.submit(job, fire_at)

    async def set_paused(self, job: str, paused: bool) -> datetime | None:
        pool = self.database.require("the pause would not persist")
        return await self._pauses.set(pool, job, paused)

    def trigger(self, job: JobSpec, overrides: Mapping[str, Any] | None) -> Fire | None:
        """Run ``job`` now, as a manual fire (paused or not: the operator asked for it)."""
        return self._runner.submit(job, self._now(), trigger=FireKind.MANUAL, overrides=overrides)

    async def create_run(
        self,
        job: JobSpec,
        at: datetime,
        overrides: Mapping[str, Any] | None,
        setup: RunSetup | None = None,
    ) -> OneOffRun:
        pool = self.database.require("the run would not persist")
        return await self._oneoff.create(pool, job, at, overrides, setup)

    async def cancel_run(self, run_id: uuid.UUID) -> OneOffRun | None:
        return await self._oneoff.cancel(self.database.require("the run is left as it is"), run_id)

    def _live_state(self) -> LiveState:
        return LiveState.of(
            runner=self._runner,
            limiter=self._limiter,
            recorder=self._recorder,
            journal=self._journal.path,
            jobs=lambda: self.jobs.all,
            paused=self._pauses,
            cluster=None if self.cluster is None else self.cluster.gauges,
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)


def run_daemon(config_path: Path) -> int:
    blocks = JobBlocks()
    config = load_checked(config_path, import_targets=True, blocks=blocks)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(Daemon(config, blocks=blocks).run())
    return uvloop.run(Daemon(config, blocks=blocks).run())
