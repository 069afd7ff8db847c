"""The status page (/ui/): server-rendered HTML over the admin API's listener, token and code.

A sub-application of the admin server (admin.py mounts it under /ui/): the board of every job's
recent fires, a job's page with its history and buttons, one attempt's page, the failures. Pages
work without JavaScript. Who may see them is ui_auth.py; what they show is ui_view.py (words
and figures) and the templates in ui/templates (Jinja2, autoescaped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup

from scheduler_daemon.operation import ui_view as view
from scheduler_daemon.operation.api_handlers import Api
from scheduler_daemon.operation.api_models import ApiError
from scheduler_daemon.operation.ui_auth import (
    COOKIE,
    Sessions,
    Visitor,
    clear_cookie,
    csrf_ok,
    set_cookie,
    token_matches,
    visitor,
)
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage import store, ui_queries
from scheduler_daemon.timing.schedule_text import schedule_in_words

log = structlog.get_logger("scheduler_daemon.operation.ui_pages")

PREFIX = "/ui"
HERE = Path(__file__).resolve().parent / "ui"
VISITOR = web.RequestKey("ui_visitor", Visitor)
# Who reaches these without the token: the login form and the stylesheet.
_OPEN = re.compile(r"/ui/(login|static/.*)")
_HEADERS = {
    # No script, frame or form target outside this server; nothing cached (history is private).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(duration=view.duration, instant=view.instant, clock=view.clock)
    return env


class Drawn(NamedTuple):
    """A strip as the board shows it: its cells' HTML, how many, the row's figures over them."""

    html: Markup
    fires: int
    figures: view.StripFigures


class Ui:
    """The pages, bound to the admin API's handlers (``api``: the same daemon, the same code)."""

    def __init__(self, api: Api, header_check: Callable[[web.Request, str], bool]) -> None:
        self.api = api
        self._header_check = header_check  # the API's: the token in Authorization or X-API-Key
        self.sessions = Sessions()
        self.env = environment()
        self._words: dict[tuple[str, int], str] = {}  # schedule in words, by job and spec
        self._strips: dict[tuple[str, str], tuple[str, Drawn]] = {}  # by job and class, key
        self._rows: dict[str, tuple[tuple[Any, ...], Markup]] = {}
        self._upcoming: dict[str, tuple[tuple[datetime | None, int], list[datetime]]] = {}

    # -- rendering ---------------------------------------------------------------------------

    def render(
        self, request: web.Request, template: str, status: int = 200, **context: Any
    ) -> web.Response:
        who = request.get(VISITOR)
        text = self.env.get_template(template).render(
            visitor=who, csrf=who.csrf if who else None, path=request.path_qs, **context
        )
        return web.Response(text=text, status=status, content_type="text/html", headers=_HEADERS)

    def refusal(self, request: web.Request, status: int, code: str, message: str) -> web.Response:
        return self.render(request, "error.html", status, code=code, message=message)

    # -- the gate: who may see and change --------------------------------------------------------

    @web.middleware
    async def gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if _OPEN.fullmatch(request.path):
                response: web.StreamResponse = await handler(request)
                return response
            who = self.visitor(request)
            if not who.may_read:
                return self._turned_away(request)
            request[VISITOR] = who
            if request.method == "POST":
                if not who.may_change:
                    message = "changes need a token: set admin.token or admin.token_file"
                    return self.refusal(request, 403, "no_token_configured", message)
                form = await request.post()
                given = form.get("csrf")
                if not csrf_ok(who, given if isinstance(given, str) else None):
                    message = "the form is stale or came from another site: reload and retry"
                    return self.refusal(request, 403, "bad_csrf", message)
            response = await handler(request)
            return response
        except ApiError as exc:
            return self.refusal(request, exc.status, exc.code, exc.message)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:  # routing: a page, not JSON
            code = "not_found" if exc.status == 404 else "method_not_allowed"
            return self.refusal(request, exc.status, code, f"{exc.reason}: {request.path}")
        except store.DB_ERRORS as exc:
            log.warning("ui_database_error", path=request.path, error=str(exc))
            return self.refusal(request, 503, "database_unavailable", f"the database: {exc}")

    def visitor(self, request: web.Request) -> Visitor:
        settings = self.api.t.config.admin
        token = settings.token if settings else None
        header = token is not None and self._header_check(request, token)
        return visitor(request, settings, self.sessions, header)

    def _turned_away(self, request: web.Request) -> web.Response:
        settings = self.api.t.config.admin
        if settings is None or settings.token is None:
            message = (
                "reads need a token: set admin.token or admin.token_file, or admin.open_reads: "
                "true, or listen on a unix socket"
            )
            return self.refusal(request, 401, "unauthorized", message)
        if "Authorization" in request.headers or "X-API-Key" in request.headers:
            return self.refusal(request, 401, "unauthorized", "wrong token")
        raise web.HTTPSeeOther(f"{PREFIX}/login?next={_quote(request.path_qs)}")

    # -- login -----------------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return self._login(request, 200, next_path=request.query.get("next", ""))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given, wanted = form.get("token"), form.get("next", "")
        settings = self.api.t.config.admin
        token = settings.token if settings else None
        next_path = wanted if isinstance(wanted, str) else ""
        if token is None:
            return self._login(request, 403, next_path, "no token is configured: nothing to log in")
        if not isinstance(given, str) or not token_matches(given.strip(), token):
            log.info("ui_login_refused", remote=request.remote)
            return self._login(request, 401, next_path, "wrong token")
        session_id, _ = self.sessions.open(token)
        response = web.HTTPSeeOther(_safe_next(next_path))
        set_cookie(request, response, session_id)
        log.info("ui_login", remote=request.remote)
        raise response

    def _login(
        self, request: web.Request, status: int, next_path: str, error: str | None = None
    ) -> web.Response:
        settings = self.api.t.config.admin
        configured = settings is not None and settings.token is not None
        return self.render(
            request,
            "login.html",
            status,
            error=error,
            next_path=_safe_next(next_path),
            configured=configured,
        )

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.close(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        clear_cookie(response)
        raise response

    # -- the board -------------------------------------------------------------------------------

    async def board(self, request: web.Request) -> web.Response:
        wanted = request.query.get("filter") or None
        if wanted is not None and wanted not in view.FILTERS:
            raise ApiError(400, "bad_filter", f"filter: expected one of {', '.join(view.FILTERS)}")
        rows = await self.board_rows()
        shown = [r for r in rows if wanted in r.flags] if wanted else rows
        return self.render(
            request,
            "board.html",
            rows=shown,
            total=len(rows),
            counters=view.counters(rows),
            filter=wanted,
            row_html=self.row_html,
        )

    async def board_rows(
        self, names: list[str] | None = None, per_job: int = view.STRIP, cls: str = "strip"
    ) -> list[view.BoardRow]:
        """The board's rows, of every job or of ``names``: one query for all their strips' keys,
        and one more for the cells of the strips that changed since last drawn."""
        t = self.api.t
        jobs = [j for j in t.all_jobs if names is None or j.name in names]
        heads: dict[str, asyncpg.Record] = {}
        drawn: dict[str, Drawn] = {}
        pool = self.pool_or_none()
        if pool is not None and jobs:
            keys = await ui_queries.strip_keys(pool, [j.name for j in jobs], per_job)
            heads = {row["job_name"]: row for row in keys}
            drawn = await self._draw_strips(pool, heads, per_job, cls)
        paused = t.paused()
        empty = Drawn(*view.strip(None, cls), view.NO_FIGURES)
        return [
            self._row(job, heads.get(job.name), drawn.get(job.name, empty), job.name in paused)
            for job in jobs
        ]

    async def _draw_strips(
        self, pool: asyncpg.Pool, heads: dict[str, asyncpg.Record], per_job: int, cls: str
    ) -> dict[str, Drawn]:
        """The strips, with their figures: drawn again only where the key changed; kept by
        job (under the key of the cells they were drawn from) until it changes again."""
        drawn: dict[str, Drawn] = {}
        stale = []
        for name, head in heads.items():
            kept = self._strips.get((name, cls))
            if kept is not None and kept[0] == head["key"]:
                drawn[name] = kept[1]
            else:
                stale.append(name)
        if not stale:
            return drawn
        if len(self._strips) > 2 * len(self.api.t.all_jobs) + 100:
            self._strips.clear()  # removed jobs' strips
        for row in await ui_queries.strips(pool, stale, per_job):
            strip = Drawn(*view.strip(row, cls), view.figures(row))
            drawn[row["job_name"]] = strip
            self._strips[(row["job_name"], cls)] = (row["key"], strip)
        return drawn

    def _row(
        self,
        job: JobSpec,
        head: asyncpg.Record | None,
        drawn: Drawn,
        paused: bool,
    ) -> view.BoardRow:
        t = self.api.t
        running = len(t.running(job.name))
        strip, fires, figures = drawn
        row = view.BoardRow(
            name=job.name,
            schedule=self.words(job),
            state=view.state(job.enabled, paused, running),
            source="api" if job.name in t.api_jobs.stored else "config",
            strip=strip,
            fires=fires,
            last_run=head["last_run"] if head else None,
            next_fires=self.upcoming(job.name, 3),
            success_rate=figures.success_rate,
            p95_ms=figures.p95_ms,
            running=running,
        )
        row.flags = view.flags(row, figures)
        return row

    def row_html(self, row: view.BoardRow) -> Markup:
        """A board row's HTML (templates/_row.html), kept by job until something in it
        changes: the board between fires is mostly the same 1,000 rows."""
        key = (
            row.schedule, row.state, row.source, row.strip, row.last_run, row.next_fires,
            row.success_rate, row.p95_ms, frozenset(row.flags),
        )  # fmt: skip
        kept = self._rows.get(row.name)
        if kept is not None and kept[0] == key:
            return kept[1]
        if len(self._rows) > 2 * len(self.api.t.all_jobs) + 100:
            self._rows.clear()  # removed jobs' rows
        html = Markup(self.env.get_template("_row.html").module.board_row(row))  # type: ignore[attr-defined]
        self._rows[row.name] = (key, html)
        return html

    def upcoming(self, name: str, count: int) -> list[datetime]:
        """The job's next ``count`` fires, worked out again only once its next fire has moved
        (croniter takes ~70 µs a fire: 3 for each of 1,000 jobs is most of a board's time)."""
        scheduler = self.api.t.scheduler
        key = (scheduler.next_fire(name), id(scheduler.job(name)))  # a reload: new specs
        known = self._upcoming.get(name)
        if known is not None and known[0] == key and len(known[1]) >= count:
            return known[1][:count]
        times = scheduler.upcoming(name, count)
        if len(self._upcoming) > 2 * len(self.api.t.all_jobs) + 100:
            self._upcoming.clear()  # removed jobs' entries
        self._upcoming[name] = (key, times)
        return times

    def words(self, job: JobSpec) -> str:
        key = (job.name, id(job))  # a reload builds new specs: their words are made again
        words = self._words.get(key)
        if words is None:
            if len(self._words) > 4 * len(self.api.t.all_jobs) + 100:
                self._words.clear()
            words = self._words[key] = schedule_in_words(job)
        return words

    def pool_or_none(self) -> asyncpg.Pool | None:
        try:
            return self.api.pool()
        except ApiError:
            return None


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def _safe_next(path: str) -> str:
    """Where to go after logging in: a page of ours, never another site (`//evil`, `/\\evil`)."""
    if path.startswith(f"{PREFIX}/") and not path.startswith(("//", "/\\")) and "\\" not in path:
        return path
    return f"{PREFIX}/"


UI = web.AppKey("ui", Ui)  # the sub-application's Ui (live updates render its rows)


def install(app: web.Application, ui: Ui) -> None:
    app[UI] = ui
    app.router.add_get("/", ui.board)
    app.router.add_get("/login", ui.login_form)
    app.router.add_post("/login", ui.login)
    app.router.add_post("/logout", ui.logout)
    app.router.add_static("/static", HERE / "static")
