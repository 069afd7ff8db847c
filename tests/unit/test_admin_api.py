"""The admin API's auth, refusals, query checks and document: the app with a stand-in daemon.

No PostgreSQL and no daemon: ``build_app`` gets a small object implementing ``Controlled`` whose
database is away (every query that needs one answers 503), so whatever is answered before the
database is asked can be tested in milliseconds. tests/pg/test_admin.py covers the rest.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from scheduler_daemon.operation import api_models
from scheduler_daemon.operation.admin import ROUTES, build_app, spec
from scheduler_daemon.operation.api_jobs import ApiJobs
from scheduler_daemon.operation.metrics import LiveState, Metrics
from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.specs import AdminSpec, Config, JobSpec, load_config
from scheduler_daemon.specs.api_job import ApiJobRules
from scheduler_daemon.storage.nodes import Counts
from scheduler_daemon.storage.queries import OneOffRun, RunSetup
from tests.helpers import ADMIN_TOKEN, AUTH, ENV, T, write_config

# -- the stand-in ---------------------------------------------------------------------------------


class _Scheduler:
    def describe(self, name: str) -> str:
        return "every 1h"

    def upcoming(self, name: str, count: int) -> list[datetime]:
        return [T + timedelta(hours=n) for n in range(1, count + 1)]


@dataclass
class _Recorder:
    connected: bool = True
    pending: int = 0
    pool: None = None  # no database: what needs one answers 503


@dataclass
class Cluster:
    """membership.py's Membership as /healthz reads it."""

    node: str = "a"
    live: tuple[str, ...] = ("a", "b")
    connected: bool = True
    counts: dict[str, Counts] = field(
        default_factory=lambda: {"a": Counts(7, 5, 2), "b": Counts(4, 8, 0), "gone": Counts(1)}
    )


@dataclass
class StubDaemon:
    """Implements operation/admin.py's ``Controlled``; records what the API asked of it."""

    config: Config
    reload_error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metrics: Metrics = field(default_factory=Metrics)
    scheduler: _Scheduler = field(default_factory=_Scheduler)
    recorder: _Recorder = field(default_factory=_Recorder)
    refuse_fires: bool = False
    api_jobs: ApiJobs = field(default_factory=lambda: _no_api_jobs())
    triggered: list[tuple[str, Mapping[str, Any] | None]] = field(default_factory=list)
    membership: Cluster | None = None

    @property
    def all_jobs(self) -> tuple[JobSpec, ...]:
        return self.config.jobs

    def job(self, name: str) -> JobSpec | None:
        return self.config.job(name)

    def running(self, job: str) -> list[Fire]:
        return []

    def paused(self) -> Mapping[str, datetime]:
        return {}

    async def set_paused(self, job: str, paused: bool) -> datetime | None:
        raise AssertionError("the API asks for the database before pausing")

    def trigger(self, job: JobSpec, overrides: Mapping[str, Any] | None) -> Fire | None:
        self.triggered.append((job.name, overrides))
        if self.refuse_fires:
            return None
        return Fire(job=job, scheduled_at=T, trigger=FireKind.MANUAL, overrides=overrides)

    async def create_run(
        self,
        job: JobSpec,
        at: datetime,
        overrides: Mapping[str, Any] | None,
        setup: RunSetup | None = None,
    ) -> OneOffRun:
        raise AssertionError("the API asks for the database before creating a run")

    async def cancel_run(self, run_id: uuid.UUID) -> OneOffRun | None:
        raise AssertionError("the API asks for the database before cancelling a run")


def _no_api_jobs() -> ApiJobs:
    async def nothing() -> None:
        return None

    return ApiJobs(
        rules=ApiJobRules(kinds=frozenset(), env=frozenset(), timezone="UTC"),
        cache=Path("/nonexistent/api_jobs.json"),
        taken=lambda: (),
        on_change=nothing,
    )


def _stub(tmp_path: Path, *, token: str | None = "${ADMIN_TOKEN}") -> StubDaemon:
    path = tmp_path / "config.yaml"
    write_config(
        path, "postgresql://nobody@127.0.0.1:9/none", "http://127.0.0.1:9", listen="127.0.0.1:9",
        token=token,
    )  # fmt: skip
    daemon = StubDaemon(config=load_config(path, environ=ENV))
    daemon.metrics.live = LiveState(
        running_attempts=lambda: 0,
        waiting_fires=lambda priority: 0,
        recorder_stats=lambda: defaultdict(int),
        journal_bytes=lambda: 0,
        database_up=lambda: True,
        jobs_by_state=lambda: {},
    )
    return daemon


class Api:
    def __init__(self, client: TestClient[Any, Any], daemon: StubDaemon) -> None:
        self.client, self.daemon = client, daemon

    async def call(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


async def _serve(daemon: StubDaemon) -> AsyncIterator[Api]:
    async with TestClient(TestServer(build_app(daemon))) as client:
        yield Api(client, daemon)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for served in _serve(_stub(tmp_path)):
        yield served


@pytest.fixture
async def tokenless(tmp_path: Path) -> AsyncIterator[Api]:
    async for served in _serve(_stub(tmp_path, token=None)):
        yield served


# -- auth -----------------------------------------------------------------------------------------


async def test_health_and_metrics_are_open_everything_else_needs_the_token(api: Api) -> None:
    status, health = await api.call("GET", "/healthz", auth=False)
    assert status == 200 and health["status"] == "ok" and health["database"] == "connected"
    status, metrics = await api.call("GET", "/metrics", auth=False)
    assert status == 200 and "scheduler_running_attempts" in metrics
    protected = [("GET", "/jobs"), ("GET", "/executions"), ("GET", "/openapi.json"),
                 ("POST", "/jobs/greet/trigger"), ("GET", "/stats"), ("GET", "/runs")]  # fmt: skip
    for method, path in protected:
        status, body = await api.call(method, path, auth=False)
        assert (status, body["error"]) == (401, "unauthorized"), path
        status, body = await api.call(
            method, path, auth=False, headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401, path
    status, body = await api.call(
        "GET", "/jobs", auth=False, headers={"Authorization": ADMIN_TOKEN}
    )
    assert status == 401  # the scheme is required
    status, document = await api.call("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    assert api.daemon.triggered == []  # nothing ran for a refused request


async def test_the_token_may_come_in_x_api_key_instead(api: Api) -> None:
    """Clients that only know API keys send the same token in X-API-Key."""
    key = {"X-API-Key": ADMIN_TOKEN}
    status, body = await api.call("GET", "/jobs", auth=False, headers=key)
    assert status == 200 and body["jobs"]
    status, _ = await api.call("POST", "/jobs/greet/trigger", auth=False, headers=key)
    assert status == 202 and api.daemon.triggered == [("greet", None)]
    for wrong in ({"X-API-Key": "wrong"}, {"X-API-Key": f"Bearer {ADMIN_TOKEN}"},
                  {"X-API-Key": ""}, {"X-Api-Key": ADMIN_TOKEN[:-1]}):  # fmt: skip
        status, body = await api.call("GET", "/jobs", auth=False, headers=wrong)
        assert (status, body["error"]) == (401, "unauthorized"), wrong
        assert "X-API-Key" in body["message"]
    # Either header carrying the token is enough: a proxy may fill Authorization with its own.
    for both in ({**key, "Authorization": "Basic cHJveHk6cHc="},
                 {"X-API-Key": "wrong", **AUTH}):  # fmt: skip
        status, _ = await api.call("GET", "/jobs", auth=False, headers=both)
        assert status == 200, both


async def test_a_token_header_that_is_not_utf8_is_refused_not_a_crash(api: Api) -> None:
    for header in (b"Authorization: Bearer \xff\xfe", b"X-API-Key: \xff" + ADMIN_TOKEN.encode()):
        status, body = await _raw_get(api, "/jobs", header)
        assert (status, body["error"]) == (401, "unauthorized"), header


async def _raw_get(api: Api, path: str, header: bytes) -> tuple[int, Any]:
    """A request with bytes in a header that no HTTP client library would send."""
    url = api.client.make_url(path)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header
            + b"\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    finally:
        writer.close()
    return int(head.split()[1]), json.loads(body)


async def test_health_is_an_alias_of_healthz(api: Api, tokenless: Api) -> None:
    for served in (api, tokenless):
        status, health = await served.call("GET", "/health", auth=False)
        assert status == 200 and health["status"] == "ok", health
        assert set(health) == set((await served.call("GET", "/healthz", auth=False))[1])
    api.daemon.recorder.connected = False
    status, health = await api.call("GET", "/health?ready=1", auth=False)
    assert status == 503 and health["database"] == "buffering"
    status, body = await api.call("GET", "/health?verbose=1", auth=False)
    assert (status, body["error"]) == (400, "unknown_parameter")


async def test_healthz_shows_the_cluster_and_is_degraded_when_this_replica_cannot_heartbeat(
    api: Api,
) -> None:
    _, health = await api.call("GET", "/healthz", auth=False)
    assert health["cluster"] is None  # runs alone
    api.daemon.membership = Cluster()
    api.daemon.metrics.claims = lambda: {"won": 7, "lost": 5, "unreachable": 0}
    api.daemon.metrics.takeovers = lambda: 2
    status, health = await api.call("GET", "/healthz?ready=1", auth=False)
    assert status == 200 and health["status"] == "ok"
    replicas = {
        "a": {"won": 7, "lost": 5, "takeovers": 2},
        "b": {"won": 4, "lost": 8, "takeovers": 0},
    }
    claims = {
        "claims": {"won": 7, "lost": 5, "unreachable": 0},
        "takeovers": 2,
        "replicas": replicas,
    }
    assert health["cluster"] == {"node": "a", "live": ["a", "b"], "connected": True, **claims}
    api.daemon.membership = Cluster(live=(), connected=False)
    status, health = await api.call("GET", "/healthz?ready=1", auth=False)
    assert status == 503 and health["status"] == "degraded"
    assert health["cluster"] == {
        "node": "a", "live": [], "connected": False, **claims, "replicas": {}
    }  # fmt: skip
    assert health["problems"] == [
        "cluster: this replica cannot heartbeat: it claims no fire until the database answers"
    ]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:9", 200), ("localhost:8089", 200), ("LOCALHOST", 200), ("[::1]:9", 200),
        ("evil.example:9", 400), ("evil.example", 400), ("127.0.0.1.evil.example:9", 400),
        ("", 400),
    ],
)  # fmt: skip
async def test_a_loopback_listener_answers_only_to_loopback_names(
    api: Api, host: str, status: int
) -> None:
    """A web page that re-points its own name at 127.0.0.1 (DNS rebinding) gets nothing, not even
    the open endpoints."""
    for path in ("/healthz", "/jobs"):
        got, body = await api.call("GET", path, headers={"Host": host})
        assert got == status, (path, body)
        if status == 400:
            assert body["error"] == "wrong_host"


async def test_without_a_token_reads_are_refused_unless_opened(
    tokenless: Api, tmp_path: Path
) -> None:
    """History holds captured output and run arguments: without a token nobody on the host reads
    it, unless `open_reads: true` or a unix socket (whose modes decide who connects)."""
    for path in ("/jobs", "/executions", "/runs", "/stats"):
        status, body = await tokenless.call("GET", path, auth=False)
        assert (status, body["error"]) == (401, "unauthorized"), path
    assert (await tokenless.call("GET", "/healthz", auth=False))[0] == 200  # still open
    for admin in ({"open_reads": True}, {"listen": str(tmp_path / "admin.sock")}):
        settings = tokenless.daemon.config.admin
        assert settings is not None
        opened = AdminSpec.model_validate({"listen": settings.listen, **admin})
        tokenless.daemon.config = tokenless.daemon.config.model_copy(update={"admin": opened})
        status, _ = await tokenless.call("GET", "/jobs", auth=False)
        assert status == 200, admin


async def test_without_a_token_changes_are_refused(tokenless: Api) -> None:
    for path in ("/jobs/greet/trigger", "/jobs/greet/pause", "/runs"):
        status, body = await tokenless.call("POST", path, auth=False, json={"job": "greet"})
        assert (status, body["error"]) == (403, "no_token_configured")
    assert tokenless.daemon.triggered == []


# -- refusals -------------------------------------------------------------------------------------


async def test_errors_are_json_with_stable_codes(api: Api) -> None:
    cases = [
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("DELETE", "/jobs", {}, 405, "method_not_allowed"),
        ("GET", "/jobs/nope", {}, 404, "unknown_job"),
        ("POST", "/jobs/nope/trigger", {}, 404, "unknown_job"),
        ("POST", "/jobs/greet/trigger", {"data": b"{not json"}, 400, "bad_json"),
        ("POST", "/runs", {"data": b"[" * 4000 + b"]" * 4000}, 400, "bad_json"),
        (
            "POST",
            "/jobs/greet/trigger",
            {"data": b'{"a":' * 4000 + b"1" + b"}" * 4000},
            400,
            "bad_json",
        ),
        ("POST", "/jobs/greet/trigger", {"json": [1, 2]}, 400, "bad_request"),
        ("POST", "/jobs/greet/trigger", {"json": {"params": {}}}, 400, "bad_overrides"),
        ("POST", "/jobs/greet/trigger", {"json": {"args": "x"}}, 400, "bad_overrides"),
        ("POST", "/jobs/ping/trigger", {"json": {"args": {}}}, 400, "bad_overrides"),
        ("POST", "/jobs/ping/trigger", {"json": {"params": {"a": [1]}}}, 400, "bad_overrides"),
        ("POST", "/jobs/shell/trigger", {"json": {"args": {}}}, 400, "bad_overrides"),
        ("GET", "/executions?limit=0", {}, 400, "bad_parameter"),
        ("GET", "/executions?limit=501", {}, 400, "bad_parameter"),
        ("GET", "/executions?limit=ten", {}, 400, "bad_parameter"),
        ("GET", "/executions?status=great", {}, 400, "bad_parameter"),
        ("GET", "/executions?trigger=cosmic", {}, 400, "bad_parameter"),
        ("GET", "/executions?since=yesterday", {}, 400, "bad_parameter"),
        ("GET", "/executions?since=2026-01-01T00:00:00", {}, 400, "bad_parameter"),
        ("GET", "/executions?cursor=abc", {}, 400, "bad_cursor"),
        ("GET", "/executions?cursor=1764000000000000.9223372036854775808", {}, 400, "bad_cursor"),
        ("GET", "/executions?cursor=1764000000000000.-1", {}, 400, "bad_cursor"),
        ("GET", "/stats?window=forever", {}, 400, "bad_parameter"),
        ("GET", "/stats?window=0s", {}, 400, "bad_parameter"),
        ("GET", "/runs/not-a-uuid", {}, 404, "unknown_run"),
        ("GET", "/executions/x1", {}, 404, "unknown_execution"),
        ("GET", "/executions/0", {}, 404, "unknown_execution"),
        ("GET", "/executions/-3", {}, 404, "unknown_execution"),
        ("GET", "/executions/9223372036854775808", {}, 404, "unknown_execution"),
        ("GET", "/jobs/greet/items?cursor=abc", {}, 400, "bad_cursor"),
        ("GET", "/jobs/greet/items?limit=501", {}, 400, "bad_parameter"),
        ("GET", "/jobs/greet/items?since=yesterday", {}, 400, "bad_parameter"),
        ("GET", "/jobs/greet/items?status=failed", {}, 400, "unknown_parameter"),
        ("GET", "/executions/1?verbose=1", {}, 400, "unknown_parameter"),
        ("POST", "/runs", {"json": {}}, 400, "bad_request"),
        ("POST", "/runs", {"json": {"job": "nope"}}, 404, "unknown_job"),
        ("POST", "/runs", {"json": {"job": "greet", "at": "soon"}}, 400, "bad_parameter"),
        ("POST", "/jobs/greet/trigger", {"data": b"x" * 70_000}, 413, "body_too_large"),
    ]
    for method, path, kwargs, code, error in cases:
        status, body = await api.call(method, path, **kwargs)
        assert (status, body["error"]) == (code, error), (method, path, kwargs, body)
        assert body["message"]
    assert api.daemon.triggered == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("/executions?limit=0", "limit: expected a number from 1 to 500"),
        ("/executions?limit=-1", "limit: expected a number from 1 to 500"),
        ("/executions?limit=1e3", "limit: expected a number from 1 to 500"),
        ("/runs?limit=501", "limit: expected a number from 1 to 500"),
        (
            "/executions?status=great",
            "status: expected one of ['running', 'succeeded', 'failed', 'timed_out', "
            "'cancelled', 'skipped', 'missed', 'abandoned'], got 'great'",
        ),
        (
            "/jobs/greet/executions?trigger=cosmic",
            "trigger: expected one of ['schedule', 'manual', 'catchup', 'chain'], got 'cosmic'",
        ),
        (
            "/executions?since=yesterday",
            "since: expected ISO 8601 like 2026-11-25T14:00:00Z, got 'yesterday'",
        ),
        (
            "/executions?until=2026-01-01T00:00:00",
            "until: add a UTC offset or Z to '2026-01-01T00:00:00'",
        ),
        ("/executions?job=a%00b", "job: contains a NUL character"),
        ("/executions?fire_id=42", "fire_id: expected a UUID (8-4-4-4-12 hex digits), got '42'"),
        (
            f"/jobs/greet/executions?fire_id={{{uuid.UUID(int=1)}}}",
            "fire_id: expected a UUID (8-4-4-4-12 hex digits), "
            "got '{00000000-0000-0000-0000-000000000001}'",
        ),
        ("/stats?window=0s", "window: expected between 1s and 366d"),
        ("/jobs?window=367d", "window: expected between 1s and 366d"),
        (
            "/jobs/greet?window=forever",
            "window: expected a duration like 10s, 5m, 1h30m or a number of seconds, got 'forever'",
        ),
    ],
)
async def test_a_bad_parameter_says_which_and_what_was_expected(
    api: Api, query: str, message: str
) -> None:
    status, body = await api.call("GET", query)
    assert (status, body) == (400, {"error": "bad_parameter", "message": message})


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "/executions?page=2&page_size=50"),
        ("GET", "/jobs/greet/executions?job=greet"),  # /executions takes it, this one does not
        ("GET", "/jobs?limit=5"),
        ("GET", "/runs/not-a-uuid?verbose=1"),
        ("POST", "/jobs/greet/trigger?name=x"),
        ("POST", "/jobs/greet/pause?force=1"),
        ("GET", "/healthz?verbose=1"),
    ],
)
async def test_an_unknown_query_parameter_is_refused(api: Api, method: str, query: str) -> None:
    status, body = await api.call(method, query, auth=not query.startswith("/healthz"))
    assert (status, body["error"]) == (400, "unknown_parameter"), body
    assert repr(query.split("?")[1].split("=")[0]) in body["message"]
    assert api.daemon.triggered == []


async def test_the_first_value_of_a_parameter_counts_and_an_empty_one_is_absent(api: Api) -> None:
    # Valid queries reach the database, which the stand-in does not have: 503, not 400.
    for query in (
        "/executions?limit=5&limit=x",
        "/executions?limit=&status=&job=&since=&fire_id=",
        f"/executions?fire_id={str(uuid.uuid4()).upper()}",
        f"/jobs/greet/executions?fire_id={uuid.uuid4()}",
    ):
        status, body = await api.call("GET", query)
        assert (status, body["error"]) == (503, "database_unavailable"), (query, body)
    status, body = await api.call("GET", "/executions?limit=x&limit=5")
    assert (status, body["error"]) == (400, "bad_parameter")


async def test_what_needs_the_database_is_503_while_it_is_away(api: Api) -> None:
    for method, path in [("GET", "/executions"), ("GET", "/jobs/greet/executions"),
                         ("GET", "/stats"), ("GET", "/runs"), ("GET", f"/runs/{uuid.uuid4()}"),
                         ("DELETE", f"/runs/{uuid.uuid4()}"), ("POST", "/jobs/greet/pause"),
                         ("POST", "/jobs/greet/resume"), ("POST", "/runs"),
                         ("GET", "/executions/1"), ("GET", "/jobs/greet/items"),
                         ("GET", "/jobs/nope/items?limit=5&since=2026-01-01T00:00:00Z"),
                         ("GET", "/storage")]:  # fmt: skip
        status, body = await api.call(method, path, json={"job": "greet"})
        assert (status, body["error"]) == (503, "database_unavailable"), path


# -- answers without the database -----------------------------------------------------------------


async def test_jobs_are_answered_from_the_schedule_while_the_database_is_away(api: Api) -> None:
    status, body = await api.call("GET", "/jobs?window=1h")
    assert status == 200
    assert [j["name"] for j in body["jobs"]] == ["greet", "explode", "ping", "shell"]
    ping = body["jobs"][2]
    assert ping["kind"] == "http" and ping["stats"] is None and ping["paused_at"] is None
    assert ping["next_fires"] == [(T + timedelta(hours=1)).isoformat()]  # "+00:00", as always
    status, one = await api.call("GET", "/jobs/ping")
    assert status == 200 and len(one["next_fires"]) == 5 and one["last_attempts"] is None
    assert one["spec"]["action"]["headers"]["Authorization"] == "Bearer ${JOB_TOKEN}"
    assert one["running_fires"] == []


async def test_a_trigger_answers_202_with_the_fire_or_409_when_refused(api: Api) -> None:
    status, body = await api.call("POST", "/jobs/greet/trigger", json={"args": {"name": "x"}})
    assert status == 202
    assert body == {
        "fire_id": body["fire_id"],
        "job": "greet",
        "trigger": "manual",
        "scheduled_at": T.isoformat(),
        "executions": f"/executions?fire_id={body['fire_id']}",  # its attempts, only them
    }
    assert uuid.UUID(body["fire_id"]) and api.daemon.triggered == [("greet", {"name": "x"})]
    api.daemon.refuse_fires = True
    status, body = await api.call("POST", "/jobs/greet/trigger")
    assert (status, body["error"]) == (409, "not_started")


async def test_health_is_degraded_when_the_database_is_away_or_a_reload_failed(api: Api) -> None:
    api.daemon.recorder.connected = False
    api.daemon.recorder.pending = 7
    api.daemon.reload_error = "config.yaml:3: jobs.x.args.token: expected a string, got 31337"
    status, health = await api.call("GET", "/healthz", auth=False)
    assert status == 200 and health["status"] == "degraded"
    assert health["problems"] == [
        "database unreachable: 7 rows buffered",
        "last reload failed: see the daemon's log (event reload_failed)",
    ]
    assert "31337" not in json.dumps(health)  # the config's values stay in the log
    assert health["database"] == "buffering" and health["config"]["last_reload"] == "failed"
    assert (await api.call("GET", "/healthz?ready=1", auth=False))[0] == 503
    assert (await api.call("GET", "/healthz?ready=0", auth=False))[0] == 200


# -- the document ---------------------------------------------------------------------------------

# The public contract (README, operation/control.py): these paths and methods, and no others.
CONTRACT = {
    ("get", "/healthz"), ("get", "/health"), ("get", "/metrics"), ("get", "/openapi.json"),
    ("get", "/jobs"), ("post", "/jobs"), ("put", "/jobs/{name}"), ("patch", "/jobs/{name}"),
    ("delete", "/jobs/{name}"), ("get", "/jobs/{name}"), ("get", "/jobs/{name}/executions"),
    ("post", "/jobs/{name}/trigger"),
    ("post", "/jobs/{name}/pause"), ("post", "/jobs/{name}/resume"), ("get", "/executions"),
    ("get", "/stats"), ("get", "/runs"), ("post", "/runs"), ("get", "/runs/{id}"),
    ("delete", "/runs/{id}"), ("get", "/executions/{id}"), ("get", "/jobs/{name}/items"),
    ("get", "/storage"),
}  # fmt: skip


def test_the_document_lists_exactly_the_routes_served() -> None:
    document = spec()
    listed = {(m, p) for p, methods in document["paths"].items() for m in methods}
    assert listed == CONTRACT
    app = build_app(object())  # type: ignore[arg-type]  # nothing is asked of it here
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    # The status page's HTML (/ui, /ui/...) is served beside the API, not part of its document.
    pages = {(m, p) for m, p in served if p == "/ui" or p.startswith("/ui/")}
    assert ("get", "/ui") in pages
    assert served - pages == CONTRACT


def test_every_operation_documents_its_refusals_with_the_error_body() -> None:
    document = spec()
    error = {"$ref": "#/components/schemas/Error"}
    for path, methods in document["paths"].items():
        for operation in methods.values():
            responses = operation["responses"]
            assert responses["400"]["content"]["application/json"]["schema"] == error
            open_path = path in ("/healthz", "/health", "/metrics")
            assert ("401" in responses) == (not open_path), path
            assert (operation.get("security") == []) == open_path, path
            for status, response in responses.items():
                if status.startswith("4"):
                    assert response["content"]["application/json"]["schema"] == error


def test_the_document_offers_both_ways_of_sending_the_token() -> None:
    document = spec()
    assert document["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    assert document["security"] == [{"bearer": []}, {"apiKey": []}]  # either one
    assert "X-API-Key" in document["info"]["description"]


def test_query_parameters_come_from_the_query_models() -> None:
    operation = spec()["paths"]["/executions"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == set(api_models.ExecutionsQuery.model_fields)
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert parameters["status"]["schema"] == {"$ref": "#/components/schemas/Status"}
    assert parameters["fire_id"]["schema"] == {"type": "string", "format": "uuid"}
    one_job = spec()["paths"]["/jobs/{name}/executions"]["get"]["parameters"]
    assert "fire_id" in {p["name"] for p in one_job}
    statuses = spec()["components"]["schemas"]["Status"]["enum"]
    assert statuses == [s.value for s in api_models.Status]
    assert all(not p["required"] for p in parameters.values())
    assert "unknown_parameter" in spec()["info"]["description"]


def test_the_execution_body_has_every_column_of_the_row_and_pages_leave_the_result_out() -> None:
    schemas = spec()["components"]["schemas"]
    from scheduler_daemon.storage import rows

    listed = [c for c in rows.COLUMNS if c != "result"]
    assert "result_bytes" in listed and "parent_fire_id" in listed
    assert list(schemas["Execution"]["properties"]) == ["id", *listed]
    assert schemas["Execution"]["required"] == ["id", *listed]
    detail = schemas["ExecutionDetail"]
    assert list(detail["properties"]) == ["id", *listed, "result"]
    assert detail["required"] == ["id", *listed, "result"]
    assert "type" not in detail["properties"]["result"]  # any JSON document, not a string
    page = schemas["ExecutionPage"]["properties"]["executions"]["items"]
    assert page == {"$ref": "#/components/schemas/Execution"}
    one = spec()["paths"]["/executions/{id}"]["get"]
    assert one["parameters"][0]["schema"] == {"type": "integer", "format": "int64", "minimum": 1}
    assert set(one["responses"]) == {"200", "400", "401", "404", "503"}


def test_items_are_documented_with_their_paging() -> None:
    operation = spec()["paths"]["/jobs/{name}/items"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["name", "since", "limit", "cursor"]
    item = spec()["components"]["schemas"]["JobItem"]
    assert item["required"] == ["fire_id", "attempt", "scheduled_at", "idx", "key", "item"]
    assert "type" not in item["properties"]["item"]


def test_one_run_is_documented_with_its_outcome() -> None:
    document = spec()
    one = document["paths"]["/runs/{id}"]["get"]["responses"]["200"]["content"]
    assert one["application/json"]["schema"] == {"$ref": "#/components/schemas/RunDetail"}
    detail = document["components"]["schemas"]["RunDetail"]
    assert detail["properties"]["outcome"]["anyOf"] == [
        {"$ref": "#/components/schemas/RunOutcome"},
        {"type": "null"},
    ]
    outcome = document["components"]["schemas"]["RunOutcome"]
    assert set(outcome["required"]) == {
        "status", "attempts", "started_at", "finished_at", "duration_ms", "error", "http_status",
        "exit_code",
    }  # fmt: skip
    created = document["paths"]["/runs"]["post"]["responses"]["201"]["content"]
    assert created["application/json"]["schema"] == {"$ref": "#/components/schemas/Run"}


def test_every_route_has_a_query_model_and_a_reply() -> None:
    for route in ROUTES:
        assert issubclass(route.query, api_models.Query) and route.replies, route.path
