"""The admin API against the running daemon (in this process), real PostgreSQL and real HTTP.

Auth, refusals and query checks that need no database are in tests/unit/test_admin_api.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation import pauses as pauses_module
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.running import runner as runner_module
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import queries, store
from tests import e2e_jobs
from tests.helpers import (
    ADMIN_TOKEN,
    AUTH,
    ENV,
    JOB_TOKEN,
    Running,
    free_port,
    listening,
    next_event,
    query_value,
    running_daemon,
    wait_until,
    write_config,
)

# -- errors that need the database (the others: tests/unit/test_admin_api.py) -------------------


async def test_unknown_runs_are_404_with_stable_codes(api: Running) -> None:
    for method in ("GET", "DELETE"):
        status, body = await api.call(method, f"/runs/{uuid.uuid4()}")
        assert (status, body["error"]) == (404, "unknown_run"), method
        assert body["message"]


# -- manual runs ----------------------------------------------------------------------------------


async def test_trigger_with_python_args_runs_them_records_manual_and_publishes_one_event(
    api: Running, database_url: str
) -> None:
    async with listening(database_url) as events:
        status, body = await api.call(
            "POST", "/jobs/greet/trigger", json={"args": {"name": "operator", "times": 2}}
        )
        assert status == 202 and body["trigger"] == "manual"
        event = await next_event(events, fire_id=body["fire_id"])
    assert event["job"] == "greet" and event["status"] == "succeeded" and event["attempt"] == 1
    assert event["trigger"] == "manual" and event["duration_ms"] >= 0
    await wait_until(lambda: _has_rows(api, body["fire_id"]))
    status, page = await api.call("GET", "/jobs/greet/executions?trigger=manual")
    [row] = page["executions"]
    assert row["fire_id"] == body["fire_id"] and row["output"] == "hello operator hello operator"
    assert events.empty()  # one event per final attempt: no `running` row was announced


async def _has_rows(api: Running, fire_id: str) -> bool:
    _, page = await api.call("GET", "/executions?trigger=manual")
    return any(r["fire_id"] == fire_id for r in page["executions"])


async def test_trigger_with_http_params_and_json_reaches_the_target(
    api: Running, target: tuple[str, list[dict[str, Any]]], database_url: str
) -> None:
    async with listening(database_url) as events:
        status, body = await api.call(
            "POST",
            "/jobs/ping/trigger",
            json={"params": {"level": 7, "date": "2026-11-25"}, "json": {"levels": [1, 2]}},
        )
        assert status == 202
        event = await next_event(events, fire_id=body["fire_id"])
    assert event["status"] == "succeeded" and event["http_status"] == 200
    [request] = target[1]
    assert request["query"] == {"level": "7", "date": "2026-11-25"}
    assert request["body"] == {"levels": [1, 2]}
    assert request["auth"] == f"Bearer {JOB_TOKEN}"  # the secret reaches the target, only there


async def test_every_final_attempt_is_one_event(api: Running, database_url: str) -> None:
    async with listening(database_url) as events:
        _, body = await api.call("POST", "/jobs/explode/trigger")
        first = await next_event(events, fire_id=body["fire_id"], attempt=1)
        second = await next_event(events, fire_id=body["fire_id"], attempt=2)
    assert first["status"] == second["status"] == "failed"
    assert "ValueError: boom" in second["error"]


async def test_overlap_policy_applies_to_manual_fires(api: Running) -> None:
    job = api.daemon.config.job("greet")
    assert job is not None
    gate = e2e_jobs.HELD.setdefault("overlap", asyncio.Event())
    first = api.daemon.trigger(job, {"name": "x", "hold": "overlap"})
    assert first is not None
    status, body = await api.call("POST", "/jobs/greet/trigger")
    assert (status, body["error"]) == (409, "not_started")  # overlap: skip, the first still runs
    gate.set()
    await wait_until(lambda: _idle(api, "greet"))
    status, body = await api.call("POST", "/jobs/greet/trigger")
    assert status == 202  # once the first has finished, a manual fire starts again


async def _idle(api: Running, job: str) -> bool:
    return not api.daemon.running(job)


# -- reading --------------------------------------------------------------------------------------


def _rec(job: str, at: datetime, status: Status, **kw: Any) -> ExecutionRecord:
    drift = kw.pop("drift", 5)
    started = at + timedelta(milliseconds=drift)
    return ExecutionRecord(
        scheduled_fire_id(job, at), job, at, kw.pop("attempt", 1), FireKind.SCHEDULE, status,
        started, started + timedelta(milliseconds=40), float(drift), 40.0, node="test", **kw,
    )  # fmt: skip


async def _insert(dsn: str, records: list[ExecutionRecord]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await store.write_executions(conn, records)
    finally:
        await conn.close()


async def test_executions_pages_newest_first_with_filters(api: Running, database_url: str) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    records = [
        _rec(
            "greet", base + timedelta(minutes=i), Status.FAILED if i % 3 == 0 else Status.SUCCEEDED
        )
        for i in range(10)
    ] + [_rec("greet", base + timedelta(minutes=9), Status.SUCCEEDED, attempt=2)]
    await _insert(database_url, records)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "/jobs/greet/executions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", query)
        assert status == 200
        seen += page["executions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 11 and len({r["id"] for r in seen}) == 11
    keys = [(r["scheduled_at"], r["id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    _, failed = await api.call("GET", "/executions?job=greet&status=failed")
    assert len(failed["executions"]) == 4
    since = (base + timedelta(minutes=8)).isoformat()
    until = (base + timedelta(minutes=9)).isoformat()
    _, window = await api.call("GET", "/executions", params={"since": since, "until": until})
    assert [r["scheduled_at"] for r in window["executions"]] == [since]
    _, exact = await api.call("GET", "/executions?limit=11&job=greet")
    assert exact["next_cursor"] is None and len(exact["executions"]) == 11  # no empty last page
    _, other = await api.call("GET", "/jobs/removed-job/executions")
    assert other == {"executions": [], "next_cursor": None}  # history of a removed job is fine


async def test_executions_filter_by_fire(api: Running, database_url: str) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    retried = [_rec("explode", base, Status.FAILED, attempt=n) for n in (1, 2, 3)]
    others = [_rec("explode", base + timedelta(minutes=1), Status.SUCCEEDED),
              _rec("greet", base, Status.SUCCEEDED)]  # fmt: skip
    await _insert(database_url, retried + others)
    fire = str(retried[0].fire_id)
    _, page = await api.call("GET", f"/executions?fire_id={fire}")
    attempts = [(r["fire_id"], r["attempt"]) for r in page["executions"]]
    assert attempts == [(fire, 3), (fire, 2), (fire, 1)]
    seen: list[int] = []
    query: str | None = f"/jobs/explode/executions?fire_id={fire}&limit=2"
    while query is not None:  # pages of one fire
        _, page = await api.call("GET", query)
        seen += [r["attempt"] for r in page["executions"]]
        cursor = page["next_cursor"]
        query = (
            f"/jobs/explode/executions?fire_id={fire}&limit=2&cursor={cursor}" if cursor else None
        )
    assert seen == [3, 2, 1]
    _, page = await api.call("GET", f"/jobs/greet/executions?fire_id={fire}")
    assert page["executions"] == []  # another job's fire: both filters apply
    _, page = await api.call("GET", f"/executions?fire_id={fire}&status=succeeded")
    assert page["executions"] == []
    _, page = await api.call("GET", f"/executions?fire_id={uuid.uuid4()}")
    assert page == {"executions": [], "next_cursor": None}


async def test_jobs_show_schedule_next_fires_state_and_statistics(
    api: Running, database_url: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await _insert(database_url, [
        _rec("greet", now - timedelta(minutes=i), Status.SUCCEEDED, drift=i) for i in range(1, 20)
    ] + [_rec("greet", now - timedelta(minutes=30), Status.FAILED, error="kaput")])  # fmt: skip
    status, body = await api.call("GET", "/jobs")
    assert status == 200
    jobs = {j["name"]: j for j in body["jobs"]}
    assert set(jobs) == {"greet", "explode", "ping", "shell"}
    ping = jobs["ping"]
    assert ping["schedule_in_words"] == "At 09:00, Monday through Friday (America/Sao_Paulo)"
    assert len(ping["next_fires"]) == 1 and ping["paused"] is False
    stats = jobs["greet"]["stats"]
    assert stats["runs"] == 20 and stats["failed"] == 1 and stats["success_rate"] == 0.95
    assert stats["last_status"] == "succeeded" and stats["p95_drift_ms"] > stats["avg_drift_ms"]
    status, one = await api.call("GET", "/jobs/ping?window=1h")
    assert status == 200 and len(one["next_fires"]) == 5
    nexts = [datetime.fromisoformat(t) for t in one["next_fires"]]
    assert all(t.astimezone(UTC).hour == 12 for t in nexts)  # 09:00 in São Paulo (UTC-3)
    assert one["spec"]["action"]["url"].endswith("/echo")
    _, stats_body = await api.call("GET", "/stats?window=2h")
    assert stats_body["totals"]["runs"] == 20 and stats_body["totals"]["failed"] == 1
    assert sum(m["attempts"] for m in stats_body["per_minute"]) == 20


# -- pause, resume, one-off runs, restarts -------------------------------------------------------


async def test_a_pause_is_persisted_survives_a_restart_and_stops_fires(
    config: tuple[Path, str], database_url: str
) -> None:
    async with running_daemon(*config) as api:
        status, body = await api.call("POST", "/jobs/greet/pause")
        assert status == 200 and body["paused"] is True
        assert await api.stop() == 0
    async with running_daemon(*config) as api:
        _, job = await api.call("GET", "/jobs/greet")
        assert job["paused"] is True
        greet = api.daemon.config.job("greet")
        assert greet is not None
        api.daemon._dispatch(greet, datetime.now(UTC))  # what the scheduler does when it is due
        assert api.daemon.running("greet") == []
        status, body = await api.call("POST", "/jobs/greet/resume")
        assert status == 200 and body == {"job": "greet", "paused": False, "paused_at": None}
        api.daemon._dispatch(greet, datetime.now(UTC))
        assert len(api.daemon.running("greet")) == 1
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT paused_at FROM jobs WHERE name = 'greet'") is None
    finally:
        await conn.close()


async def test_a_one_off_run_survives_a_restart_and_runs_once(
    config: tuple[Path, str], database_url: str
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    async with running_daemon(*config) as api:
        status, run = await api.call(
            "POST", "/runs", json={"job": "greet", "at": at.isoformat(), "args": {"name": "later"}}
        )
        assert status == 201 and run["state"] == "pending"
        status, later = await api.call(
            "POST", "/runs", json={"job": "greet", "at": (at + timedelta(days=1)).isoformat()}
        )
        assert status == 201
        assert await api.stop() == 0  # before it is due
    async with listening(database_url) as events, running_daemon(*config) as api:
        event = await next_event(events, fire_id=run["id"])
        assert event["status"] == "succeeded" and event["trigger"] == "manual"
        status, body = await api.call("GET", f"/runs/{run['id']}")
        assert body["state"] == "started"
        status, body = await api.call("DELETE", f"/runs/{run['id']}")
        assert (status, body["error"]) == (409, "already_started")
        status, body = await api.call("DELETE", f"/runs/{later['id']}")
        assert status == 200 and body["state"] == "cancelled"
        status, body = await api.call("DELETE", f"/runs/{later['id']}")
        assert status == 200 and body["state"] == "cancelled"
        _, pending = await api.call("GET", "/runs?pending=1")
        assert pending["runs"] == []
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT output FROM executions WHERE fire_id = $1", uuid.UUID(run["id"])
        )
    finally:
        await conn.close()
    assert [r["output"] for r in rows] == ["hello later"]


async def _outcome(api: Running, run_id: str) -> dict[str, Any] | None:
    status, body = await api.call("GET", f"/runs/{run_id}")
    assert status == 200, body
    outcome: dict[str, Any] | None = body["outcome"]
    return outcome


async def _finished(api: Running, run_id: str) -> bool:
    outcome = await _outcome(api, run_id)
    return outcome is not None and outcome["status"] != "running"


async def test_a_runs_outcome_is_readable_once_it_ran(api: Running) -> None:
    status, run = await api.call("POST", "/runs", json={"job": "greet", "args": {"name": "o"}})
    assert status == 201 and "outcome" not in run  # its outcome is GET /runs/{id}'s
    assert run["executions"] == f"/executions?fire_id={run['id']}"
    await wait_until(lambda: _finished(api, run["id"]))
    outcome = await _outcome(api, run["id"])
    assert outcome is not None
    _, page = await api.call("GET", run["executions"])
    [row] = page["executions"]
    assert row["output"] == "hello o"
    assert outcome == {
        "status": "succeeded",
        "attempts": 1,
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_ms": row["duration_ms"],
        "error": None,
        "http_status": None,
        "exit_code": None,
    }
    status, failing = await api.call("POST", "/runs", json={"job": "explode"})
    assert status == 201
    await wait_until(lambda: _finished(api, failing["id"]))
    outcome = await _outcome(api, failing["id"])
    _, page = await api.call("GET", failing["executions"])
    second, first = page["executions"]
    assert outcome is not None and (outcome["status"], outcome["attempts"]) == ("failed", 2)
    assert outcome["started_at"] == first["started_at"]  # of the first attempt
    assert outcome["finished_at"] == second["finished_at"]  # the rest: of the last one
    assert outcome["error"] == second["error"] and "ValueError: boom" in outcome["error"]


async def test_a_run_has_no_outcome_until_it_started(api: Running) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, run = await api.call("POST", "/runs", json={"job": "greet", "at": later})
    status, body = await api.call("GET", f"/runs/{run['id']}")
    assert (status, body["state"], body["outcome"]) == (200, "pending", None)
    await api.call("DELETE", f"/runs/{run['id']}")
    status, body = await api.call("GET", f"/runs/{run['id']}")
    assert (status, body["state"], body["outcome"]) == (200, "cancelled", None)


async def test_a_run_waiting_for_a_retry_reads_running(
    api: Running, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its last row says failed, but a retry may still succeed: the outcome is not final yet."""
    monkeypatch.setattr(runner_module, "backoff_delay", lambda *args: 3600.0)
    _, run = await api.call("POST", "/runs", json={"job": "explode"})
    await wait_until(
        lambda: query_value(
            database_url,
            "SELECT status = 'failed' FROM executions WHERE fire_id = $1 AND attempt = 1",
            uuid.UUID(run["id"]),
        )
    )
    outcome = await _outcome(api, run["id"])
    assert outcome is not None and (outcome["status"], outcome["attempts"]) == ("running", 1)
    assert "ValueError: boom" in outcome["error"]  # what the last attempt said


async def test_runs_written_straight_into_the_table_pass_the_apis_checks(
    api: Running, database_url: str
) -> None:
    status, body = await api.call("POST", "/jobs/greet/trigger", json={"args": {"name": "x"}})
    assert status == 202
    await wait_until(lambda: _has_rows(api, body["fire_id"]))
    taken = uuid.UUID(body["fire_id"])  # a manual fire's id, version 4 like a run's
    bad = {
        uuid.uuid4(): '["not", "keyword arguments"]',
        scheduled_fire_id("greet", datetime(2030, 1, 1, tzinfo=UTC)): None,  # a scheduled fire's
        taken: None,
    }
    conn = await asyncpg.connect(database_url)
    try:
        for run_id, overrides in bad.items():
            await conn.execute(
                "INSERT INTO runs (id, job_name, run_at, overrides)"
                " VALUES ($1, 'greet', now(), $2)",
                run_id,
                overrides,
            )
        with capture_logs() as logs:
            await wait_until(
                lambda: query_value(
                    database_url,
                    "SELECT count(*) = 3 FROM runs WHERE id = any($1) AND cancelled_at IS NOT NULL",
                    list(bad),
                )
            )
        refused = {e["run_id"]: e["why"] for e in logs if e["event"] == "oneoff_run_refused"}
        assert set(refused) == {str(run_id) for run_id in bad}
        assert "JSON object" in refused[str(next(iter(bad)))]
        executions = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE fire_id = any($1)", list(bad)
        )
        assert executions == 1  # the manual fire's own attempt, nothing added to it
    finally:
        await conn.close()


async def _queue_runs(dsn: str, job: str, count: int, *, days: float = 1) -> list[uuid.UUID]:
    """Pending runs written straight into the table (as the CLI, or a hand, does), in a day."""
    at = datetime.now(UTC) + timedelta(days=days)
    ids = [uuid.uuid4() for _ in range(count)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO runs (id, job_name, run_at) VALUES ($1, $2, $3)",
            [(run_id, job, at + timedelta(seconds=i)) for i, run_id in enumerate(ids)],
        )
    finally:
        await conn.close()
    return ids


async def test_pending_runs_are_bounded_per_job_with_a_429(api: Running, database_url: str) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await _queue_runs(database_url, "greet", queries.MAX_PENDING_RUNS_PER_JOB - 1)
    status, last = await api.call("POST", "/runs", json={"job": "greet", "at": later})
    assert status == 201  # the 100th
    status, body = await api.call("POST", "/runs", json={"job": "greet", "at": later})
    assert (status, body["error"]) == (429, "too_many_runs")
    assert body["message"].startswith("100 one-off runs of job 'greet' are pending already")
    status, _ = await api.call("POST", "/runs", json={"job": "explode", "at": later})
    assert status == 201  # another job has room
    status, _ = await api.call("DELETE", f"/runs/{last['id']}")
    assert status == 200
    status, _ = await api.call("POST", "/runs", json={"job": "greet", "at": later})
    assert status == 201  # a cancelled run makes room
    document = (await api.call("GET", "/openapi.json"))[1]
    assert "429" in document["paths"]["/runs"]["post"]["responses"]


async def test_runs_past_the_total_bound_wait_in_the_table_until_there_is_room(
    api: Running, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pauses_module, "CONTROL_POLL", 0.05)
    oneoff = api.daemon._oneoff
    capacity = queries.MAX_PENDING_RUNS
    # Written by hand past the bound (the API and the CLI refuse that many): due in a day, the
    # first 1000 of them (the ones due first) are waited for, the other 200 stay in the table.
    with capture_logs() as logs:
        first = await _queue_runs(database_url, "gone", capacity)
        await _queue_runs(database_url, "gone", 200, days=2)
        await wait_until(lambda: _waiting(oneoff, capacity))
    assert set(oneoff._waiting) == set(first)
    [deferred] = [e for e in logs if e["event"] == "oneoff_runs_deferred"]
    assert deferred["capacity"] == capacity and deferred["waiting"] == capacity
    status, body = await api.call("POST", "/runs", json={"job": "greet"})
    assert (status, body["error"]) == (429, "too_many_runs")
    assert body["message"].startswith("1000 one-off runs in all are pending already")
    for run_id in first[:300]:
        status, _ = await api.call("DELETE", f"/runs/{run_id}")
        assert status == 200
    await wait_until(lambda: _waiting(oneoff, capacity - 100))  # the 200 others now
    status, body = await api.call("POST", "/runs", json={"job": "greet"})
    assert status == 201  # room again


async def _waiting(oneoff: OneOffRuns, count: int) -> bool:
    return oneoff.pending() == count


async def test_while_the_database_is_away_reads_of_the_schedule_work_and_history_is_503(
    tmp_path: Path, target: tuple[str, Any]
) -> None:
    port = free_port()
    path = tmp_path / "config.yaml"
    write_config(path, f"postgresql://nobody@127.0.0.1:{free_port()}/none", target[0],
                 listen=f"127.0.0.1:{port}")  # fmt: skip
    daemon = Daemon(load_config(path, environ=ENV))
    task = asyncio.create_task(daemon.run())
    api = Running(daemon, task, f"http://127.0.0.1:{port}")
    try:

        async def up() -> bool:
            try:
                return (await api.call("GET", "/healthz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await wait_until(up)
        status, health = await api.call("GET", "/healthz")
        assert health["status"] == "degraded" and health["database"] == "buffering"
        assert (await api.call("GET", "/healthz?ready=1"))[0] == 503
        status, jobs = await api.call("GET", "/jobs")
        assert status == 200 and jobs["jobs"][0]["stats"] is None
        for method, path_ in [("GET", "/executions"), ("GET", "/stats"),
                              ("POST", "/jobs/greet/pause"), ("POST", "/runs")]:  # fmt: skip
            status, body = await api.call(method, path_, json={"job": "greet"})
            assert (status, body["error"]) == (503, "database_unavailable"), path_
    finally:
        await api.stop()


async def test_unix_socket_listener(
    tmp_path: Path, database_url: str, target: tuple[str, Any]
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, database_url, target[0], listen="./admin.sock")
    daemon = Daemon(load_config(path, environ=ENV))
    task = asyncio.create_task(daemon.run())
    try:
        connector = aiohttp.UnixConnector(path=str(tmp_path / "admin.sock"))
        async with aiohttp.ClientSession(connector=connector) as http:

            async def up() -> bool:
                try:
                    async with http.get("http://admin/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up)
            async with http.get("http://admin/jobs", headers=AUTH) as r:
                assert r.status == 200 and len((await r.json())["jobs"]) == 4
    finally:
        daemon.request_stop("test")
        assert await asyncio.wait_for(task, 30) == 0


# -- secrets -----------------------------------------------------------------------------------


async def test_secrets_appear_nowhere_but_at_the_target(
    config: tuple[Path, str], database_url: str
) -> None:
    with capture_logs() as logs:
        async with running_daemon(*config) as api, listening(database_url) as events:
            _, body = await api.call("POST", "/jobs/ping/trigger")
            await next_event(events, fire_id=body["fire_id"])
            responses = [
                (await api.call("GET", path))[1]
                for path in ("/jobs", "/jobs/ping", "/executions", "/stats", "/openapi.json",
                             "/metrics", "/healthz", "/runs")
            ]  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        tables = [
            [dict(r) for r in await conn.fetch(f"SELECT * FROM {table}")]
            for table in ("jobs", "executions", "runs")
        ]
    finally:
        await conn.close()
    for where, data in [("logs", logs), ("api", responses), ("database", tables)]:
        text = json.dumps(data, default=str)
        assert JOB_TOKEN not in text, where
        assert ADMIN_TOKEN not in text, where
    assert "${JOB_TOKEN}" in json.dumps(tables[0], default=str)  # shown as written


# -- the contract ---------------------------------------------------------------------------------


async def test_an_admin_address_in_use_stops_the_start_with_a_clear_error(
    tmp_path: Path, database_url: str, target: tuple[str, Any]
) -> None:
    from scheduler_daemon.errors import AdminUnavailable

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "config.yaml"
        write_config(path, database_url, target[0], listen=f"127.0.0.1:{port}")
        with pytest.raises(AdminUnavailable, match=f"admin: cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(Daemon(load_config(path, environ=ENV)).run(), 30)
