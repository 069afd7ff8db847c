"""Shared fixtures, and the test layers.

Layers (one folder each; every test gets the folder's marker, set below):
- ``tests/unit`` (marker ``unit``): no database, no daemon process; time-dependent code runs on
  the FakeClock (tests/helpers.py) and never sleeps; local HTTP servers and child commands are fine.
- ``tests/pg`` (marker ``pg``): against a real PostgreSQL (the fixtures below); the daemon, when
  needed, runs in the test's own event loop.
- ``tests/e2e`` (marker ``e2e``): the installed ``scheduler-daemon`` (daemon or CLI) as a
  subprocess, signals and all, and the embedded server's own lifecycle; real seconds.

``pytest -m "not e2e"`` is the fast lane (unit + pg); ``pytest`` runs everything. No test sleeps
for a fixed time: tests wait for a log event (``DaemonProcess.wait_for``) or a condition
(``wait_until``). Shared helpers live in tests/helpers.py only; no test module imports another.

Fixtures
- ``pg_server`` (session): DSN of the server itself (its ``postgres`` database, superuser), for
  tests that create or drop databases. ``SCHEDULER_TEST_DATABASE_URL`` if set (a role that may
  CREATE DATABASE), else an embedded PostgreSQL started once per session from the same wheel the
  daemon uses, stopped at the end.
- ``database_url`` (function): DSN of a database with every migration applied and no rows: cloned
  from a template once (~0.35 s), then emptied after each test for the next (its sessions ended,
  its tables but ``scheduler_migrations`` truncated, identities restarted: ~0.02 s), dropped at
  the end of the run.
- ``empty_database_url`` (function): the same without the schema (for schema and ``db`` tests).
- ``cluster_template`` (session): a data directory made by initdb once per run, never started;
  every embedded server of the run (``pg_server``'s included) starts from a copy of it (a copy
  costs ~0.3 s, initdb ~1.2 s). All live outside pytest's temp root (see ``clusters_root``).
- ``cluster_dir`` (function): a copy of it for this test alone, not started:
  ``EmbeddedPostgres(cluster_dir)``; ``own_server``: the same, started, stopped after the test
  (for tests that stop and start the database under the code they test). Tests of initdb itself
  (a first start, as root, ...) use an empty directory instead.
- ``target``, ``config``, ``api``: a local HTTP target, a config with an admin listener, and a
  daemon running it in the test's loop (``tests.helpers.Running``), for the admin API's tests.

Helpers: ``with_database(dsn, name)`` points a DSN at another database.

Session fixtures are synchronous and use ``asyncio.run``: pytest-asyncio runs each test in its own
loop, and a session-scoped async fixture would outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog
from aiohttp import web

from scheduler_daemon.specs.pytargets import use_python_path
from scheduler_daemon.storage import schema
from scheduler_daemon.storage.embedded import EmbeddedPostgres
from tests.helpers import (
    STARTED_PIDS,
    Running,
    copy_cluster,
    free_port,
    reachable_dir,
    running_daemon,
    serve_locally,
    write_config,
)

# Unique per session: two test runs against one external server must not share a template.
TEMPLATE = f"sdt_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _create_template(server: str) -> None:
    await _admin(server, f"CREATE DATABASE {TEMPLATE}")
    conn = await asyncpg.connect(with_database(server, TEMPLATE))
    try:
        await schema.upgrade(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def clusters_root() -> Iterator[Path]:
    """Where this session's clusters live: not under pytest's temp root, whose mode every pytest
    session that starts resets to 0700, which would lock PostgreSQL (not root: ``nobody``) out of
    a starting server's files when several sessions run at once."""
    root = Path(tempfile.mkdtemp(prefix="sdt-clusters-"))
    root.chmod(0o711)  # as root, the server user (scheduler-daemon) must pass through
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_template(clusters_root: Path) -> Path:
    # start()'s first steps alone (permissions as root, then initdb): a new cluster, never started.
    server = EmbeddedPostgres(clusters_root / "template")
    server.data_dir.mkdir(parents=True)
    with server._lock():
        server._prepare()
        server._initdb()
    return server.pgdata


@pytest.fixture
def cluster_dir(clusters_root: Path, cluster_template: Path) -> Iterator[Path]:
    place = reachable_dir(clusters_root)
    yield copy_cluster(cluster_template, place / "pg")
    shutil.rmtree(place, ignore_errors=True)  # 40 MB each


@pytest.fixture
def own_server(cluster_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(cluster_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest, clusters_root: Path) -> Iterator[str]:
    external = os.environ.get("SCHEDULER_TEST_DATABASE_URL")
    embedded = None
    if external:
        server = external
    else:
        template: Path = request.getfixturevalue("cluster_template")
        embedded = EmbeddedPostgres(copy_cluster(template, clusters_root / "server"))
        server = embedded.start()
    try:
        asyncio.run(_create_template(server))
        yield server
    finally:
        try:
            asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
        finally:
            if embedded is not None:
                embedded.stop()


def _fresh_database(server: str, template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name} TEMPLATE {template}"))
    try:
        yield with_database(server, name)
    finally:
        asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


class SchemaDatabases:
    """Databases with the schema, handed out empty: one used by a test is emptied (its sessions
    ended, every table truncated) and handed to the next. A CREATE DATABASE costs ~0.35 s here,
    emptying one ~0.02 s; a run needs as many as tests hold at once (one, mostly)."""

    def __init__(self, server: str) -> None:
        self._server = server
        self._free: list[str] = []
        self._made: list[str] = []

    def take(self) -> str:
        if self._free:
            return self._free.pop()
        name = f"t_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(self._server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        self._made.append(name)
        return name

    def give_back(self, name: str) -> None:
        kill_started_daemons()  # a daemon left by a failed test must not write into the next one
        asyncio.run(_empty(self._server, name))
        self._free.append(name)

    def close(self) -> None:
        for name in self._made:
            asyncio.run(_admin(self._server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def _empty(server: str, name: str) -> None:
    admin = await asyncpg.connect(server)
    try:  # what DROP DATABASE WITH (FORCE) does first: no session of the last test survives
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(server, name))
    try:
        tables = await conn.fetchval(
            "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ')"
            " FROM pg_tables WHERE schemaname = 'public' AND tablename <> $1",
            schema.TABLE,  # the schema's version stays: the next test gets a current database
        )
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _schema_databases(pg_server: str) -> Iterator[SchemaDatabases]:
    databases = SchemaDatabases(pg_server)
    yield databases
    databases.close()


@pytest.fixture
def database_url(pg_server: str, _schema_databases: SchemaDatabases) -> Iterator[str]:
    name = _schema_databases.take()
    try:
        yield with_database(pg_server, name)
    finally:
        _schema_databases.give_back(name)


@pytest.fixture
def empty_database_url(pg_server: str) -> Iterator[str]:
    yield from _fresh_database(pg_server, "template0")


LAYERS = ("unit", "pg", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its layer (its folder), so `-m "not e2e"` is the fast lane."""
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(autouse=True, scope="session")
def _no_stray_embedded_servers(
    tmp_path_factory: pytest.TempPathFactory, clusters_root: Path
) -> Iterator[None]:
    """Every test stops the servers it starts; one that outlives the session is killed, and fails
    the run (only this session's: its command line names this session's directories; with the
    separator, so that pytest-1 does not match another session's pytest-12)."""
    bases = [os.path.join(tmp_path_factory.getbasetemp(), ""), os.path.join(clusters_root, "")]
    yield
    leftovers = [pid for pid in _pids_with(bases) if _exe(pid).endswith("/postgres")]
    for pid in leftovers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"embedded PostgreSQL left running (now killed): pids {leftovers}"


def _pids_with(texts: list[str]) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            if any(text in cmdline for text in texts):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def _kill_leftover_daemons() -> Iterator[None]:
    yield
    kill_started_daemons()


def kill_started_daemons() -> None:
    while STARTED_PIDS:
        pid = STARTED_PIDS.pop()
        with contextlib.suppress(OSError):  # gone already (the usual case)
            if b"scheduler-daemon" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _fresh_logging_config() -> Iterator[None]:
    """A test that runs the CLI in-process configures structlog (e.g. at warning level); later
    tests' ``capture_logs`` must still see info events."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _python_path_restored() -> Iterator[None]:
    """A test that loads a config with `python_path:` (or runs `check` in-process) puts
    directories on sys.path; the next test starts without them."""
    before = list(sys.path)
    yield
    use_python_path([])
    sys.path[:] = before


# -- a daemon with its admin API, in the test's loop (tests/pg, tests/e2e) ---------------------


@pytest.fixture
async def target() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append({"query": dict(request.query), "body": json.loads(body) if body else None,
                     "auth": request.headers.get("Authorization")})  # fmt: skip
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    async with serve_locally(app) as url:
        yield url, seen


@pytest.fixture
def config(tmp_path: Path, database_url: str, target: tuple[str, Any]) -> tuple[Path, str]:
    port = free_port()
    path = tmp_path / "config.yaml"
    write_config(path, database_url, target[0], listen=f"127.0.0.1:{port}")
    return path, f"http://127.0.0.1:{port}"


@pytest.fixture
async def api(config: tuple[Path, str]) -> AsyncIterator[Running]:
    async with running_daemon(*config) as running:
        yield running
