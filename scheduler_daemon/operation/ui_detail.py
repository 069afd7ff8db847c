"""The status page's pages past the board: a job, one attempt, the failures, and the buttons.

The buttons (Trigger, Pause, Resume) call the admin API's own code (Api.start, Api.change_pause)
and answer 303 back to the job's page; the gate (ui_pages.Ui.gate) has checked their CSRF token.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from scheduler_daemon.operation import ui_view as view
from scheduler_daemon.operation.api_handlers import cursor_of
from scheduler_daemon.operation.api_models import ApiError
from scheduler_daemon.operation.ui_chart import chart
from scheduler_daemon.operation.ui_pages import PREFIX, Ui
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage import history, queries, ui_queries

PAGE = 50  # attempts per page of a job's history
FAILURES = 100  # attempts on the failures page
OUTPUT_CAP = 64 * 1024  # characters of captured output shown in the page (the rest: a link)
RESULT_CAP = 64 * 1024  # characters of the result shown, pretty-printed
PRETTY_MAX = 256 * 1024  # a bigger result is shown as stored (parsing it again is not worth it)
_ID = re.compile(r"[1-9][0-9]{0,18}")
_MAX_ID = 2**63 - 1
STATUSES = tuple(s.value for s in Status)
_DONE = {
    "triggered": "Triggered: its attempt appears below once it starts.",
    "paused": "Paused: no new fires until resumed.",
    "resumed": "Resumed.",
}
_RAW_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-store",
}


class Details:
    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self.api = ui.api

    # -- a job -------------------------------------------------------------------------------

    async def job(self, request: web.Request) -> web.Response:
        job = self.api.job_named(request.match_info["name"])
        status = request.query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ApiError(400, "bad_parameter", f"status: expected one of {', '.join(STATUSES)}")
        cursor = cursor_of(request.query.get("cursor") or None)
        pool = self.api.pool()
        attempts = await ui_queries.recent(pool, job.name, view.LONG_STRIP)
        where = queries.ExecutionFilter(job=job.name, status=status)
        page, next_cursor = await queries.executions(pool, where, after=cursor, limit=PAGE)
        [row] = await self.ui.board_rows([job.name], view.LONG_STRIP, "strip-long")
        return self.ui.render(
            request,
            "job.html",
            job=job,
            row=row,
            chart=chart(attempts),
            next_fires=self.ui.upcoming(job.name, 10),
            history=[_attempt(r) for r in page],
            wanted=status,
            statuses=STATUSES,
            first_page=cursor is None,
            next_page=_next_page(job, status, next_cursor),
            done=_DONE.get(request.query.get("done", "")),
            describe=self.api.t.scheduler.describe(job.name),
        )

    # -- the buttons -----------------------------------------------------------------------------

    async def trigger(self, request: web.Request) -> web.Response:
        job = self.api.job_named(request.match_info["name"])
        self.api.start(job, None)
        raise web.HTTPSeeOther(f"{_job_path(job)}?done=triggered")

    async def pause(self, request: web.Request) -> web.Response:
        return await self._pause(request, True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._pause(request, False)

    async def _pause(self, request: web.Request, paused: bool) -> web.Response:
        job = self.api.job_named(request.match_info["name"])
        await self.api.change_pause(job, paused)
        raise web.HTTPSeeOther(f"{_job_path(job)}?done={'paused' if paused else 'resumed'}")

    # -- one attempt -----------------------------------------------------------------------------

    async def execution(self, request: web.Request) -> web.Response:
        row = await self._execution(request)
        pool = self.api.pool()
        attempts, _ = await queries.executions(
            pool, queries.ExecutionFilter(fire_id=row["fire_id"]), limit=20
        )
        family = await ui_queries.fire_family(pool, row["fire_id"], row["parent_fire_id"])
        output = row["output"] or ""
        return self.ui.render(
            request,
            "run.html",
            run=_attempt(row),
            output=output[:OUTPUT_CAP],
            output_cut=len(output) > OUTPUT_CAP,
            output_chars=len(output),
            result=_pretty(row["result"]),
            attempts=[_attempt(r) for r in attempts if r["id"] != row["id"]],
            parents=[_attempt(r) for r in family if r["relation"] == "parent"],
            children=[_attempt(r) for r in family if r["relation"] == "child"],
        )

    async def output(self, request: web.Request) -> web.Response:
        """The whole captured output as stored, as plain text (never rendered as a page)."""
        row = await self._execution(request)
        return web.Response(
            text=row["output"] or "", content_type="text/plain", headers=_RAW_HEADERS
        )

    async def result(self, request: web.Request) -> web.Response:
        row = await self._execution(request)
        return web.Response(
            text=row["result"] or "null", content_type="application/json", headers=_RAW_HEADERS
        )

    async def _execution(self, request: web.Request) -> Any:
        text = request.match_info["id"]
        if not (_ID.fullmatch(text) and int(text) <= _MAX_ID):
            raise ApiError(404, "unknown_execution", "no such execution (ids are integers)")
        row = await history.execution(self.api.pool(), int(text))
        if row is None:
            raise ApiError(404, "unknown_execution", f"no execution with id {text}")
        return row

    # -- failures --------------------------------------------------------------------------------

    async def failures(self, request: web.Request) -> web.Response:
        rows = await ui_queries.failures(self.api.pool(), FAILURES)
        return self.ui.render(
            request,
            "failures.html",
            failures=[{**_attempt(r), "failing_for": r["failing_for"]} for r in rows],
            limit=FAILURES,
        )


def _attempt(row: Any) -> dict[str, Any]:
    """An attempt's row with the page's words: its label, whether it started late."""
    data = dict(row)
    data["label"] = data.get("label") or ""
    data["late"] = view.is_late(row)
    error = data.get("error") or ""
    data["first_error"] = data.get("first_error") or error.partition("\n")[0]
    return data


def _pretty(result: str | None) -> dict[str, Any] | None:
    if result is None:
        return None
    text = result
    if len(result) <= PRETTY_MAX:
        text = json.dumps(json.loads(result), indent=2, ensure_ascii=False)
    return {"text": text[:RESULT_CAP], "cut": len(text) > RESULT_CAP, "bytes": len(result)}


def _job_path(job: JobSpec) -> str:
    from urllib.parse import quote

    return f"{PREFIX}/jobs/{quote(job.name, safe='')}"


def _next_page(job: JobSpec, status: str | None, cursor: queries.Cursor | None) -> str | None:
    if cursor is None:
        return None
    query = f"cursor={cursor.encode()}" + (f"&status={status}" if status else "")
    return f"{_job_path(job)}?{query}"


def install(app: web.Application, ui: Ui) -> None:
    details = Details(ui)
    app.router.add_get("/jobs/{name}", details.job)
    app.router.add_post("/jobs/{name}/trigger", details.trigger)
    app.router.add_post("/jobs/{name}/pause", details.pause)
    app.router.add_post("/jobs/{name}/resume", details.resume)
    app.router.add_get("/executions/{id}", details.execution)
    app.router.add_get("/executions/{id}/output", details.output)
    app.router.add_get("/executions/{id}/result", details.result)
    app.router.add_get("/failures", details.failures)
