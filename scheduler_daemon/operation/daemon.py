"""Wiring and lifecycle: database, recorder, scheduler; reload on SIGHUP; drain on stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from scheduler_daemon.errors import AdminUnavailable, ConfigError
from scheduler_daemon.operation import admin, recovery
from scheduler_daemon.operation.metrics import LiveState, Metrics
from scheduler_daemon.operation.notify import Notifier
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.running.actions import Action, build_action
from scheduler_daemon.running.actions.http import HttpClient
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.running.runner import Fire, Runner
from scheduler_daemon.specs import AdminSpec, Config, JobSpec, load_config
from scheduler_daemon.storage import queries, store
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from scheduler_daemon.storage.journal import Journal
from scheduler_daemon.storage.queries import OneOffRun
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.timing.clock import Clock, SystemClock
from scheduler_daemon.timing.scheduler import Scheduler

log = structlog.get_logger("scheduler_daemon.operation.daemon")


class ActionCache:
    """One Action per job spec, built on first use and rebuilt when the spec changes."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http
        self._actions: dict[str, tuple[JobSpec, Action]] = {}

    def __call__(self, job: JobSpec) -> Action:
        cached = self._actions.get(job.name)
        if cached is not None and cached[0] is job:
            return cached[1]
        action = build_action(job, http=self._http)
        self._actions[job.name] = (job, action)
        return action


class Daemon:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self._clock: Clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._embedded: EmbeddedPostgres | None = None
        self._notify = Notifier()
        self._recovered = False
        self.reload_error: str | None = None  # why the last reload was refused, if it was
        self.started_at = datetime.now(UTC)
        self.metrics = Metrics()
        # Paused jobs (name → since when): PostgreSQL is the truth; a copy in state_dir lets a
        # restart honour pauses before the database answers.
        self._paused: dict[str, datetime] = {}
        self._admin: web.AppRunner | None = None
        self._journal = Journal(config.state_dir / "journal" / "executions.jsonl")

    # -- entry point ---------------------------------------------------------------------------

    async def run(self) -> int:
        config = self.config
        # First: a SIGHUP or SIGTERM during start-up must not kill us with the default action.
        self._install_signal_handlers()
        dsn = await self._database_dsn()
        # The recorder connects in the background: a database that is down at start delays the
        # rows, never the schedule. Each (re)connection applies the schema and syncs the jobs.
        self._recorder = Recorder(
            dsn=dsn,
            clock=self._clock,
            on_connect=self._on_db_connect,
            journal=self._journal,
            events=config.events,
        )
        await self._recorder.start()
        self._http = HttpClient()
        self._limiter = Limiter(config.max_concurrency)
        self._runner = Runner(
            clock=self._clock,
            limiter=self._limiter,
            recorder=self._recorder,
            action_for=ActionCache(self._http),
            node=config.node,
            observer=self.metrics,
        )
        self._scheduler = Scheduler(
            clock=self._clock, dispatch=self._dispatch, on_jump=self._on_clock_jump
        )
        self._oneoff = OneOffRuns(clock=self._clock, start=self._start_run)
        self._paused = self._read_paused_cache()
        self.metrics.live = self._live_state()
        if config.admin is not None:
            await self._start_admin(config.admin)
        # The config and jobs live as long as the process: keep them out of every GC pass. Done
        # before the first fire is computed, so this one full collection delays none.
        gc.collect()
        gc.freeze()
        # Fires up to this instant that never ran are the catch-up's; the schedule starts after.
        self._resumed_at = datetime.fromtimestamp(self._clock.time(), UTC)
        self._scheduler.set_jobs(config.jobs, after=self._resumed_at)
        self._background: list[asyncio.Task[None]] = []
        for job in config.jobs:
            if job.run_on_start and job.enabled and job.name not in self._paused:
                self._runner.submit(job, self._resumed_at)
        scheduler_task = asyncio.create_task(self._scheduler.run(), name="scheduler")
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        controls = asyncio.create_task(self._watch_controls(), name="watch-controls")
        folder = asyncio.create_task(self._fold_metrics(), name="fold-metrics")
        announcer = asyncio.create_task(self._announce_running(), name="announce-running")
        self._notify.ready(self.status_line())
        log.info(
            "daemon_started",
            config=str(config.path),
            jobs=len(config.jobs),
            max_concurrency=config.max_concurrency,
            database="embedded" if self._embedded else "url",
        )
        try:
            await self._serve(scheduler_task)
        finally:
            heartbeat.cancel()
            announcer.cancel()
            controls.cancel()
            folder.cancel()
            await self._shutdown(scheduler_task)
        return 0

    def _on_clock_jump(self, job: JobSpec, first_skipped: datetime, now: datetime) -> None:
        task = recovery.catch_up_job(
            job,
            last=first_skipped - timedelta(microseconds=1),
            until=now,
            now=now,
            runner=self._runner,
            recorder=self._recorder,
            node=self.config.node,
            why="the wall clock jumped forward",
        )
        if task is not None:
            self._background = [t for t in self._background if not t.done()]
            self._background.append(task)

    def status_line(self) -> str:
        """One line for systemd's STATUS= (and `systemctl status`)."""
        parts = [
            f"{len(self.config.jobs)} jobs",
            f"{len(self._runner.active())} running",
            f"{self._recorder.pending} records pending",
        ]
        if self.reload_error:
            parts.append(f"last reload FAILED: {self.reload_error}")
        return ", ".join(parts)

    async def _announce_running(self) -> None:
        """Make attempt starts durable in batches: the crash-recovery window is this period."""
        while True:
            await self._clock.sleep(RUNNING_ROWS_EVERY)
            self._runner.announce_running()

    async def _start_admin(self, settings: AdminSpec) -> None:
        try:
            self._admin = await admin.start_server(self, settings)
        except OSError as exc:
            # Nothing has run yet: undo the start-up so far and say why, without a traceback.
            await self._recorder.close(timeout=5.0)
            if self._embedded is not None:
                await self._embedded.astop()
            raise AdminUnavailable(
                f"admin: cannot listen on {settings.address}: {exc.strerror or exc}"
            ) from None

    async def _fold_metrics(self) -> None:
        """Fold the metrics' reports a chunk at a time while no fire is starting: folding in the
        middle of a burst delays its later fires. A backlog past METRICS_FOLD_BACKLOG is folded
        anyway (sustained load), still a chunk per turn of the loop."""
        while True:
            await self._clock.sleep(METRICS_FOLD_EVERY)
            more = True
            while more:
                starts = self._runner.attempts_started
                await self._clock.sleep(METRICS_QUIET)
                busy = self._runner.attempts_started != starts
                if busy and self.metrics.backlog() < METRICS_FOLD_BACKLOG:
                    continue
                more = self.metrics.fold(METRICS_FOLD_CHUNK)

    async def _watch_controls(self) -> None:
        """Pick up pauses and one-off runs written to the database by others (the CLI without
        the admin API, another replica); the admin API applies its own at once."""
        while True:
            await self._clock.sleep(CONTROL_POLL)
            pool = self._recorder.pool
            if pool is None or not self._recovered:
                continue
            try:
                paused = await queries.paused_jobs(pool)
                runs = await queries.pending_runs(pool)
            except store.DB_ERRORS as exc:
                log.debug("controls_not_read", error=str(exc))
                continue
            if paused != self._paused:
                log.info("paused_jobs_changed", paused=sorted(paused))
                self._set_paused_state(paused)
            self._oneoff.schedule(runs)

    async def _heartbeat(self) -> None:
        """Pings the systemd watchdog: a task on the loop, so a blocked loop stops the pings."""
        interval = self._notify.watchdog_interval or 10.0
        while True:
            self._notify.watchdog()
            self._notify.status(self.status_line())
            await self._clock.sleep(min(interval, 10.0))

    async def _serve(self, scheduler_task: asyncio.Task[None]) -> None:
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload_requested.wait())
            await asyncio.wait((stop, reload, scheduler_task), return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if scheduler_task.done():
                scheduler_task.result()  # the loop must never end on its own: surface why it did
                raise RuntimeError("scheduler loop ended unexpectedly")
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                await self.reload()

    async def _shutdown(self, scheduler_task: asyncio.Task[None]) -> None:
        log.info("daemon_stopping", grace_s=self.config.shutdown_grace)
        self._notify.stopping(f"stopping: draining {len(self._runner.active())} running fires")
        self._scheduler.stop()
        for task in self._background:
            task.cancel()  # catch-up sequences: their running fires are drained below
        await asyncio.gather(scheduler_task, *self._background, return_exceptions=True)
        await self._oneoff.close()  # pending runs stay in the database for the next start
        await self._runner.drain(self.config.shutdown_grace)
        if self._admin is not None:
            await self._admin.cleanup()  # kept up while draining: operators watch the drain
        unwritten = await self._recorder.close(timeout=max(5.0, self.config.shutdown_grace))
        await self._http.close()
        if self._embedded is not None:
            await self._embedded.astop()
        log.info("daemon_stopped", unwritten_records=unwritten)
        self._notify.close()

    # -- database ------------------------------------------------------------------------------

    async def _database_dsn(self) -> str:
        if self.config.database_url:
            return self.config.database_url
        self._embedded = EmbeddedPostgres(self.config.state_dir / "postgres")
        dsn = await self._embedded.astart()
        log.info(
            "embedded_postgres_started",
            data_dir=str(self._embedded.data_dir),
            psql=f"psql 'host={self._embedded.socket_dir} user=postgres dbname=postgres'",
        )
        return dsn

    async def _on_db_connect(self, pool: asyncpg.Pool) -> None:
        await store.apply_schema(pool)
        if self._recovered:
            await self._sync_jobs(pool)
            log.info("database_connected")
            return
        # First connection of this process: before any row of ours is written, settle what the
        # previous process left behind. Its journal first: rows in it are attempts that ended
        # (not abandoned) and fires that ran (not to catch up) — read after, they ran twice.
        await self._recorder.replay_journal(pool)
        abandoned = await store.abandon_running(pool, self.config.node)
        last = await store.last_scheduled(pool)
        await self._sync_jobs(pool)
        self._set_paused_state(await queries.paused_jobs(pool))
        self._oneoff.schedule(await queries.pending_runs(pool))
        self._recovered = True
        log.info("database_connected", abandoned=len(abandoned))
        jobs = {job.name: job for job in self.config.jobs}
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        recovery.retry_abandoned(abandoned, jobs, self._runner, now)
        self._background += recovery.catch_up(
            [job for job in self.config.jobs if job.name not in self._paused],
            last,
            resumed_at=self._resumed_at,
            now=now,
            runner=self._runner,
            recorder=self._recorder,
            node=self.config.node,
        )

    async def _sync_jobs(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        changed: Sequence[JobSpec] | None = None,
        removed: Sequence[str] | None = None,
    ) -> None:
        """Mirror the jobs in the database: all of them, or after a reload just what changed."""
        pool = pool or self._recorder.pool
        if pool is None:
            return  # not connected: the next connection syncs the then-current jobs
        jobs = self.config.jobs if changed is None else changed
        next_runs = {job.name: self._scheduler.next_fire(job.name) for job in jobs}
        await store.sync_jobs(pool, jobs, next_runs, removed=removed)

    # -- signals and reload --------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        # Handlers only set events; everything else happens in the loop (DESIGN §4.6).
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
        """Re-read the config file; apply it only if it is entirely valid."""
        self._notify.reloading()
        try:
            applied = await self._reload()
        finally:
            self._notify.ready(self.status_line())
        return applied

    async def _reload(self) -> bool:
        began = time.monotonic()
        try:
            new = await asyncio.to_thread(_load_and_hash, self.config.path)
        except ConfigError as exc:
            self.reload_error = f"{len(exc.problems)} error(s): {exc.problems[0]}"
            self.metrics.reloads["failed"] += 1
            log.error("reload_failed", problems=exc.problems)
            return False
        self.reload_error = None
        self.metrics.reloads["succeeded"] += 1
        loaded = time.monotonic()
        old_jobs = {job.name: job for job in self.config.jobs}
        new_jobs = {job.name: job for job in new.jobs}
        added = new_jobs.keys() - old_jobs.keys()
        removed = old_jobs.keys() - new_jobs.keys()
        changed = {
            name
            for name in new_jobs.keys() & old_jobs.keys()
            if old_jobs[name].spec_hash() != new_jobs[name].spec_hash()
        }
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        for name in removed:
            self._scheduler.remove(name)
            self.metrics.forget_job(name)
        for name in added | changed:
            self._scheduler.add(new_jobs[name], after=now)
        self._limiter.resize(new.max_concurrency)
        # Unchanged jobs keep their spec object, so their scheduled entries and actions stay valid.
        jobs = tuple(new_jobs[n] if n in added | changed else old_jobs[n] for n in new_jobs)
        self.config = new.model_copy(update={"jobs": jobs, **self._restart_only(new)})
        try:
            await self._sync_jobs(
                changed=[new_jobs[n] for n in added | changed], removed=sorted(removed)
            )
        except store.DB_ERRORS as exc:
            log.warning("jobs_sync_failed", error=str(exc))  # retried at the next connection
        log.info(
            "reload_succeeded",
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            load_s=round(loaded - began, 3),
            apply_s=round(time.monotonic() - loaded, 3),
        )
        return True

    def _restart_only(self, new: Config) -> dict[str, object]:
        """Settings a reload cannot change: keep the running values and say so."""
        kept = {
            key: getattr(self.config, key)
            for key in RESTART_ONLY
            if getattr(self.config, key) != getattr(new, key)
        }
        if kept:
            log.warning("reload_needs_restart", settings=sorted(kept))
        return kept

    # -- operator controls (admin API) ---------------------------------------------------------

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def running(self, job: str) -> list[Fire]:
        return self._runner.active(job)

    def paused(self) -> Mapping[str, datetime]:
        return self._paused

    def _dispatch(self, job: JobSpec, fire_at: datetime) -> None:
        if job.name in self._paused:
            return  # a paused job's fires are not run and not recorded; resume picks up from now
        self._runner.submit(job, fire_at)

    async def set_paused(self, job: str, paused: bool) -> datetime | None:
        """Persist first (a pause must survive a restart), then apply."""
        since = await queries.set_paused(self._pool("the pause would not persist"), job, paused)
        state = dict(self._paused)
        if since is None:
            state.pop(job, None)
        else:
            state[job] = since
        self._set_paused_state(state)
        log.info("job_paused" if paused else "job_resumed", job=job)
        return since

    def _pool(self, consequence: str) -> asyncpg.Pool:
        """The recorder's pool for an operator's change; ConnectionError (a 503) when away."""
        pool = self._recorder.pool
        if pool is None:
            raise ConnectionError(f"the database is unavailable: {consequence}")
        return pool

    def _set_paused_state(self, paused: dict[str, datetime]) -> None:
        self._paused = paused
        cache = self._paused_cache()
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: v.isoformat() for k, v in paused.items()}))
            tmp.replace(cache)
        except OSError as exc:
            log.warning("paused_cache_not_written", path=str(cache), error=str(exc))

    def _read_paused_cache(self) -> dict[str, datetime]:
        try:
            data = json.loads(self._paused_cache().read_text())
            return {str(k): datetime.fromisoformat(v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("paused_cache_unreadable", path=str(self._paused_cache()), error=str(exc))
            return {}

    def _paused_cache(self) -> Path:
        return self.config.state_dir / "paused.json"

    def trigger(self, job: JobSpec, overrides: Mapping[str, Any] | None) -> Fire | None:
        """Run ``job`` now, as a manual fire (paused or not: the operator asked for it)."""
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        return self._runner.submit(job, now, trigger=FireKind.MANUAL, overrides=overrides)

    async def create_run(
        self, job: JobSpec, at: datetime, overrides: Mapping[str, Any] | None
    ) -> OneOffRun:
        run = await queries.create_run(
            self._pool("the run would not persist"), job.name, at, overrides
        )
        self._oneoff.schedule([run])
        log.info("oneoff_run_created", run_id=str(run.id), job=job.name, run_at=at.isoformat())
        return run

    async def cancel_run(self, run_id: uuid.UUID) -> OneOffRun | None:
        run = await queries.cancel_run(self._pool("the run is left as it is"), run_id)
        if run is not None and run.state == "cancelled":
            self._oneoff.cancel(run_id)
        return run

    async def _start_run(self, run: OneOffRun) -> None:
        """Claim the run in the database, then hand it to the runner (retried while it is away)."""
        claimed: bool | None = None
        while claimed is None:
            pool = self._recorder.pool
            if pool is not None:
                with contextlib.suppress(*store.DB_ERRORS):
                    claimed = await queries.mark_run_started(pool, run.id)
            if claimed is None:
                await self._clock.sleep(RUN_CLAIM_RETRY)
        if not claimed:
            return  # cancelled meanwhile, or started by an earlier process
        job = self.config.job(run.job_name)
        if job is None:
            log.warning("oneoff_run_dropped", run_id=str(run.id), job=run.job_name,
                        why="the job is no longer configured")  # fmt: skip
            return
        self._runner.submit(
            job, run.run_at, trigger=FireKind.MANUAL, overrides=run.overrides, fire_id=run.id
        )

    def _live_state(self) -> LiveState:
        def jobs_by_state() -> dict[str, int]:
            jobs = self.config.jobs
            paused = sum(1 for job in jobs if job.name in self._paused)
            enabled = sum(1 for job in jobs if job.enabled)
            return {"enabled": enabled, "disabled": len(jobs) - enabled, "paused": paused}

        def journal_bytes() -> int:
            try:
                return self._journal.path.stat().st_size
            except OSError:
                return 0

        return LiveState(
            running_attempts=lambda: sum(
                1 for fire in self._runner.active() if fire.state == "running"
            ),
            waiting_fires=self._limiter.waiting,  # type: ignore[arg-type]
            recorder_stats=self._recorder.stats,
            journal_bytes=journal_bytes,
            database_up=lambda: self._recorder.connected,
            jobs_by_state=jobs_by_state,
        )


RUN_CLAIM_RETRY = 5.0
METRICS_FOLD_EVERY = 0.5
METRICS_FOLD_CHUNK = 500
METRICS_QUIET = 0.005  # no attempt started for this long: the loop has time to spare
METRICS_FOLD_BACKLOG = 20_000
# How often pauses and one-off runs written by others (the CLI, without the API) are re-read.
CONTROL_POLL = 2.0

# How often attempts in flight get their `running` row (see README: crash recovery window).
RUNNING_ROWS_EVERY = 0.2

# The database connection, its files and this node's identity are fixed for a process's life.
RESTART_ONLY = ("database", "state_dir", "node", "admin", "events")


def _load_and_hash(path: Path) -> Config:
    """Load a config and digest every job, in the reload's worker thread: hashing 100k specs on
    the event loop blocked it for seconds (the comparison itself is then a string compare)."""
    config = load_config(path)
    for job in config.jobs:
        job.spec_hash()
    return config


def run_daemon(config_path: Path) -> int:
    config = load_config(config_path)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(Daemon(config).run())
    return uvloop.run(Daemon(config).run())
