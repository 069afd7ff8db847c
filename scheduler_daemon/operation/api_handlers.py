"""What the admin API's endpoints do: read the running daemon and drive it.

Each handler gets its query string already checked (the route's model, see admin.py) and answers
with a response model (api_models.py); a refusal is an ApiError with a stable code. ``Controlled``
is all a handler may touch of the daemon, so tests can pass a stand-in.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import structlog
from aiohttp import web
from pydantic import BaseModel

from scheduler_daemon.operation import api_models as m
from scheduler_daemon.operation.adhoc import (
    shown_spec,
)
from scheduler_daemon.operation.api_jobs import ApiJobs
from scheduler_daemon.operation.api_models import ApiError
from scheduler_daemon.operation.health import health
from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.overrides import BadOverrides, runner_overrides
from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.records import FireKind, Status
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.specs.api_job import ApiJobRules
from scheduler_daemon.storage import queries
from scheduler_daemon.storage.nodes import Counts
from scheduler_daemon.storage.queries import OneOffRun
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.store import Row
from scheduler_daemon.timing.schedule_text import schedule_in_words
from scheduler_daemon.timing.scheduler import Scheduler

log = structlog.get_logger("scheduler_daemon.operation.api_handlers")


class ClusterView(Protocol):
    """What /healthz shows of cluster mode (membership.py's Membership)."""

    node: str
    live: tuple[str, ...]

    @property
    def counts(self) -> Mapping[str, Counts]: ...

    @property
    def connected(self) -> bool: ...


class Controlled(Protocol):
    """What the API reads and drives: the running daemon (tests may pass a stand-in)."""

    started_at: datetime
    metrics: Metrics

    @property
    def membership(self) -> ClusterView | None: ...  # cluster mode

    @property
    def config(self) -> Config: ...  # the file's settings and jobs

    @property
    def all_jobs(self) -> tuple[JobSpec, ...]: ...  # the file's and the database's

    def job(self, name: str) -> JobSpec | None: ...

    @property
    def api_jobs(self) -> ApiJobs: ...

    @property
    def reload_error(self) -> str | None: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def recorder(self) -> Recorder: ...

    def running(self, job: str) -> list[Fire]: ...

    def paused(self) -> Mapping[str, datetime]: ...

    async def set_paused(self, job: str, paused: bool) -> datetime | None: ...

    def trigger(self, job: JobSpec, overrides: Mapping[str, Any] | None) -> Fire | None: ...

    async def create_run(
        self,
        job: JobSpec,
        at: datetime,
        overrides: Mapping[str, Any] | None,
        setup: queries.RunSetup | None = None,
    ) -> OneOffRun: ...

    async def cancel_run(self, run_id: uuid.UUID) -> OneOffRun | None: ...


def reply(body: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=body.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


class Api:
    def __init__(self, target: Controlled, *, document: Callable[[], dict[str, Any]]) -> None:
        self.t = target
        self._document = document  # the OpenAPI document, built from the routes

    # -- health and metrics ------------------------------------------------------------------

    async def healthz(self, request: web.Request, query: m.HealthQuery) -> web.Response:
        report = health(self.t)
        # Liveness: 200 while the loop answers. Readiness/alerting: ?ready=1 is 503 when degraded.
        return reply(report, status=503 if query.ready and report.problems else 200)

    async def metrics(self, request: web.Request, query: m.Query) -> web.Response:
        return web.Response(
            body=self.t.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def openapi(self, request: web.Request, query: m.Query) -> web.Response:
        return web.json_response(self._document())

    # -- jobs ------------------------------------------------------------------------------------

    async def list_jobs(self, request: web.Request, query: m.WindowQuery) -> web.Response:
        since = query.start(datetime.now(UTC))
        stats = await self._stats_by_job(since)
        jobs = [self._job_summary(job, stats.get(job.name), 1) for job in self.t.all_jobs]
        return reply(m.JobList(since=since, jobs=jobs))

    async def get_job(self, request: web.Request, query: m.WindowQuery) -> web.Response:
        job = self._job(request)
        since = query.start(datetime.now(UTC))
        stats = await self._stats_by_job(since, job.name)
        summary = self._job_summary(job, stats.get(job.name), 5)
        pool = self._pool_or_none()
        last = await queries.last_attempts(pool, job.name, 10) if pool else None
        running = [
            m.RunningFire(
                fire_id=f.fire_id, scheduled_at=f.scheduled_at, state=f.state, attempt=f.attempt
            )
            for f in self.t.running(job.name)
        ]
        stored = self.t.api_jobs.stored.get(job.name)
        body = m.JobDetail(
            **dict(summary),
            spec=job.redacted(),
            definition=dict(stored.definition) if stored else None,
            created_at=stored.created_at if stored else None,
            updated_at=stored.updated_at if stored else None,
            since=since,
            last_attempts=[_execution(r) for r in last] if last is not None else None,
            running_fires=running,
        )
        response = reply(body)
        if stored is not None:
            response.headers["ETag"] = f'"{stored.version}"'
        return response

    def _job_summary(self, job: JobSpec, stats: Row | None, upcoming: int) -> m.Job:
        paused_at = self.t.paused().get(job.name)
        stored = self.t.api_jobs.stored.get(job.name)
        return m.Job(
            name=job.name,
            source="api" if stored else "config",
            version=stored.version if stored else None,
            kind=job.kind,
            schedule=self.t.scheduler.describe(job.name),
            schedule_in_words=schedule_in_words(job),
            enabled=job.enabled,
            paused=paused_at is not None,
            paused_at=paused_at,
            next_fires=self.t.scheduler.upcoming(job.name, upcoming),
            running=len(self.t.running(job.name)),
            stats=m.JobStats.model_validate(dict(stats)) if stats else None,
        )

    async def _stats_by_job(self, since: datetime, job: str | None = None) -> dict[str, Row]:
        pool = self._pool_or_none()
        if pool is None:
            return {}  # the schedule is still answered while the database is away
        rows = await queries.job_stats(pool, since, job)
        return {row["job_name"]: row for row in rows}

    # -- history ---------------------------------------------------------------------------------

    async def job_executions(self, request: web.Request, query: m.HistoryQuery) -> web.Response:
        return await self._page(query, request.match_info["name"])

    async def executions(self, request: web.Request, query: m.ExecutionsQuery) -> web.Response:
        return await self._page(query, query.job)

    async def _page(self, query: m.HistoryQuery, job: str | None) -> web.Response:
        where = queries.ExecutionFilter(
            job=job,
            status=query.status,
            trigger=query.trigger,
            since=query.since,
            until=query.until,
            fire_id=query.fire_id,
        )
        cursor = cursor_of(query.cursor)  # a bad one is a 400 even while the database is away
        rows, next_cursor = await queries.executions(
            self.pool(), where, after=cursor, limit=query.limit
        )
        return reply(
            m.ExecutionPage(
                executions=[_execution(r) for r in rows],
                next_cursor=next_cursor.encode() if next_cursor else None,
            )
        )

    async def stats(self, request: web.Request, query: m.WindowQuery) -> web.Response:
        since = query.start(datetime.now(UTC))
        pool = self.pool()
        kinds = {job.name: job.kind for job in self.t.all_jobs}
        per_job = [
            m.JobStatsOfKind.model_validate({**row, "kind": kinds.get(row["job_name"])})
            for row in await queries.job_stats(pool, since)
        ]  # kind None: no longer configured
        minutes = [
            m.Minute.model_validate(dict(r)) for r in await queries.runs_per_minute(pool, since)
        ]
        runs = sum(r.runs for r in per_job)
        succeeded = sum(r.succeeded for r in per_job)
        totals = m.Totals(
            runs=runs,
            succeeded=succeeded,
            failed=sum(r.failed for r in per_job),
            skipped=sum(r.skipped for r in per_job),
            success_rate=round(succeeded / runs, 4) if runs else None,
        )
        times = [
            m.ResponseTimes(
                job_name=r.job_name,
                avg_duration_ms=r.avg_duration_ms,
                p95_duration_ms=r.p95_duration_ms,
                runs=r.runs,
            )
            for r in per_job
            if r.kind == "http"
        ]
        return reply(
            m.StatsReport(
                since=since,
                totals=totals,
                jobs=per_job,
                http_response_times=times,
                per_minute=minutes,
            )
        )

    # -- actions ---------------------------------------------------------------------------------

    async def trigger(self, request: web.Request, query: m.Query) -> web.Response:
        job = self._job(request)
        overrides = overrides_of(job, await body_of(request))
        fire = self.start(job, overrides)
        body = m.Triggered(
            fire_id=fire.fire_id,
            job=job.name,
            trigger=FireKind.MANUAL,
            scheduled_at=fire.scheduled_at,
            executions=f"/executions?fire_id={fire.fire_id}",
        )
        return reply(body, status=202)

    def start(self, job: JobSpec, overrides: dict[str, Any] | None) -> Fire:
        """Run ``job`` now (trigger = manual): the API's trigger and the status page's button."""
        fire = self.t.trigger(job, overrides)
        if fire is None:
            raise ApiError(
                409,
                "not_started",
                f"job {job.name!r} did not start: its overlap policy ({job.overlap}) refused "
                "it, or the daemon is shutting down (the refusal is recorded in executions)",
            )
        log.info(
            "manual_trigger", job=job.name, fire_id=str(fire.fire_id), overrides=bool(overrides)
        )
        return fire

    async def pause(self, request: web.Request, query: m.Query) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request, query: m.Query) -> web.Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        job = self._job(request)
        paused_at = await self.change_pause(job, paused)
        return reply(m.PauseState(job=job.name, paused=paused_at is not None, paused_at=paused_at))

    async def change_pause(self, job: JobSpec, paused: bool) -> datetime | None:
        """Pause or resume ``job`` (persisted); its pause time, or None once resumed."""
        self.pool()  # refused up front while the database is away: a pause must persist
        try:
            return await self.t.set_paused(job.name, paused)
        except LookupError:
            raise ApiError(
                503, "not_synced", f"job {job.name!r} is not in the database yet; try again"
            ) from None

    # -- one-off runs ----------------------------------------------------------------------------

    async def list_runs(self, request: web.Request, query: m.RunsQuery) -> web.Response:
        runs = await queries.list_runs(self.pool(), pending_only=query.pending, limit=query.limit)
        # In a thread: an ad-hoc run's spec is its job built again (~0.2 ms; 500 in a page).
        bodies = await asyncio.to_thread(lambda: [self.run_body(r) for r in runs])
        return reply(m.RunList(runs=bodies))

    async def get_run(self, request: web.Request, query: m.Query) -> web.Response:
        run_id = _run_id(request)  # a malformed id is a 404 even while the database is away
        pool = self.pool()
        run = await queries.get_run(pool, run_id)
        if run is None:
            raise ApiError(404, "unknown_run", "no such run")
        outcome = await self._outcome(pool, run) if run.state == "started" else None
        return reply(m.RunDetail(**dict(self.run_body(run)), outcome=outcome))

    async def _outcome(self, pool: asyncpg.Pool, run: OneOffRun) -> m.RunOutcome | None:
        row = await queries.run_outcome(pool, run.id)
        if row is None:
            return None
        outcome = m.RunOutcome.model_validate(dict(row))
        # Between attempts the last row is a failure that a retry may still turn around.
        if any(fire.fire_id == run.id for fire in self.t.running(run.job_name)):
            outcome = outcome.model_copy(update={"status": Status.RUNNING})
        return outcome

    async def cancel_run(self, request: web.Request, query: m.Query) -> web.Response:
        run_id = _run_id(request)
        self.pool()
        run = await self.t.cancel_run(run_id)
        if run is None:
            raise ApiError(404, "unknown_run", "no such run")
        if run.state == "started":
            raise ApiError(409, "already_started", "the run has started; it cannot be cancelled")
        return reply(self.run_body(run))

    # -- helpers ---------------------------------------------------------------------------------

    def run_body(self, run: OneOffRun) -> m.Run:
        return _run(run, self.t.api_jobs.rules)

    def _job(self, request: web.Request) -> JobSpec:
        return self.job_named(request.match_info["name"])

    def job_named(self, name: str) -> JobSpec:
        job = self.t.job(name)
        if job is None:
            raise ApiError(404, "unknown_job", f"no job named {name!r} is configured")
        return job

    def pool(self) -> asyncpg.Pool:
        pool = self._pool_or_none()
        if pool is None:
            raise ApiError(
                503,
                "database_unavailable",
                "the database is unavailable; executions are buffered and written when it returns",
            )
        return pool

    def _pool_or_none(self) -> asyncpg.Pool | None:
        recorder = self.t.recorder
        return recorder.pool if recorder.connected else None


def _execution(row: Row) -> m.Execution:
    return m.Execution.model_validate(dict(row))


def cursor_of(text: str | None) -> queries.Cursor | None:
    """A page's ``cursor`` parameter: where the previous page ended."""
    try:
        return queries.Cursor.decode(text) if text else None
    except queries.BadCursor as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None


def _run(run: OneOffRun, rules: ApiJobRules) -> m.Run:
    options = run.options
    return m.Run(
        id=run.id,
        job=run.job_name,
        run_at=run.run_at,
        overrides=dict(run.overrides) if isinstance(run.overrides, Mapping) else None,
        spec=shown_spec(run.job, run.run_at, run.job_name, rules),
        options=dict(options) if isinstance(options, Mapping) else None,
        state=run.state,
        created_at=run.created_at,
        started_at=run.started_at,
        cancelled_at=run.cancelled_at,
        executions=f"/executions?fire_id={run.id}",
    )


def _run_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise ApiError(404, "unknown_run", "no such run (run ids are UUIDs)") from None


async def body_of(request: web.Request) -> dict[str, Any] | None:
    """The JSON object body, or None when there is none."""
    if not request.can_read_body:
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # the decoder's own limit (~1000 levels): no job needs a tenth of it
        raise ApiError(400, "bad_json", "the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", f"expected a JSON object, got {type(data).__name__}")
    return data


def overrides_of(job: JobSpec, body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    try:
        return runner_overrides(job, body)
    except BadOverrides as exc:
        raise ApiError(400, "bad_overrides", str(exc)) from None


def instant_of(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return m.parse_instant(value)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", f"at: {exc}") from None
