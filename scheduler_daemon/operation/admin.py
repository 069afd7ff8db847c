"""The admin HTTP API: health, metrics, jobs, history, statistics, manual runs, pause and resume.

Served by aiohttp on loopback or a unix socket (config `admin:`). Every endpoint but /healthz and
/metrics needs the bearer token when one is configured; endpoints that change anything are refused
when none is. Errors are JSON: {"error": "<stable code>", "message": "<for humans>"}; bad input is
a 4xx, a database that is away is a 503. The contract is `openapi.json` (served at /openapi.json).
"""

from __future__ import annotations

import functools
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel

from scheduler_daemon.operation import api_models as m
from scheduler_daemon.operation.api_models import ApiError, Error
from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.openapi import Reply, Route, document
from scheduler_daemon.operation.overrides import BadOverrides, runner_overrides
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.running.runner import Fire
from scheduler_daemon.specs import AdminSpec, Config, JobSpec
from scheduler_daemon.storage import queries, store
from scheduler_daemon.storage.queries import OneOffRun
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.storage.store import Row
from scheduler_daemon.timing.schedule_text import schedule_in_words
from scheduler_daemon.timing.scheduler import Scheduler

log = structlog.get_logger("scheduler_daemon.operation.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024


class Controlled(Protocol):
    """What the API reads and drives: the running daemon (tests may pass a stand-in)."""

    config: Config
    reload_error: str | None
    started_at: datetime
    metrics: Metrics

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def recorder(self) -> Recorder: ...

    def running(self, job: str) -> list[Fire]: ...

    def paused(self) -> Mapping[str, datetime]: ...

    async def set_paused(self, job: str, paused: bool) -> datetime | None: ...

    def trigger(self, job: JobSpec, overrides: Mapping[str, Any] | None) -> Fire | None: ...

    async def create_run(
        self, job: JobSpec, at: datetime, overrides: Mapping[str, Any] | None
    ) -> OneOffRun: ...

    async def cancel_run(self, run_id: uuid.UUID) -> OneOffRun | None: ...


def _reply(body: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=body.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


def _refusal(exc: ApiError) -> web.Response:
    return _reply(Error(error=exc.code, message=exc.message), status=exc.status)


# -- the application -----------------------------------------------------------------------------


def build_app(target: Controlled) -> web.Application:
    spec()  # generated now (~25 ms, once), not while the loop is serving fires
    app = web.Application(middlewares=[_errors, _auth(target)], client_max_size=MAX_BODY)
    api = Api(target)
    for route in ROUTES:
        handler = _endpoint(api, route)
        if route.method == "GET":
            app.router.add_get(route.path, handler)  # and HEAD
        else:
            app.router.add_route(route.method, route.path, handler)
    return app


def _endpoint(api: Api, route: Route) -> Handler:
    """The route's handler, called with its query string checked against the route's model."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        query = route.query.parse(request.query.items())
        response: web.StreamResponse = await route.handler(api, request, query)
        return response

    return endpoint


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _refusal(exc)
    except web.HTTPException as exc:  # routing: 404 for unknown paths, 405 for wrong methods
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return _refusal(ApiError(exc.status, code.get(exc.status, "http_error"), exc.reason))
    except store.DB_ERRORS as exc:
        log.warning("admin_database_error", path=request.path, error=str(exc))
        message = f"the database is unavailable: {exc}"
        return _refusal(ApiError(503, "database_unavailable", message))
    except Exception:
        log.exception("admin_handler_crashed", path=request.path)
        return _refusal(ApiError(500, "internal", "internal error (logged by the daemon)"))


def _auth(target: Controlled) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        settings = target.config.admin
        token = settings.token if settings else None
        if token is None:
            if request.method not in ("GET", "HEAD"):
                raise ApiError(
                    403,
                    "no_token_configured",
                    "changes need a token: set admin.token (e.g. ${SCHEDULER_ADMIN_TOKEN})",
                )
            return await handler(request)
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), token.encode()
        ):
            raise ApiError(
                401, "unauthorized", "missing or wrong token: send Authorization: Bearer <token>"
            )
        return await handler(request)

    return auth


class Api:
    def __init__(self, target: Controlled) -> None:
        self.t = target

    # -- health and metrics ------------------------------------------------------------------

    async def healthz(self, request: web.Request, query: m.HealthQuery) -> web.Response:
        recorder = self.t.recorder
        connected = recorder.connected
        problems = []
        if not connected:
            problems.append(f"database unreachable: {recorder.pending} rows buffered")
        if self.t.reload_error:
            problems.append(f"last reload failed: {self.t.reload_error}")
        body = m.Health(
            status="degraded" if problems else "ok",
            problems=problems,
            database="connected" if connected else "buffering",
            pending_rows=recorder.pending,
            config=m.ConfigState(
                path=str(self.t.config.path),
                jobs=len(self.t.config.jobs),
                last_reload="failed" if self.t.reload_error else "ok",
                reload_error=self.t.reload_error,
            ),
            started_at=self.t.started_at,
            uptime_s=round((datetime.now(UTC) - self.t.started_at).total_seconds(), 1),
        )
        # Liveness: 200 while the loop answers. Readiness/alerting: ?ready=1 is 503 when degraded.
        return _reply(body, status=503 if query.ready and problems else 200)

    async def metrics(self, request: web.Request, query: m.Query) -> web.Response:
        return web.Response(
            body=self.t.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def openapi(self, request: web.Request, query: m.Query) -> web.Response:
        return web.json_response(spec())

    # -- jobs ------------------------------------------------------------------------------------

    async def list_jobs(self, request: web.Request, query: m.WindowQuery) -> web.Response:
        since = query.start(datetime.now(UTC))
        stats = await self._stats_by_job(since)
        jobs = [self._job_summary(job, stats.get(job.name), 1) for job in self.t.config.jobs]
        return _reply(m.JobList(since=since, jobs=jobs))

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
        body = m.JobDetail(
            **dict(summary),
            spec=job.redacted(),
            since=since,
            last_attempts=[_execution(r) for r in last] if last is not None else None,
            running_fires=running,
        )
        return _reply(body)

    def _job_summary(self, job: JobSpec, stats: Row | None, upcoming: int) -> m.Job:
        paused_at = self.t.paused().get(job.name)
        return m.Job(
            name=job.name,
            kind=job.action.kind,
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
        )
        try:
            cursor = queries.Cursor.decode(query.cursor) if query.cursor else None
        except queries.BadCursor as exc:
            raise ApiError(400, "bad_cursor", str(exc)) from None
        rows, next_cursor = await queries.executions(
            self._pool(), where, after=cursor, limit=query.limit
        )
        return _reply(
            m.ExecutionPage(
                executions=[_execution(r) for r in rows],
                next_cursor=next_cursor.encode() if next_cursor else None,
            )
        )

    async def stats(self, request: web.Request, query: m.WindowQuery) -> web.Response:
        since = query.start(datetime.now(UTC))
        pool = self._pool()
        kinds = {job.name: job.action.kind for job in self.t.config.jobs}
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
        return _reply(
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
        overrides = _overrides(job, await _body(request))
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
        body = m.Triggered(
            fire_id=fire.fire_id,
            job=job.name,
            trigger=FireKind.MANUAL,
            scheduled_at=fire.scheduled_at,
            executions=f"/jobs/{job.name}/executions?trigger=manual",
        )
        return _reply(body, status=202)

    async def pause(self, request: web.Request, query: m.Query) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request, query: m.Query) -> web.Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        job = self._job(request)
        self._pool()  # refused up front while the database is away: a pause must persist
        try:
            paused_at = await self.t.set_paused(job.name, paused)
        except LookupError:
            raise ApiError(
                503, "not_synced", f"job {job.name!r} is not in the database yet; try again"
            ) from None
        return _reply(m.PauseState(job=job.name, paused=paused_at is not None, paused_at=paused_at))

    # -- one-off runs ----------------------------------------------------------------------------

    async def list_runs(self, request: web.Request, query: m.RunsQuery) -> web.Response:
        runs = await queries.list_runs(self._pool(), pending_only=query.pending, limit=query.limit)
        return _reply(m.RunList(runs=[_run(r) for r in runs]))

    async def create_run(self, request: web.Request, query: m.Query) -> web.Response:
        body = await _body(request)
        if body is None or not isinstance(body.get("job"), str):
            raise ApiError(400, "bad_request", 'expected a JSON object with "job": "<name>"')
        job = self.t.config.job(body["job"])
        if job is None:
            raise ApiError(404, "unknown_job", f"no job named {body['job']!r} is configured")
        at = _at(body.get("at")) or datetime.now(UTC)
        rest = {k: v for k, v in body.items() if k not in ("job", "at")}
        overrides = _overrides(job, rest or None)
        self._pool()
        run = await self.t.create_run(job, at, overrides)
        return _reply(_run(run), status=201)

    async def get_run(self, request: web.Request, query: m.Query) -> web.Response:
        run_id = _run_id(request)  # a malformed id is a 404 even while the database is away
        run = await queries.get_run(self._pool(), run_id)
        if run is None:
            raise ApiError(404, "unknown_run", "no such run")
        return _reply(_run(run))

    async def cancel_run(self, request: web.Request, query: m.Query) -> web.Response:
        run_id = _run_id(request)
        self._pool()
        run = await self.t.cancel_run(run_id)
        if run is None:
            raise ApiError(404, "unknown_run", "no such run")
        if run.state == "started":
            raise ApiError(409, "already_started", "the run has started; it cannot be cancelled")
        return _reply(_run(run))

    # -- helpers ---------------------------------------------------------------------------------

    def _job(self, request: web.Request) -> JobSpec:
        name = request.match_info["name"]
        job = self.t.config.job(name)
        if job is None:
            raise ApiError(404, "unknown_job", f"no job named {name!r} is configured")
        return job

    def _pool(self) -> asyncpg.Pool:
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


def _run(run: OneOffRun) -> m.Run:
    return m.Run(
        id=run.id,
        job=run.job_name,
        run_at=run.run_at,
        overrides=dict(run.overrides) if run.overrides is not None else None,
        state=run.state,
        created_at=run.created_at,
        started_at=run.started_at,
        cancelled_at=run.cancelled_at,
        executions=f"/executions?job={run.job_name}&trigger=manual",
    )


def _run_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise ApiError(404, "unknown_run", "no such run (run ids are UUIDs)") from None


async def _body(request: web.Request) -> dict[str, Any] | None:
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
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", f"expected a JSON object, got {type(data).__name__}")
    return data


def _overrides(job: JobSpec, body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    try:
        return runner_overrides(job, body)
    except BadOverrides as exc:
        raise ApiError(400, "bad_overrides", str(exc)) from None


def _at(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return m.parse_instant(value)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", f"at: {exc}") from None


# -- the routes and their document -----------------------------------------------------------------

_ANY_OBJECT = {"type": "object"}
ROUTES: tuple[Route, ...] = (
    Route(method="GET", path="/healthz", handler=Api.healthz, open=True, query=m.HealthQuery,
          summary="Is it up: database connected or buffering, last reload",
          replies=(Reply(status=200, description="Up", model=m.Health),
                   Reply(status=503, description="Degraded (only with ready=1)", model=m.Health))),
    Route(method="GET", path="/metrics", handler=Api.metrics, open=True,
          summary="Prometheus metrics",
          replies=(Reply(status=200, description="Prometheus text format", media_type="text/plain",
                         schema={"type": "string"}),)),
    Route(method="GET", path="/openapi.json", handler=Api.openapi, summary="This document",
          replies=(Reply(status=200, description="OpenAPI 3.1 document", schema=_ANY_OBJECT),)),
    Route(method="GET", path="/jobs", handler=Api.list_jobs, query=m.WindowQuery,
          summary="Every configured job: state, next fires, statistics",
          replies=(Reply(status=200, description="Jobs", model=m.JobList),), errors=(503,)),
    Route(method="GET", path="/jobs/{name}", handler=Api.get_job, query=m.WindowQuery,
          summary="One job: redacted spec, next fires, last attempts, statistics",
          replies=(Reply(status=200, description="The job", model=m.JobDetail),),
          errors=(404, 503)),
    Route(method="GET", path="/jobs/{name}/executions", handler=Api.job_executions,
          query=m.HistoryQuery, summary="A job's attempts, newest first (keyset pagination)",
          replies=(Reply(status=200, description="A page", model=m.ExecutionPage),),
          errors=(503,)),
    Route(method="POST", path="/jobs/{name}/trigger", handler=Api.trigger, body=m.Overrides,
          summary="Run the job now (trigger = manual), optionally with other arguments",
          replies=(Reply(status=202, description="Started; its attempts appear in executions",
                         model=m.Triggered),),
          errors=(403, 404, 409, 413)),
    *(
        Route(method="POST", path=f"/jobs/{{name}}/{verb}", handler=handler,
              summary=f"{verb.capitalize()} the job (persisted: survives restarts)",
              replies=(Reply(status=200, description="Done", model=m.PauseState),),
              errors=(403, 404, 503))
        for verb, handler in (("pause", Api.pause), ("resume", Api.resume))
    ),
    Route(method="GET", path="/executions", handler=Api.executions, query=m.ExecutionsQuery,
          summary="Attempts of every job, newest first (keyset pagination)",
          replies=(Reply(status=200, description="A page", model=m.ExecutionPage),),
          errors=(503,)),
    Route(method="GET", path="/stats", handler=Api.stats, query=m.WindowQuery,
          summary="Success rate by job, HTTP response times, runs per minute",
          replies=(Reply(status=200, description="Statistics", model=m.StatsReport),),
          errors=(503,)),
    Route(method="GET", path="/runs", handler=Api.list_runs, query=m.RunsQuery,
          summary="One-off runs, newest first",
          replies=(Reply(status=200, description="Runs", model=m.RunList),), errors=(503,)),
    Route(method="POST", path="/runs", handler=Api.create_run, body=m.RunRequest,
          body_required=True, summary="Schedule a one-off run of a configured job (persisted)",
          replies=(Reply(status=201, description="Scheduled", model=m.Run),),
          errors=(403, 404, 413, 503)),
    Route(method="GET", path="/runs/{id}", handler=Api.get_run, summary="One run",
          replies=(Reply(status=200, description="The run", model=m.Run),), errors=(404, 503)),
    Route(method="DELETE", path="/runs/{id}", handler=Api.cancel_run,
          summary="Cancel a pending run",
          replies=(Reply(status=200, description="Cancelled (or was already)", model=m.Run),),
          errors=(403, 404, 409, 503)),
)  # fmt: skip
OPEN_PATHS = frozenset(route.path for route in ROUTES if route.open)
_INFO = {
    "title": "scheduler_daemon admin API",
    "version": "1",
    "description": "Health, metrics, jobs, execution history, statistics, manual and one-off "
    "runs, pause and resume. Send `Authorization: Bearer <admin.token>` to every endpoint but "
    "/healthz and /metrics when a token is configured. Every endpoint refuses a query parameter "
    "it does not take (400 unknown_parameter).",
}


@functools.cache
def spec() -> dict[str, Any]:
    """The OpenAPI document, generated from ROUTES and the models (once per process)."""
    return document(ROUTES, _INFO)


async def start_server(target: Controlled, settings: AdminSpec) -> web.AppRunner:
    runner = web.AppRunner(build_app(target), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site: web.BaseSite
    if settings.unix_socket is not None:
        settings.unix_socket.unlink(missing_ok=True)  # a stale socket of a previous process
        site = web.UnixSite(runner, str(settings.unix_socket))
    else:
        site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("admin_listening", address=settings.address, token=settings.token is not None)
    return runner
