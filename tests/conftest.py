"""Shared fixtures. One PostgreSQL server for the whole run; a fresh database for each test.

- ``pg_server``: the session's server DSN (``SCHEDULER_TEST_DATABASE_URL`` if set, else an
  embedded PostgreSQL started from the same wheel the daemon uses).
- ``database_url``: a DSN to a brand-new database with the schema applied, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from scheduler_daemon import store
from scheduler_daemon.embedded import EmbeddedPostgres

TEMPLATE = "scheduler_daemon_test_template"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _create_template(server: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    pool = await store.connect(with_database(server, TEMPLATE))
    try:
        await store.apply_schema(pool)
    finally:
        await pool.close()


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SCHEDULER_TEST_DATABASE_URL")
    embedded = None
    if external:
        server = external
    else:
        embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")) / "server")
        server = embedded.start()
    asyncio.run(_create_template(server))
    try:
        yield server
    finally:
        if embedded is not None:
            embedded.stop()


@pytest.fixture
def database_url(pg_server: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    try:
        yield with_database(pg_server, name)
    finally:
        asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
