"""Ad-hoc runs against the installed daemon: `POST /runs` with a whole job, a real HTTP target,
the kinds the config allows, and a run's own retry."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import AUTH, ENV, free_port, serve_locally, start_daemon, wait_until


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1: /hook answers 200, noting each request's body; /down
    answers 503 (a failure worth retrying)."""
    seen: list[str] = []

    async def note(request: web.Request) -> web.Response:
        seen.append(await request.text())
        return web.json_response({"ok": True})

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", note)
    app.router.add_post("/down", down)
    async with serve_locally(app) as url:
        yield f"{url}/hook", seen


def config(tmp_path: Path, dsn: str, port: int, allow: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        database: {{url: "{dsn}"}}
        state_dir: ./state
        admin:
          listen: 127.0.0.1:{port}
          token: ${{ADMIN_TOKEN}}
        {allow}
        jobs:
          idle: {{every: 1h, command: ["true"]}}
        """)
    )
    return path


async def call(base: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + path, headers=AUTH, **kw) as r,
    ):
        return r.status, await r.json()


async def outcome(base: str, run_id: str) -> dict[str, Any] | None:
    _, body = await call(base, "GET", f"/runs/{run_id}")
    found: dict[str, Any] | None = body["outcome"]
    return found if found is not None and found["status"] != "running" else None


async def test_adhoc_runs_against_the_installed_daemon(
    tmp_path: Path, database_url: str, hook: tuple[str, list[str]]
) -> None:
    url, seen = hook
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = await start_daemon(config(tmp_path, database_url, port), extra_env=ENV)
    try:
        await daemon.wait_for("database_connected")
        job = {"name": "one-time-hook", "http": {"url": url, "method": "POST", "json": {"n": 1}}}
        status, run = await call(base, "POST", "/runs", json={"job": job})
        assert status == 201 and run["job"] == "one-time-hook", run
        await wait_until(lambda: outcome(base, run["id"]), timeout=20)
        done = await outcome(base, run["id"])
        assert done is not None and (done["status"], done["http_status"]) == ("succeeded", 200)
        assert seen == ['{"n": 1}']  # once
        # A shell job is the config's to allow: refused here, at its key.
        status, refused = await call(base, "POST", "/runs", json={"job": {"shell": "true"}})
        assert (status, refused["error"]) == (422, "invalid_job")
        assert [p["path"] for p in refused["problems"]] == ["shell"]
        # The run's own retry: a failing job tried three times.
        failing = {"http": {"url": url.replace("/hook", "/down"), "method": "POST"}}
        body = {"job": failing, "retry": {"attempts": 3, "delay": "10ms"}, "priority": "high"}
        status, retried = await call(base, "POST", "/runs", json=body)
        assert status == 201 and retried["options"]["priority"] == "high"
        await wait_until(lambda: outcome(base, retried["id"]), timeout=20)
        done = await outcome(base, retried["id"])
        assert done is not None and (done["status"], done["attempts"]) == ("failed", 3)
        _, page = await call(base, "GET", retried["executions"])
        assert sorted(e["attempt"] for e in page["executions"]) == [1, 2, 3]
        assert {e["job_name"] for e in page["executions"]} == {retried["job"]}
        assert await daemon.stop() == 0
        # Once the config lists shell, the same request runs.
        allow = "  allow_job_kinds: [shell]"
        daemon = await start_daemon(config(tmp_path, database_url, port, allow), extra_env=ENV)
        await daemon.wait_for("database_connected")
        status, run = await call(base, "POST", "/runs", json={"job": {"shell": "echo adhoc"}})
        assert status == 201, run
        await wait_until(lambda: outcome(base, run["id"]), timeout=20)
        done = await outcome(base, run["id"])
        assert done is not None and (done["status"], done["exit_code"]) == ("succeeded", 0)
    finally:
        if daemon.proc.returncode is None:
            await asyncio.wait_for(daemon.stop(), 30)
