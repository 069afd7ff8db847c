"""Jobs over the API: created, changed and deleted on the running daemon, kept in PostgreSQL.

A daemon runs in the test's loop (real PostgreSQL, its admin API on 127.0.0.1, real HTTP jobs
against a target server here); each test drives it through the API as a client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from scheduler_daemon.operation.api_jobs import follow_changes
from scheduler_daemon.specs.api_job import ApiJobRules, build_api_job
from scheduler_daemon.storage import job_store
from scheduler_daemon.timing.clock import SystemClock
from tests.helpers import (
    ENV,
    Running,
    free_port,
    running_daemon,
    serve_locally,
    wait_until,
    write_config,
)

SECRET = "api-job-secret-61d0"


class Target:
    """An HTTP server for the jobs: records each request; /slow answers when released."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path, "headers": dict(request.headers)})
        if request.path == "/slow":
            await self.release.wait()
        return web.json_response({"ok": True})

    def count(self, path: str) -> int:
        return sum(1 for r in self.seen if r["path"] == path)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    served = Target()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", served.handle)
    async with serve_locally(app) as url:
        served.url = url
        yield served
        served.release.set()


def _config(tmp_path: Path, database_url: str, target: Target, admin_extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    write_config(path, database_url, target.url, listen=f"127.0.0.1:{free_port()}")
    text = path.read_text().replace(
        "admin:\n", f"admin:\n  allow_env: [API_JOB_SECRET]\n{admin_extra}"
    )
    path.write_text(text)
    return path


def _base(config: Path) -> str:
    listen = next(line for line in config.read_text().splitlines() if "listen:" in line)
    return "http://" + listen.split("listen:")[1].strip()


@pytest.fixture
async def api(
    tmp_path: Path, database_url: str, target: Target, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    monkeypatch.setenv("API_JOB_SECRET", SECRET)
    for name, value in ENV.items():  # a reload reads the environment
        monkeypatch.setenv(name, value)
    config = _config(tmp_path, database_url, target)
    async with running_daemon(config, _base(config)) as running:
        yield running


def _job(target: Target, path: str = "/hit", **fields: Any) -> dict[str, Any]:
    return {"every": "1h", "http": {"url": f"{target.url}{path}"}, **fields}


async def _create(api: Running, name: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await api.call("POST", "/jobs", json={"name": name, **body})
    assert status == 201, reply
    return dict(reply)


async def _executions(api: Running, name: str) -> list[dict[str, Any]]:
    status, page = await api.call("GET", f"/jobs/{name}/executions")
    assert status == 200, page
    return list(page["executions"])


async def test_a_created_job_fires_on_its_schedule_and_is_listed(
    api: Running, target: Target
) -> None:
    created = await _create(api, "beat", _job(target, every="1s"))
    assert created["source"] == "api" and created["version"] == 1
    assert created["spec"]["every"] == 1.0 and created["spec"]["timezone"] == "UTC"
    assert datetime.fromisoformat(created["next_fires"][0]) <= datetime.now(UTC) + timedelta(
        seconds=1
    )

    async def fired() -> bool:
        return any(e["status"] == "succeeded" for e in await _executions(api, "beat"))

    await wait_until(fired)
    status, jobs = await api.call("GET", "/jobs")
    assert status == 200
    listed = {job["name"]: job for job in jobs["jobs"]}
    assert listed["beat"]["source"] == "api" and listed["beat"]["version"] == 1
    assert listed["greet"]["source"] == "config" and listed["greet"]["version"] is None


async def test_patching_the_schedule_moves_the_next_fire_and_leaves_a_running_attempt_alone(
    api: Running, target: Target
) -> None:
    await _create(api, "slow", _job(target, "/slow", every="1s"))
    await wait_until(lambda: _true(target.count("/slow") == 1))  # an attempt is in flight
    status, patched = await api.call(
        "PATCH", "/jobs/slow", json={"every": "1h"}, headers={"If-Match": '"1"'}
    )
    assert status == 200, patched
    assert patched["version"] == 2 and patched["definition"]["every"] == "1h"
    next_fire = datetime.fromisoformat(patched["next_fires"][0])
    assert next_fire.minute == next_fire.second == 0  # every 1h: on the hour, no longer each second
    assert next_fire > datetime.now(UTC)
    assert [f["state"] for f in (await _detail(api, "slow"))["running_fires"]] == ["running"]
    target.release.set()

    async def finished() -> bool:
        return [e["status"] for e in await _executions(api, "slow")] == ["succeeded"]

    await wait_until(finished)  # not cancelled by the change
    assert target.count("/slow") == 1


async def test_a_job_deleted_while_running_finishes_its_attempt_and_fires_no_more(
    api: Running, target: Target, database_url: str
) -> None:
    await _create(api, "doomed", _job(target, "/slow", every="1s"))
    await wait_until(lambda: _true(target.count("/slow") == 1))
    status, deleted = await api.call("DELETE", "/jobs/doomed")
    assert status == 200 and deleted == {"name": "doomed", "deleted": True, "version": 2}
    assert api.daemon.scheduler.next_fire("doomed") is None  # no new fire will start
    assert (await api.call("GET", "/jobs/doomed"))[0] == 404
    target.release.set()

    async def finished() -> bool:
        return [e["status"] for e in await _executions(api, "doomed")] == ["succeeded"]

    await wait_until(finished)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT removed_at, version FROM jobs WHERE name = 'doomed'")
    finally:
        await conn.close()
    assert row is not None and row["removed_at"] is not None and row["version"] == 2


async def test_api_jobs_come_back_after_a_restart_before_the_first_fire(
    tmp_path: Path, database_url: str, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_JOB_SECRET", SECRET)
    config = _config(tmp_path, database_url, target)
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    async with running_daemon(config, _base(config)) as first:
        body = {"at": at.isoformat(), "http": {"url": f"{target.url}/hit"}}
        await _create(first, "later", body)
    async with running_daemon(config, _base(config)) as second:
        # Nothing fired yet, and the job is scheduled: read before the schedule started.
        assert second.daemon.scheduler.next_fire("later") == at
        detail = await _detail(second, "later")
        assert detail["source"] == "api" and detail["version"] == 1
    cache = tmp_path / "state" / "api_jobs.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert [job["name"] for job in json.loads(cache.read_text())] == ["later"]


async def test_a_name_is_one_jobs_in_either_direction(
    api: Running, target: Target, tmp_path: Path
) -> None:
    for method, path in (("POST", "/jobs"), ("PUT", "/jobs/greet"), ("PATCH", "/jobs/greet")):
        status, refused = await api.call(method, path, json={"name": "greet", **_job(target)})
        assert (status, refused["error"]) == (409, "defined_in_config"), (method, refused)
    status, refused = await api.call("DELETE", "/jobs/greet")
    assert (status, refused["error"]) == (409, "defined_in_config")
    # The other way: a reload that brings a file job of an API job's name is refused.
    await _create(api, "mine", _job(target))
    config = api.daemon.config.path
    config.write_text(config.read_text() + "  mine:\n    every: 1h\n    command: ['true']\n")
    assert await api.daemon.reload() is False
    assert "jobs.mine: the name is taken by a job created through the API" in str(
        api.daemon.reload_error
    )
    assert (await _detail(api, "mine"))["source"] == "api"  # the old schedule stays
    assert api.daemon.scheduler.next_fire("mine") is not None


async def test_an_invalid_body_gets_every_problem_at_once(api: Running, target: Target) -> None:
    body = {
        "name": "broken",
        "every": "soon",
        "http": {"url": "ftp://x", "headers": {"X-Api-Key": "in-clear"}},
        "retry": {"attempts": 0},
        "overlap": "sometimes",
    }
    status, refused = await api.call("POST", "/jobs", json=body)
    assert status == 422 and refused["error"] == "invalid_job"
    paths = {p["path"] for p in refused["problems"]}
    assert {"every", "http.url", "http.headers.X-Api-Key", "retry.attempts", "overlap"} <= paths
    assert (await api.call("GET", "/jobs/broken"))[0] == 404


async def test_a_chain_through_the_api_names_known_jobs_and_never_loops(
    api: Running, target: Target
) -> None:
    await _create(api, "first", _job(target, then=["greet"]))  # a config file's job
    await _create(api, "second", _job(target, then=["first"]))
    status, refused = await api.call("PATCH", "/jobs/first", json={"then": ["greet", "second"]})
    assert status == 422
    assert refused["problems"] == [
        {"path": "then", "message": "a cycle of chained jobs: first → second → first"}
    ]
    status, refused = await api.call(
        "POST", "/jobs", json={"name": "x", **_job(target, then=["nope"])}
    )
    assert status == 422
    assert refused["problems"] == [{"path": "then", "message": "unknown job 'nope'"}]
    assert (await _detail(api, "first"))["definition"]["then"] == ["greet"]  # unchanged


async def test_a_stale_if_match_is_refused_and_changes_nothing(
    api: Running, target: Target
) -> None:
    await _create(api, "racy", _job(target))
    status, replaced = await api.call("PUT", "/jobs/racy", json=_job(target, every="2h"))
    assert status == 200 and replaced["version"] == 2
    status, refused = await api.call(
        "PUT", "/jobs/racy", json=_job(target, every="3h"), headers={"If-Match": '"1"'}
    )
    assert (status, refused["error"]) == (412, "version_mismatch")
    detail = await _detail(api, "racy")
    assert detail["version"] == 2 and detail["definition"]["every"] == "2h"


async def test_a_shell_job_needs_its_kind_allowed(api: Running) -> None:
    status, refused = await api.call(
        "POST", "/jobs", json={"name": "rm", "every": "1h", "shell": "echo owned"}
    )
    assert status == 422
    assert [p["path"] for p in refused["problems"]] == ["shell"]
    assert "admin.allow_job_kinds" in refused["problems"][0]["message"]
    rules = ApiJobRules(kinds=frozenset({"shell"}), env=frozenset(), timezone="UTC")
    job, _ = build_api_job("rm", {"every": "1h", "shell": "echo ok"}, rules, environ={})
    assert job.action.kind == "command"


async def test_secrets_are_references_never_stored_or_shown_in_clear(
    api: Running, target: Target, database_url: str, tmp_path: Path
) -> None:
    reference = {"env": "API_JOB_SECRET"}
    body = _job(target, every="1s")
    body["http"]["headers"] = {"Authorization": reference}
    created = await _create(api, "secretive", body)
    await wait_until(lambda: _true(target.count("/hit") >= 1))
    assert target.seen[0]["headers"]["Authorization"] == SECRET  # resolved when it runs
    assert created["definition"]["http"]["headers"] == {"Authorization": reference}
    assert created["spec"]["action"]["headers"] == {"Authorization": reference}
    status, detail = await api.call("GET", "/jobs/secretive")
    assert SECRET not in json.dumps(detail)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT definition::text, spec::text FROM jobs WHERE name = $1", "secretive"
        )
    finally:
        await conn.close()
    assert row is not None and SECRET not in row[0] and SECRET not in row[1]
    assert SECRET not in (tmp_path / "state" / "api_jobs.json").read_text()
    status, refused = await api.call(
        "POST", "/jobs", json={**body, "name": "thief", "http": {
            "url": f"{target.url}/hit", "headers": {"X-Stolen": {"env": "ADMIN_TOKEN"}}}},
    )  # fmt: skip
    assert status == 422 and "admin.allow_env" in refused["problems"][0]["message"]


async def test_a_job_written_straight_to_postgresql_reaches_the_daemon(
    api: Running, target: Target, database_url: str
) -> None:
    rules = ApiJobRules.of(api.daemon.config)
    job, definition = build_api_job("outside", _job(target), rules, environ=None)
    conn = await asyncpg.connect(database_url)
    try:
        await job_store.write_api_job(
            conn, "outside", definition, spec=job.redacted(), enabled=True
        )
    finally:
        await conn.close()
    # Notified: long before the periodic re-read (30 s) would have found it.
    await wait_until(lambda: _true(api.daemon.scheduler.next_fire("outside") is not None), 5)
    assert (await _detail(api, "outside"))["version"] == 1
    conn = await asyncpg.connect(database_url)
    try:
        await job_store.delete_api_job(conn, "outside")
    finally:
        await conn.close()
    await wait_until(lambda: _true(api.daemon.scheduler.next_fire("outside") is None), 5)
    assert "outside" not in api.daemon.api_jobs.stored
    assert api.daemon.scheduler.next_fire("greet") is not None  # the others stay


async def test_a_notification_rereads_the_jobs_it_names_and_a_new_listener_every_job(
    database_url: str,
) -> None:
    """A write reads back one row, not the jobs table (a scan: 30 ms at 100k jobs, which made
    every API change at that size wait on its own notification's re-read)."""
    asked: list[Collection[str] | None] = []

    async def reread(names: Collection[str] | None) -> None:
        asked.append(names)

    following = asyncio.create_task(
        follow_changes(
            clock=SystemClock(), dsn=lambda: database_url, ready=lambda: True, reread=reread
        )
    )
    conn = await asyncpg.connect(database_url)
    try:
        await wait_until(lambda: _true(len(asked) == 1))
        assert asked == [None]  # changes made while nobody listened: every job
        async with conn.transaction():
            for name in ("one", "two"):
                await conn.execute("SELECT pg_notify($1, $2)", job_store.JOBS_CHANNEL, name)
        await wait_until(lambda: _true(len(asked) == 2))
        assert asked[1] == {"one", "two"}
    finally:
        await conn.close()
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


async def _detail(api: Running, name: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/jobs/{name}")
    assert status == 200, body
    return dict(body)


async def _true(value: bool) -> bool:
    return value
