"""The database entry point against a real PostgreSQL (URL mode; the embedded mode runs in
tests/e2e/test_embedded.py): the schema on connect, hooks in order, a pool dropped on failure."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.specs import Config, DatabaseSpec
from scheduler_daemon.storage.database import Database, open_database
from tests.helpers import make_config


def config(tmp_path: Path, url: str) -> Config:
    return make_config(
        path=tmp_path / "config.yaml", state_dir=tmp_path, database=DatabaseSpec(url=url)
    )


async def test_open_database_applies_the_schema_on_connect(
    tmp_path: Path, empty_database_url: str
) -> None:
    async with open_database(config(tmp_path, empty_database_url)) as database:
        assert database.pool is None and not database.connected  # connecting is the user's call
        pool = await database.connect()
        assert await database.connect() is pool  # one pool, kept
        assert database.connected and database.require("unused") is pool
        tables = await pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('executions', 'jobs', 'runs')"
        )
        assert tables == 3
        assert database.embedded is None
    assert database.pool is None and pool._closed  # closed on exit


async def test_hooks_run_in_order_on_every_new_pool(tmp_path: Path, database_url: str) -> None:
    seen: list[str] = []

    async def first(pool: asyncpg.Pool) -> None:
        seen.append("first")

    async def second(pool: asyncpg.Pool) -> None:
        seen.append(f"second:{await pool.fetchval('SELECT count(*) FROM jobs')}")

    async with Database(dsn=database_url, on_connect=[first]) as database:
        database.on_connect(second)
        old = await database.connect()
        with capture_logs() as logs:
            database.failed(OSError("connection reset"), pending=3)
            database.failed(OSError("connection reset"), pending=4)  # the same outage
            assert database.pool is None and not database.connected
            with pytest.raises(ConnectionError, match="unavailable: the pause would not persist"):
                database.require("the pause would not persist")
            new = await database.connect()
            database.succeeded(pending=0)
            database.succeeded(pending=0)
        assert new is not old and old._closed  # the failed pool was terminated
        assert seen == ["first", "second:0", "first", "second:0"]
    assert [(e["event"], e.get("pending")) for e in logs] == [
        ("recorder_db_unavailable", 3),
        ("recorder_db_recovered", 0),
    ]


async def test_a_failing_hook_leaves_no_pool(tmp_path: Path, database_url: str) -> None:
    async def broken(pool: asyncpg.Pool) -> None:
        raise asyncpg.PostgresError("no")

    async with Database(dsn=database_url, on_connect=[broken]) as database:
        with pytest.raises(asyncpg.PostgresError):
            await database.connect()
        assert database.pool is None


async def test_an_unreachable_url_raises_on_connect(tmp_path: Path) -> None:
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}&port=1"
    async with open_database(config(tmp_path, nowhere)) as database:
        with pytest.raises(OSError):
            await database.connect()
        assert database.pool is None
