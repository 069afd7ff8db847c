"""Ad-hoc runs (`POST /runs` with a whole job) and runs' own options, against the running daemon
(in this process), real PostgreSQL and a real HTTP target."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.running.records import FireKind, Status
from scheduler_daemon.storage import store
from tests.helpers import (
    Running,
    T,
    free_port,
    listening,
    next_event,
    query_value,
    rec,
    running_daemon,
    wait_until,
    write_config,
)

SECRET = "adhoc-secret-77d1"


def adhoc_config(tmp_path: Path, dsn: str, target: str, admin_extra: str = "") -> tuple[Path, str]:
    port = free_port()
    path = tmp_path / "config.yaml"
    write_config(path, dsn, target, listen=f"127.0.0.1:{port}")
    extra = "  allow_env: [ADHOC_TOKEN]\n" + admin_extra
    path.write_text(path.read_text().replace("jobs:\n", extra + "jobs:\n", 1))
    return path, f"http://127.0.0.1:{port}"


@pytest.fixture
async def adhoc_api(
    tmp_path: Path, database_url: str, target: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("ADHOC_TOKEN", SECRET)
    async with running_daemon(*adhoc_config(tmp_path, database_url, target[0])) as api:
        yield api


def echo_job(target: str, **fields: Any) -> dict[str, Any]:
    return {
        "http": {
            "url": f"{target}/echo",
            "method": "POST",
            "json": {"from": "adhoc"},
            "headers": {"Authorization": {"env": "ADHOC_TOKEN"}},
        },
        **fields,
    }


async def _finished(api: Running, run_id: str) -> bool:
    _, body = await api.call("GET", f"/runs/{run_id}")
    return body["outcome"] is not None and body["outcome"]["status"] != "running"


async def test_an_adhoc_http_run_runs_once_and_reads_like_any_run(
    adhoc_api: Running, target: tuple[str, list[dict[str, Any]]], database_url: str
) -> None:
    api, (url, seen) = adhoc_api, target
    status, run = await api.call("POST", "/runs", json={"job": echo_job(url)})
    assert status == 201, run
    assert run["job"] == f"adhoc-{run['id'].replace('-', '')[:8]}"
    assert run["spec"]["action"]["headers"]["Authorization"] == {"env": "ADHOC_TOKEN"}
    assert SECRET not in json.dumps(run) and run["options"] is None
    await wait_until(lambda: _finished(api, run["id"]))
    assert seen == [{"query": {}, "body": {"from": "adhoc"}, "auth": SECRET}]  # resolved, once
    _, detail = await api.call("GET", f"/runs/{run['id']}")
    assert detail["state"] == "started" and detail["spec"] == run["spec"]
    assert (detail["outcome"]["status"], detail["outcome"]["http_status"]) == ("succeeded", 200)
    _, page = await api.call("GET", run["executions"])
    [row] = page["executions"]
    assert (row["job_name"], row["trigger"]) == (run["job"], "manual")
    _, listed = await api.call("GET", "/runs")
    assert [r["spec"] for r in listed["runs"] if r["id"] == run["id"]] == [run["spec"]]
    stored = await query_value(
        database_url, "SELECT job::text FROM runs WHERE id = $1", uuid.UUID(run["id"])
    )
    assert json.loads(stored)["http"]["headers"] == {"Authorization": {"env": "ADHOC_TOKEN"}}
    assert "at" not in json.loads(stored) and SECRET not in stored


async def test_a_bad_adhoc_job_is_422_with_every_problem_at_its_path(adhoc_api: Running) -> None:
    body = {"job": {"shell": "echo hi", "cron": "* * * * *", "timeout": "soon", "name": "a b"}}
    status, refused = await adhoc_api.call("POST", "/runs", json=body)
    assert (status, refused["error"]) == (422, "invalid_job")
    paths = {p["path"] for p in refused["problems"]}
    assert paths == {"shell", "cron", "timeout", "name"}
    assert "4 problems" in refused["message"]
    status, unknown = await adhoc_api.call("POST", "/runs", json={"job": "nope"})
    assert status == 404 and "problems" not in unknown  # the other refusals keep two keys
    _, runs = await adhoc_api.call("GET", "/runs")
    assert runs["runs"] == []


async def test_an_adhoc_job_cannot_take_an_existing_jobs_name(
    adhoc_api: Running, target: tuple[str, Any]
) -> None:
    status, body = await adhoc_api.call(
        "POST", "/runs", json={"job": echo_job(target[0], name="greet")}
    )
    assert (status, body["error"]) == (409, "already_exists")
    api_job = {"name": "kept", "every": "1h", "http": {"url": f"{target[0]}/echo"}}
    status, _ = await adhoc_api.call("POST", "/jobs", json=api_job)
    assert status == 201
    status, body = await adhoc_api.call(
        "POST", "/runs", json={"job": echo_job(target[0], name="kept")}
    )
    assert (status, body["error"]) == (409, "already_exists")  # an API job's name too
    status, body = await adhoc_api.call(
        "POST", "/runs", json={"job": echo_job(target[0], name="mine")}
    )
    assert (status, body["job"]) == (201, "mine")


@pytest.mark.parametrize(
    ("options", "path"),
    [({"priority": "urgent"}, "priority"), ({"retry": {"attempts": 0}}, "retry.attempts")],
)
async def test_bad_options_are_422_in_either_form(
    adhoc_api: Running, target: tuple[str, Any], options: dict[str, Any], path: str
) -> None:
    for job in ("greet", echo_job(target[0])):
        status, body = await adhoc_api.call("POST", "/runs", json={"job": job, **options})
        assert (status, body["error"]) == (422, "invalid_options")
        assert [p["path"] for p in body["problems"]] == [path]


async def test_a_runs_retry_applies_to_that_run_only(adhoc_api: Running) -> None:
    """greet succeeds, so its one attempt says nothing; explode fails: 2 attempts as configured,
    4 with the run's own retry; and an ad-hoc job's failing run takes its run's retry too."""
    retry = {"attempts": 4, "delay": "10ms"}
    _, mine = await adhoc_api.call(
        "POST", "/runs", json={"job": "explode", "retry": retry, "priority": "high"}
    )
    assert mine["options"] == {"retry": retry, "priority": "high"}
    failing = {"http": {"url": "http://127.0.0.1:9/closed"}, "timeout": "2s"}
    _, adhoc = await adhoc_api.call("POST", "/runs", json={"job": failing, "retry": retry})
    await wait_until(lambda: _finished(adhoc_api, mine["id"]))
    _, plain = await adhoc_api.call("POST", "/runs", json={"job": "explode"})  # no overlap
    for run in (plain, adhoc):
        await wait_until(lambda run=run: _finished(adhoc_api, run["id"]))
    attempts = {}
    for run in (mine, plain, adhoc):
        _, detail = await adhoc_api.call("GET", f"/runs/{run['id']}")
        attempts[run["id"]] = (detail["outcome"]["status"], detail["outcome"]["attempts"])
    assert attempts == {
        mine["id"]: ("failed", 4),
        plain["id"]: ("failed", 2),
        adhoc["id"]: ("failed", 4),
    }
    assert adhoc_api.daemon.config.job("explode").retry.attempts == 2  # type: ignore[union-attr]


async def test_an_adhoc_run_survives_a_restart(
    tmp_path: Path,
    database_url: str,
    target: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADHOC_TOKEN", SECRET)
    config = adhoc_config(tmp_path, database_url, target[0])
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    async with running_daemon(*config) as api:
        body = {"job": echo_job(target[0], name="later"), "at": at.isoformat()}
        status, run = await api.call("POST", "/runs", json=body)
        assert status == 201
        assert await api.stop() == 0  # before it is due
    assert target[1] == []
    async with listening(database_url) as events, running_daemon(*config) as api:
        event = await next_event(events, fire_id=run["id"])
        assert (event["job"], event["status"]) == ("later", "succeeded")
    assert [seen["auth"] for seen in target[1]] == [SECRET]


async def test_stored_adhoc_runs_are_checked_like_the_apis_and_under_todays_rules(
    adhoc_api: Running, database_url: str, target: tuple[str, list[dict[str, Any]]]
) -> None:
    """A row written straight into `runs` (or by a daemon that allowed shell jobs then)."""
    bad = {
        "owned": ({"shell": "touch /tmp/owned", "timezone": "UTC"}, None),
        "greet": (echo_job(target[0]), None),  # a configured job's name
        "sched": (echo_job(target[0], every="1m"), None),
        "opts": (echo_job(target[0]), {"priority": "now"}),
        "clear": ({"http": {"url": "http://127.0.0.1:9/", "headers": {"X-Api-Key": "k"}}}, None),
    }
    ids = {name: uuid.uuid4() for name in bad}
    conn = await asyncpg.connect(database_url)
    try:
        with capture_logs() as logs:
            for name, (job, options) in bad.items():
                await conn.execute(
                    "INSERT INTO runs (id, job_name, run_at, job, options)"
                    " VALUES ($1, $2, now(), $3::jsonb, $4::jsonb)",
                    ids[name],
                    name,
                    json.dumps(job),
                    json.dumps(options) if options is not None else None,
                )
            await wait_until(
                lambda: query_value(
                    database_url,
                    "SELECT count(*) = $2 FROM runs"
                    " WHERE id = any($1) AND cancelled_at IS NOT NULL",
                    list(ids.values()),
                    len(ids),
                )
            )
        executions = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE fire_id = any($1)", list(ids.values())
        )
    finally:
        await conn.close()
    refused = {e["job"]: e["why"] for e in logs if e["event"] == "oneoff_run_refused"}
    assert set(refused) == set(bad) and executions == 0 and target[1] == []
    assert refused["owned"].startswith("shell: `shell` jobs cannot be created")
    assert "configured now" in refused["greet"] and "no schedule" in refused["sched"]
    assert refused["opts"].startswith("priority:") and "looks like a secret" in refused["clear"]


async def test_an_abandoned_attempt_of_a_run_is_resumed_with_what_the_run_ran(
    tmp_path: Path,
    database_url: str,
    target: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process killed mid-attempt: the next attempt of an ad-hoc run is its own job's, and a
    configured job's run keeps its overrides and its own retry (greet has no retry of its own)."""
    monkeypatch.setenv("ADHOC_TOKEN", SECRET)
    path, base = adhoc_config(tmp_path, database_url, target[0])
    path.write_text("node: n1\n" + path.read_text())
    adhoc_id, greet_id = uuid.uuid4(), uuid.uuid4()
    running = {"status": Status.RUNNING, "finished_at": None, "duration_ms": None}
    pool: asyncpg.Pool = await store.connect(database_url)
    try:
        await pool.execute(
            """INSERT INTO runs (id, job_name, run_at, overrides, job, options, started_at)
               VALUES ($1, 'lost', $3, NULL, $4::jsonb, $5::jsonb, $3),
                      ($2, 'greet', $3, $6::jsonb, NULL, $5::jsonb, $3)""",
            adhoc_id,
            greet_id,
            T,
            json.dumps(echo_job(target[0])),
            json.dumps({"retry": {"attempts": 2}}),
            json.dumps({"name": "resumed"}),
        )
        rows = [
            rec("lost", fire_id=adhoc_id, trigger=FireKind.MANUAL, **running),
            rec("greet", fire_id=greet_id, trigger=FireKind.MANUAL, **running),
        ]
        async with pool.acquire() as conn:
            await store.write_executions(conn, rows)
    finally:
        await pool.close()
    async with running_daemon(path, base):
        sql = "SELECT count(*) = 2 FROM executions WHERE attempt = 2 AND status = 'succeeded'"
        await wait_until(lambda: query_value(database_url, sql))
    output = await query_value(
        database_url, "SELECT output FROM executions WHERE fire_id = $1 AND attempt = 2", greet_id
    )
    assert output == "hello resumed"
    assert [seen["auth"] for seen in target[1]] == [SECRET]  # the ad-hoc job's request
