"""The admin HTTP API as a server: its routes, authentication, error replies and listener.

Served by aiohttp on loopback or a unix socket (config `admin:`). Every endpoint but /healthz
(alias /health) and /metrics needs the token when one is configured (`Authorization: Bearer` or
`X-API-Key`); endpoints that change anything are refused when none is. Errors are JSON:
{"error": "<stable code>", "message": "<for humans>"}; bad input is a 4xx, a database that is away
is a 503. ROUTES is the one list of endpoints: it builds the app and the OpenAPI document (served
at /openapi.json). What each endpoint does is api_handlers.py.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from scheduler_daemon.operation import api_models as m
from scheduler_daemon.operation import job_handlers as jobs
from scheduler_daemon.operation import live as live_updates
from scheduler_daemon.operation import result_handlers as results
from scheduler_daemon.operation import run_handlers as runs
from scheduler_daemon.operation import ui_routes
from scheduler_daemon.operation.api_handlers import Api, Controlled
from scheduler_daemon.operation.api_models import ApiError, Error
from scheduler_daemon.operation.openapi import API_KEY_HEADER, Reply, Route, document
from scheduler_daemon.specs import AdminSpec, JobSpec
from scheduler_daemon.storage import store

log = structlog.get_logger("scheduler_daemon.operation.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024


def _refusal(exc: ApiError) -> web.Response:
    problems = [m.Problem(**p) for p in exc.problems] if exc.problems is not None else None
    body = Error(error=exc.code, message=exc.message, problems=problems)
    return web.Response(
        text=body.model_dump_json(exclude_none=True),
        status=exc.status,
        content_type="application/json",
    )


# -- the application -----------------------------------------------------------------------------


def build_app(target: Controlled) -> web.Application:
    spec()  # generated now (~25 ms, once), not while the loop is serving fires
    middlewares = [_errors, _own_host(target), _auth(target)]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    api = Api(target, document=spec)
    for route in ROUTES:
        handler = _endpoint(api, route)
        if route.method == "GET":
            app.router.add_get(route.path, handler)  # and HEAD
        else:
            app.router.add_route(route.method, route.path, handler)
    ui = ui_routes.build(api, _token_given)
    # /ui/events: the page's live updates (the hub is on the main app too, for tests).
    app[live_updates.HUB] = live_updates.install(ui, target, prefix=ui_routes.PREFIX)
    app.add_subapp(ui_routes.PREFIX, ui)
    app.router.add_get(ui_routes.PREFIX, _to_ui)
    return app


async def _to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(f"{ui_routes.PREFIX}/")


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


# Names a browser may send in Host for a loopback listener. Any other name reaching a loopback
# port is a web page that re-pointed its own DNS name at 127.0.0.1 (DNS rebinding): refused.
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _own_host(target: Controlled) -> Middleware:
    @web.middleware
    async def own_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        settings = target.config.admin
        # A unix socket has no name to rebind; allow_remote listeners are reached by any name
        # their operators give them, behind the token.
        if settings is None or settings.unix_socket is not None or settings.allow_remote:
            return await handler(request)
        host = _host_name(request.headers.get("Host", ""))
        if host not in _LOOPBACK_NAMES and host != (settings.host or "").lower():
            raise ApiError(
                400, "wrong_host", f"this API answers to {settings.address} only, not {host!r}"
            )
        return await handler(request)

    return own_host


def _host_name(header: str) -> str:
    """The name in a Host header: `[::1]:8089` → `::1`, `Localhost:8089` → `localhost`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _auth(target: Controlled) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or _is_ui(request.path):
            return await handler(request)  # the status page lets in on its own (ui_auth.py)
        settings = target.config.admin
        token = settings.token if settings else None
        if token is None:
            if request.method not in ("GET", "HEAD"):
                raise ApiError(
                    403,
                    "no_token_configured",
                    "changes need a token: set admin.token (e.g. ${SCHEDULER_ADMIN_TOKEN}) or "
                    "admin.token_file",
                )
            if settings is not None and not settings.reads_open:
                raise ApiError(
                    401,
                    "unauthorized",
                    "reads need a token too: set admin.token or admin.token_file, or "
                    "admin.open_reads: true to let every user of this host read the history, or "
                    "listen on a unix socket",
                )
            return await handler(request)
        if not _token_given(request, token):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong token: send Authorization: Bearer <token> or X-API-Key: <token>",
            )
        return await handler(request)

    return auth


def _is_ui(path: str) -> bool:
    return path == ui_routes.PREFIX or path.startswith(f"{ui_routes.PREFIX}/")


def _token_given(request: web.Request, token: str) -> bool:
    """Whether the request carries the token, as a Bearer credential or in X-API-Key. Either
    one matching is enough: a proxy in front may put its own credentials in Authorization."""
    offered = []
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered.append(credential.strip())
    if API_KEY_HEADER in request.headers:
        offered.append(request.headers[API_KEY_HEADER].strip())
    expected = token.encode()
    # Every offer is compared (in constant time), so timing tells at most which header matched.
    # A header's bytes that are not UTF-8 arrive as surrogates: encoded back, they just differ.
    matches = [
        hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected) for given in offered
    ]
    return any(matches)


# -- the routes and their document -----------------------------------------------------------------

_ANY_OBJECT = {"type": "object"}
_EXECUTION_ID = {"type": "integer", "format": "int64", "minimum": 1}
ROUTES: tuple[Route, ...] = (
    *(
        Route(method="GET", path=path, handler=Api.healthz, open=True, query=m.HealthQuery,
              summary=summary,
              replies=(Reply(status=200, description="Up", model=m.Health),
                       Reply(status=503, description="Degraded (only with ready=1)",
                             model=m.Health)))
        for path, summary in (
            ("/healthz", "Is it up: database connected or buffering, last reload"),
            ("/health", "The same as /healthz, for clients that ask for /health"),
        )
    ),
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
    Route(method="POST", path="/jobs", handler=jobs.create_job, body=JobSpec, body_required=True,
          summary="Create a job kept in the database: its name and the fields of a config job",
          replies=(Reply(status=201, description="Created and scheduled", model=m.StoredJob),),
          errors=(403, 409, 413, 422, 503)),
    Route(method="PUT", path="/jobs/{name}", handler=jobs.replace_job, body=JobSpec,
          body_required=True, if_match=True,
          summary="Replace (or create) a job kept in the database",
          replies=(Reply(status=200, description="Replaced and rescheduled", model=m.StoredJob),
                   Reply(status=201, description="Created and scheduled", model=m.StoredJob)),
          errors=(403, 409, 412, 413, 422, 503)),
    Route(method="PATCH", path="/jobs/{name}", handler=jobs.patch_job, body=m.JobPatch,
          body_required=True, if_match=True,
          summary="Change some fields of a job kept in the database (JSON merge patch)",
          replies=(Reply(status=200, description="Changed and rescheduled", model=m.StoredJob),),
          errors=(403, 404, 409, 412, 413, 422, 503)),
    Route(method="DELETE", path="/jobs/{name}", handler=jobs.delete_job, if_match=True,
          summary="Delete a job kept in the database (a running attempt finishes)",
          replies=(Reply(status=200, description="Deleted", model=m.Deleted),),
          errors=(403, 404, 409, 412, 503)),
    Route(method="GET", path="/jobs/{name}/executions", handler=Api.job_executions,
          query=m.HistoryQuery, summary="A job's attempts, newest first (keyset pagination)",
          replies=(Reply(status=200, description="A page", model=m.ExecutionPage),),
          errors=(503,)),
    Route(method="GET", path="/jobs/{name}/items", handler=results.job_items,
          query=m.ItemsQuery,
          summary="A job's items (`items:` of its results), oldest first (keyset pagination)",
          replies=(Reply(status=200, description="A page", model=m.ItemPage),),
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
    Route(method="GET", path="/executions/{id}", handler=results.get_execution,
          path_parameters={"id": ("execution id (an attempt's `id`)", _EXECUTION_ID)},
          summary="One attempt, with its result (the JSON document its job returned)",
          replies=(Reply(status=200, description="The attempt", model=m.ExecutionDetail),),
          errors=(404, 503)),
    Route(method="GET", path="/storage", handler=results.history_size,
          summary="The room the history (executions, job_items) takes in the database",
          replies=(Reply(status=200, description="Bytes", model=m.HistorySize),),
          errors=(503,)),
    Route(method="GET", path="/stats", handler=Api.stats, query=m.WindowQuery,
          summary="Success rate by job, HTTP response times, runs per minute",
          replies=(Reply(status=200, description="Statistics", model=m.StatsReport),),
          errors=(503,)),
    Route(method="GET", path="/runs", handler=Api.list_runs, query=m.RunsQuery,
          summary="One-off runs, newest first",
          replies=(Reply(status=200, description="Runs", model=m.RunList),), errors=(503,)),
    Route(method="POST", path="/runs", handler=runs.create_run, body=m.RunRequest,
          body_required=True,
          summary="Schedule a one-off run of a configured job, or of an ad-hoc job (persisted)",
          replies=(Reply(status=201, description="Scheduled", model=m.Run),),
          errors=(403, 404, 409, 413, 422, 429, 503)),
    Route(method="GET", path="/runs/{id}", handler=Api.get_run,
          summary="One run and, once started, its outcome",
          replies=(Reply(status=200, description="The run", model=m.RunDetail),),
          errors=(404, 503)),
    Route(method="DELETE", path="/runs/{id}", handler=Api.cancel_run,
          summary="Cancel a pending run",
          replies=(Reply(status=200, description="Cancelled (or was already)", model=m.Run),),
          errors=(403, 404, 409, 503)),
)  # fmt: skip
OPEN_PATHS = frozenset(route.path for route in ROUTES if route.open)
SHUTDOWN_TIMEOUT = 2.0  # at stop: how long requests in flight may finish
_INFO = {
    "title": "scheduler_daemon admin API",
    "version": "1",
    "description": "Health, metrics, jobs (and creating, changing and deleting the ones kept in "
    "the database), execution history with results and items, statistics, manual and one-off "
    "runs, pause and resume. "
    "Send `Authorization: Bearer <admin.token>` (or `X-API-Key: <admin.token>`) to every "
    "endpoint but /healthz, /health and /metrics when a token is configured. Every endpoint "
    "refuses a query parameter it does not take (400 unknown_parameter).",
}


@functools.cache
def spec() -> dict[str, Any]:
    """The OpenAPI document, generated from ROUTES and the models (once per process)."""
    return document(ROUTES, _INFO)


async def start_server(target: Controlled, settings: AdminSpec) -> web.AppRunner:
    runner = web.AppRunner(build_app(target), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
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
