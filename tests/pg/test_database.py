"""The database entry point against a real PostgreSQL (URL mode; the embedded mode runs in
tests/e2e/test_embedded.py): hooks on connect, in order, a pool dropped on failure, and what a
database that cannot be reached looks like in the log and on the command line."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.errors import DatabaseUnavailable
from scheduler_daemon.specs import Config, DatabaseSpec
from scheduler_daemon.storage import dsn, schema
from scheduler_daemon.storage.database import Database, open_database
from tests.conftest import with_database
from tests.helpers import free_port, make_config


def config(tmp_path: Path, url: str) -> Config:
    return make_config(
        path=tmp_path / "config.yaml", state_dir=tmp_path, database=DatabaseSpec(url=url)
    )


async def test_open_database_runs_its_hooks_on_connect(
    tmp_path: Path, empty_database_url: str
) -> None:
    hooks = [schema.upgrade]
    async with open_database(config(tmp_path, empty_database_url), on_connect=hooks) as database:
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


async def test_a_database_never_reached_is_an_error_naming_where_then_quiet(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://bob:s3cr3t@127.0.0.1:{port}/jobs?sslmode=disable&password=s3cr3t"
    async with Database(dsn=url) as database:
        with capture_logs() as logs:
            for pending in (1, 2, 3):  # the recorder's retries: one line for the outage
                with pytest.raises(OSError) as failure:
                    await database.connect()
                database.failed(failure.value, pending=pending)
    assert logs == [
        {
            "event": "database_unreachable",
            "log_level": "error",
            "host": "127.0.0.1",
            "port": str(port),
            "database": "jobs",
            "user": "bob",
            "error": "connection refused",
            "pending": 1,
        }
    ]
    assert "s3cr3t" not in repr(logs)


async def test_a_missing_database_is_named_in_the_error(pg_server: str) -> None:
    url = with_database(pg_server, "no_such_db")
    async with Database(dsn=url) as database:
        with capture_logs() as logs:
            with pytest.raises(asyncpg.InvalidCatalogNameError) as failure:
                await database.connect()
            database.failed(failure.value)
        with pytest.raises(DatabaseUnavailable) as refused:
            async with database.connection():
                pass
    [logged] = logs
    assert logged["log_level"] == "error" and logged["database"] == "no_such_db"
    assert logged["error"] == 'database "no_such_db" does not exist'
    where = dsn.target(url).url()  # its forms: tests/unit/test_dsn.py
    assert where.startswith("postgresql://") and "/no_such_db" in where
    assert str(refused.value) == f'cannot connect to {where}: database "no_such_db" does not exist'


async def test_a_database_reached_once_then_lost_is_a_warning(database_url: str) -> None:
    async with Database(dsn=database_url) as database:
        await database.connect()
        with capture_logs() as logs:
            database.failed(OSError("connection reset"))
    assert [(e["event"], e["log_level"]) for e in logs] == [("recorder_db_unavailable", "warning")]
