"""The admin HTTP API: health, metrics, jobs, history, statistics, manual runs, pause and resume.

Served by aiohttp on loopback or a unix socket (config `admin:`). Every endpoint but /healthz and
/metrics needs the bearer token when one is configured; endpoints that change anything are refused
when none is. Errors are JSON: {"error": "<stable code>", "message": "<for humans>"}; bad input is
a 4xx, a database that is away is a 503. The contract is `openapi.json` (served at /openapi.json).
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.openapi import SPEC
from scheduler_daemon.operation.overrides import BadOverrides, runner_overrides
from scheduler_daemon.running.runner import Fire
from scheduler_daemon.specs import AdminSpec, Config, Invalid, JobSpec, parse_duration
from scheduler_daemon.storage import queries, store
from scheduler_daemon.storage.queries import OneOffRun
from scheduler_daemon.storage.recorder import Recorder
from scheduler_daemon.timing.schedule_text import schedule_in_words
from scheduler_daemon.timing.scheduler import Scheduler

log = structlog.get_logger("scheduler_daemon.operation.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
MAX_PAGE = 500
DEFAULT_WINDOW = 24 * 3600.0
MAX_BODY = 64 * 1024
_STATUSES = (
    "running", "succeeded", "failed", "timed_out", "cancelled", "skipped", "missed", "abandoned",
)  # fmt: skip
_TRIGGERS = ("schedule", "manual", "catchup")


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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> web.Response:
        body = {"error": self.code, "message": self.message, **self.extra}
        return web.json_response(body, status=self.status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


# -- the application -----------------------------------------------------------------------------


def build_app(target: Controlled) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth(target)], client_max_size=MAX_BODY)
    api = Api(target)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/openapi.json", api.openapi)
    app.router.add_get("/jobs", api.list_jobs)
    app.router.add_get("/jobs/{name}", api.get_job)
    app.router.add_get("/jobs/{name}/executions", api.job_executions)
    app.router.add_post("/jobs/{name}/trigger", api.trigger)
    app.router.add_post("/jobs/{name}/pause", api.pause)
    app.router.add_post("/jobs/{name}/resume", api.resume)
    app.router.add_get("/executions", api.executions)
    app.router.add_get("/stats", api.stats)
    app.router.add_get("/runs", api.list_runs)
    app.router.add_post("/runs", api.create_run)
    app.router.add_get("/runs/{id}", api.get_run)
    app.router.add_delete("/runs/{id}", api.cancel_run)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:  # routing: 404 for unknown paths, 405 for wrong methods
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return ApiError(exc.status, code.get(exc.status, "http_error"), exc.reason).response()
    except store.DB_ERRORS as exc:
        log.warning("admin_database_error", path=request.path, error=str(exc))
        return ApiError(
            503, "database_unavailable", f"the database is unavailable: {exc}"
        ).response()
    except Exception:
        log.exception("admin_handler_crashed", path=request.path)
        return ApiError(500, "internal", "internal error (logged by the daemon)").response()


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

    async def healthz(self, request: web.Request) -> web.Response:
        recorder = self.t.recorder
        database = "connected" if recorder.connected else "buffering"
        problems = []
        if database != "connected":
            problems.append(f"database unreachable: {recorder.pending} rows buffered")
        if self.t.reload_error:
            problems.append(f"last reload failed: {self.t.reload_error}")
        body = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "database": database,
            "pending_rows": recorder.pending,
            "config": {
                "path": str(self.t.config.path),
                "jobs": len(self.t.config.jobs),
                "last_reload": "failed" if self.t.reload_error else "ok",
                "reload_error": self.t.reload_error,
            },
            "started_at": self.t.started_at.isoformat(),
            "uptime_s": round((datetime.now(UTC) - self.t.started_at).total_seconds(), 1),
        }
        # Liveness: 200 while the loop answers. Readiness/alerting: ?ready=1 is 503 when degraded.
        ready = request.query.get("ready") in ("1", "true")
        return _json(body, status=503 if ready and problems else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.t.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(SPEC)

    # -- jobs ------------------------------------------------------------------------------------

    async def list_jobs(self, request: web.Request) -> web.Response:
        since = _window_start(request)
        stats = await self._stats_by_job(since)
        return _json(
            {
                "since": since.isoformat(),
                "jobs": [
                    self._job_summary(job, stats.get(job.name), 1) for job in self.t.config.jobs
                ],
            }
        )

    async def get_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        since = _window_start(request)
        stats = await self._stats_by_job(since, job.name)
        body = self._job_summary(job, stats.get(job.name), 5)
        body["spec"] = job.redacted()
        body["since"] = since.isoformat()
        pool = self._pool_or_none()
        body["last_attempts"] = (
            queries.rows_json(await queries.last_attempts(pool, job.name, 10)) if pool else None
        )
        body["running_fires"] = [
            {
                "fire_id": str(f.fire_id),
                "scheduled_at": f.scheduled_at.isoformat(),
                "state": f.state,
                "attempt": f.attempt,
            }
            for f in self.t.running(job.name)
        ]  # fmt: skip
        return _json(body)

    def _job_summary(
        self, job: JobSpec, stats: Mapping[str, Any] | None, upcoming: int
    ) -> dict[str, Any]:
        paused_at = self.t.paused().get(job.name)
        return {
            "name": job.name,
            "kind": job.action.kind,
            "schedule": self.t.scheduler.describe(job.name),
            "schedule_in_words": schedule_in_words(job),
            "enabled": job.enabled,
            "paused": paused_at is not None,
            "paused_at": paused_at.isoformat() if paused_at else None,
            "next_fires": [t.isoformat() for t in self.t.scheduler.upcoming(job.name, upcoming)],
            "running": len(self.t.running(job.name)),
            "stats": queries.record_json(stats) if stats else None,
        }

    async def _stats_by_job(
        self, since: datetime, job: str | None = None
    ) -> dict[str, Mapping[str, Any]]:
        pool = self._pool_or_none()
        if pool is None:
            return {}  # the schedule is still answered while the database is away
        rows = await queries.job_stats(pool, since, job)
        return {row["job_name"]: row for row in rows}

    # -- history ---------------------------------------------------------------------------------

    async def job_executions(self, request: web.Request) -> web.Response:
        job = self._job(request, must_be_configured=False)
        return await self._page(request, job.name if job else request.match_info["name"])

    async def executions(self, request: web.Request) -> web.Response:
        return await self._page(request, _one_of(request, "job", None))

    async def _page(self, request: web.Request, job: str | None) -> web.Response:
        where = queries.ExecutionFilter(
            job=job,
            status=_one_of(request, "status", _STATUSES),
            trigger=_one_of(request, "trigger", _TRIGGERS),
            since=_instant(request, "since"),
            until=_instant(request, "until"),
        )
        limit = _int(request, "limit", default=50, low=1, high=MAX_PAGE)
        cursor_text = request.query.get("cursor")
        try:
            cursor = queries.Cursor.decode(cursor_text) if cursor_text else None
        except queries.BadCursor as exc:
            raise ApiError(400, "bad_cursor", str(exc)) from None
        rows, next_cursor = await queries.executions(self._pool(), where, after=cursor, limit=limit)
        return _json(
            {
                "executions": queries.rows_json(rows),
                "next_cursor": next_cursor.encode() if next_cursor else None,
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        since = _window_start(request)
        pool = self._pool()
        per_job = queries.rows_json(await queries.job_stats(pool, since))
        minutes = queries.rows_json(await queries.runs_per_minute(pool, since))
        kinds = {job.name: job.action.kind for job in self.t.config.jobs}
        for row in per_job:
            row["kind"] = kinds.get(row["job_name"])  # None: no longer configured
        runs = sum(r["runs"] for r in per_job)
        succeeded = sum(r["succeeded"] for r in per_job)
        return _json(
            {
                "since": since.isoformat(),
                "totals": {
                    "runs": runs,
                    "succeeded": succeeded,
                    "failed": sum(r["failed"] for r in per_job),
                    "skipped": sum(r["skipped"] for r in per_job),
                    "success_rate": round(succeeded / runs, 4) if runs else None,
                },
                "jobs": per_job,
                "http_response_times": [
                    {k: r[k] for k in ("job_name", "avg_duration_ms", "p95_duration_ms", "runs")}
                    for r in per_job
                    if r["kind"] == "http"
                ],
                "per_minute": minutes,
            }
        )

    # -- actions ---------------------------------------------------------------------------------

    async def trigger(self, request: web.Request) -> web.Response:
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
        return _json(
            {
                "fire_id": str(fire.fire_id),
                "job": job.name,
                "trigger": "manual",
                "scheduled_at": fire.scheduled_at.isoformat(),
                "executions": f"/jobs/{job.name}/executions?trigger=manual",
            },
            status=202,
        )

    async def pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request) -> web.Response:
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
        return _json(
            {
                "job": job.name,
                "paused": paused_at is not None,
                "paused_at": paused_at.isoformat() if paused_at else None,
            }
        )

    # -- one-off runs ----------------------------------------------------------------------------

    async def list_runs(self, request: web.Request) -> web.Response:
        pending = request.query.get("pending") in ("1", "true")
        limit = _int(request, "limit", default=100, low=1, high=MAX_PAGE)
        runs = await queries.list_runs(self._pool(), pending_only=pending, limit=limit)
        return _json({"runs": [_run_json(r) for r in runs]})

    async def create_run(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body is None or not isinstance(body.get("job"), str):
            raise ApiError(400, "bad_request", 'expected a JSON object with "job": "<name>"')
        job = self.t.config.job(body["job"])
        if job is None:
            raise ApiError(404, "unknown_job", f"no job named {body['job']!r} is configured")
        at = _parse_instant(body.get("at"), "at") or datetime.now(UTC)
        rest = {k: v for k, v in body.items() if k not in ("job", "at")}
        overrides = _overrides(job, rest or None)
        self._pool()
        run = await self.t.create_run(job, at, overrides)
        return _json(_run_json(run), status=201)

    async def get_run(self, request: web.Request) -> web.Response:
        run = await queries.get_run(self._pool(), _run_id(request))
        if run is None:
            raise ApiError(404, "unknown_run", "no such run")
        return _json(_run_json(run))

    async def cancel_run(self, request: web.Request) -> web.Response:
        self._pool()
        run = await self.t.cancel_run(_run_id(request))
        if run is None:
            raise ApiError(404, "unknown_run", "no such run")
        if run.state == "started":
            raise ApiError(409, "already_started", "the run has started; it cannot be cancelled")
        return _json(_run_json(run))

    # -- helpers ---------------------------------------------------------------------------------

    def _job(self, request: web.Request, *, must_be_configured: bool = True) -> JobSpec:
        name = request.match_info["name"]
        job = self.t.config.job(name)
        if job is None and must_be_configured:
            raise ApiError(404, "unknown_job", f"no job named {name!r} is configured")
        return job  # type: ignore[return-value]

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


def _run_json(run: OneOffRun) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "job": run.job_name,
        "run_at": run.run_at.isoformat(),
        "overrides": run.overrides,
        "state": run.state,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "cancelled_at": run.cancelled_at.isoformat() if run.cancelled_at else None,
        "executions": f"/executions?job={run.job_name}&trigger=manual",
    }


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


def _window_start(request: web.Request) -> datetime:
    text = request.query.get("window")
    seconds = DEFAULT_WINDOW
    if text:
        try:
            seconds = parse_duration(text)
        except Invalid as exc:
            raise ApiError(400, "bad_parameter", f"window: {exc}") from None
        if not 0 < seconds <= 366 * 86400:
            raise ApiError(400, "bad_parameter", "window: expected between 1s and 366d")
    return datetime.now(UTC) - timedelta(seconds=seconds)


def _one_of(request: web.Request, key: str, allowed: tuple[str, ...] | None) -> str | None:
    value = request.query.get(key)
    if value is None or value == "":
        return None
    if allowed is not None and value not in allowed:
        raise ApiError(
            400, "bad_parameter", f"{key}: expected one of {list(allowed)}, got {value!r}"
        )
    if "\x00" in value:
        raise ApiError(400, "bad_parameter", f"{key}: contains a NUL character")
    return value


def _int(request: web.Request, key: str, *, default: int, low: int, high: int) -> int:
    text = request.query.get(key)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        raise ApiError(400, "bad_parameter", f"{key}: expected a number from {low} to {high}")
    return int(text)


def _instant(request: web.Request, key: str) -> datetime | None:
    return _parse_instant(request.query.get(key), key)


def _parse_instant(value: Any, key: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_parameter", f"{key}: expected an ISO 8601 date-time")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            "bad_parameter",
            f"{key}: expected ISO 8601 like 2026-11-25T14:00:00Z, got {value!r}",
        ) from None
    if at.tzinfo is None:
        raise ApiError(400, "bad_parameter", f"{key}: add a UTC offset or Z to {value!r}")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise ApiError(400, "bad_parameter", f"{key}: out of range") from None


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
