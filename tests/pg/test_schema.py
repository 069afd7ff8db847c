"""Versioned migrations against a real PostgreSQL: a fresh database, one made before migrations
existed (with rows), a newer one, concurrent upgrades, a failed migration, and the privileges a
daemon needs when another role owns the tables."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon import __version__
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import schema
from scheduler_daemon.storage.schema import Migration, SchemaError, SchemaTooNew
from tests.helpers import free_port, running_daemon, wait_until, write_config

FIXTURES = Path(__file__).parent / "fixtures"
# What earlier versions applied at every start (git show <commit>:schema.sql): the one just before
# versioned migrations, and the first release's (no runs table, no pause, no removed_at).
OLD_SCHEMAS = ("schema_before_migrations.sql", "schema_first_release.sql")
# The shape of a database: what two databases must share to be the same schema.
CATALOG = {
    "columns": """SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
                         column_default, is_identity
                  FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3""",
    "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                      FROM pg_constraint WHERE connamespace = 'public'::regnamespace
                      ORDER BY 1, 2""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes"
    " WHERE schemaname = 'public' ORDER BY 1, 2",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    "comments": """SELECT relname, obj_description(oid, 'pg_class') FROM pg_class
                   WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v')
                   ORDER BY 1""",
    "migrations": f"SELECT version, name, checksum FROM {schema.TABLE} ORDER BY 1",
}


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    bookkept = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", schema.TABLE)
    return {
        name: [tuple(r) for r in await conn.fetch(sql)] if bookkept or name != "migrations" else []
        for name, sql in CATALOG.items()
    }


def with_migrations(*extra: tuple[str, str]) -> tuple[Migration, ...]:
    """This version's migrations, then ``extra`` ones (name, sql) numbered after them."""
    known = schema.migrations()
    return known + tuple(
        Migration(len(known) + i, name, sql) for i, (name, sql) in enumerate(extra, start=1)
    )


async def test_a_fresh_database_gets_every_migration_once(empty_database_url: str) -> None:
    async with connected(empty_database_url) as conn:
        applied = await schema.upgrade(conn)
        assert applied == list(schema.migrations())
        assert await schema.upgrade(conn) == []  # the next start: nothing to do
        state = await schema.read_state(conn)
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        views = await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
    assert state.version == state.latest == len(schema.migrations()) and not state.pending
    assert [(a.label, a.checksum) for a in state.applied] == [
        (m.label, m.checksum) for m in schema.migrations()
    ]
    assert [t["tablename"] for t in tables] == [
        "executions",
        "fire_claims",
        "job_items",
        "jobs",
        "nodes",
        "runs",
        schema.TABLE,
    ]
    assert {v["viewname"] for v in views} == {"job_health", "recent_failures"}


async def test_concurrent_upgrades_apply_each_migration_once(empty_database_url: str) -> None:
    # 0002 cannot be applied twice: a second application would fail, not go unnoticed.
    known = with_migrations(("once", "CREATE TABLE applied_once (id int)"))
    conns = [await asyncpg.connect(empty_database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(schema.upgrade(c, known=known) for c in conns))
        rows = await conns[0].fetchval(f"SELECT count(*) FROM {schema.TABLE}")
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(m.label for result in results for m in result) == [m.label for m in known]
    assert rows == len(known)


@pytest.mark.parametrize("old_schema", OLD_SCHEMAS)
async def test_a_database_made_before_migrations_is_upgraded_with_its_rows_intact(
    old_schema: str, empty_database_url: str, database_url: str
) -> None:
    async with connected(empty_database_url) as conn:
        await conn.execute((FIXTURES / old_schema).read_text())
        old = await catalog(conn)
        await _old_rows(conn)
        before = await _rows(conn)
        seen: list[tuple[str, bool]] = []
        with capture_logs() as logs:
            first = schema.migrations()[:1]
            await schema.upgrade(
                conn, known=first, on_applied=lambda m, _, old: seen.append((m.label, old))
            )
            initial = await catalog(conn)
            await schema.upgrade(conn, on_applied=lambda m, _, old: seen.append((m.label, old)))
        after = await _rows(conn)
        adopted = await catalog(conn)
    async with connected(database_url) as conn:
        fresh = await catalog(conn)
    assert seen == [("0001_initial", True)] + [(m.label, False) for m in schema.migrations()[1:]]
    assert logs[0]["event"] == "schema_migration_applied" and logs[0]["over_existing_tables"]
    for table, rows in before.items():  # every row and value kept; new columns empty
        assert [{k: r[k] for k in rows[0]} for r in after[table]] == rows, table
    assert adopted == fresh  # the same schema as a database created by this version
    if old_schema == OLD_SCHEMAS[0]:  # 0001 is the schema.sql it replaces, to the last index
        # (views aside: 0002 redefines job_health; later ones add columns)
        unviewed = [{k: v for k, v in _without_bookkeeping(shape).items() if k != "views"}
                    for shape in (old, initial)]  # fmt: skip
        assert unviewed[0] == unviewed[1]


def _without_bookkeeping(shape: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    # Each catalog row starts with its table's name (views and migrations aside).
    return {
        name: [row for row in rows if row[0] != schema.TABLE]
        for name, rows in shape.items()
        if name != "migrations"
    }


async def _old_rows(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """INSERT INTO executions (fire_id, job_name, scheduled_at, attempt, trigger, status,
                                   started_at, finished_at, duration_ms, exit_code, node)
           VALUES ($1, 'nightly', '2026-01-01T02:00Z', 1, 'schedule', 'succeeded',
                   '2026-01-01T02:00:01Z', '2026-01-01T02:00:03Z', 2000, 0, 'old-node')""",
        uuid.uuid4(),
    )
    await conn.execute(
        """INSERT INTO jobs (name, spec, enabled, next_run_at)
           VALUES ('nightly', '{"cron": "0 2 * * *"}', true, '2026-01-02T02:00Z')"""
    )


async def _rows(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return {
        table: [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
        for table in ("executions", "jobs")
    }


async def test_a_database_newer_than_this_version_is_refused(empty_database_url: str) -> None:
    async with connected(empty_database_url) as conn:
        await schema.upgrade(conn, known=with_migrations(("from_the_future", "SELECT 1")))
        before = await catalog(conn)
        with pytest.raises(SchemaTooNew) as refused:
            await schema.upgrade(conn)
        assert await catalog(conn) == before  # nothing touched
    future = len(schema.migrations()) + 1
    assert str(refused.value).startswith(
        f"the database's schema is at version {future} ({future:04d}_from_the_future, applied "
    )
    message = str(refused.value)
    assert f"newer than this scheduler-daemon {__version__} knows (up to {future - 1})" in message
    assert "going back to an older schema is not supported" in message


async def test_the_daemon_refuses_to_start_on_a_newer_database(
    tmp_path: Path, empty_database_url: str
) -> None:
    async with connected(empty_database_url) as conn:
        await schema.upgrade(conn, known=with_migrations(("from_the_future", "SELECT 1")))
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{empty_database_url}"}}\nstate_dir: ./state\n'
        'jobs:\n  ping: {every: 1s, command: ["true"], run_on_start: true}\n'
    )
    with capture_logs() as logs, pytest.raises(SchemaTooNew, match="newer than this"):
        await asyncio.wait_for(Daemon(load_config(config)).run(), 30)
    events = [e["event"] for e in logs]
    assert "daemon_started" not in events and "attempt_started" not in events
    async with connected(empty_database_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0  # not even synced


async def test_a_database_found_newer_after_the_start_stops_the_daemon(
    tmp_path: Path, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down at start, then back upgraded by a newer version: the first pool refuses it."""

    async def unreachable_at_start(self: schema.Upgrades, dsn: str) -> None:
        return None

    monkeypatch.setattr(schema.Upgrades, "at_start", unreachable_at_start)
    async with connected(empty_database_url) as conn:
        await schema.upgrade(conn, known=with_migrations(("from_the_future", "SELECT 1")))
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{empty_database_url}"}}\nstate_dir: ./state\n'
        'jobs:\n  ping: {every: 1h, command: ["true"]}\n'
    )
    with capture_logs() as logs, pytest.raises(SchemaTooNew):
        await asyncio.wait_for(Daemon(load_config(config)).run(), 30)
    [refused] = [e for e in logs if e["event"] == "schema_refused"]
    assert refused["log_level"] == "error" and "newer than this" in refused["error"]
    assert [e["event"] for e in logs][-1] == "daemon_stopped"


async def test_a_failed_migration_is_rolled_back_and_the_ones_before_it_kept(
    empty_database_url: str,
) -> None:
    broken = with_migrations(
        ("add_note", "ALTER TABLE jobs ADD COLUMN note text"),
        ("broken", "CREATE TABLE half_done (id int); ALTER TABLE no_such_table ADD COLUMN x int"),
    )
    async with connected(empty_database_url) as conn:
        with pytest.raises(SchemaError) as failed:
            await schema.upgrade(conn, known=broken)
        state = await schema.read_state(conn, broken)
        half_done = await conn.fetchval("SELECT to_regclass('half_done') IS NOT NULL")
        note = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'"
        )
        fixed = (*broken[:-1], Migration(broken[-1].version, "fixed", "CREATE TABLE done (id int)"))
        assert [m.label for m in await schema.upgrade(conn, known=fixed)] == [fixed[-1].label]
    label = broken[-1].label
    assert str(failed.value) == (
        f"cannot apply migration {label} (rolled back: nothing of it applied): "
        'relation "no_such_table" does not exist'
    )
    assert state.version == len(broken) - 1 and [m.label for m in state.pending] == [label]
    assert not half_done and note == 1


async def test_an_edited_migration_is_reported_not_reapplied(empty_database_url: str) -> None:
    async with connected(empty_database_url) as conn:
        await schema.upgrade(conn)
        first = schema.migrations()[0]
        edited = (Migration(1, first.name, first.sql + "\n-- edited\n"), *schema.migrations()[1:])
        with capture_logs() as logs:
            assert await schema.upgrade(conn, known=edited) == []
        state = await schema.read_state(conn, edited)
    assert [a.label for a in state.changed] == ["0001_initial"]
    assert [(e["event"], e["migration"]) for e in logs] == [
        ("schema_migration_changed", "0001_initial")
    ]


# -- privileges: the tables' owner migrates, a less privileged role runs the daemon -------------


def as_role(dsn: str, role: str) -> str:
    """``dsn``, acting as ``role`` (a startup setting: the test server lets only its superuser
    log in; privileges are checked against the role all the same)."""
    return dsn + ("&" if urlsplit(dsn).query else "?") + f"role={role}"


@pytest.fixture
async def roles(empty_database_url: str) -> AsyncIterator[tuple[str, str]]:
    """An owner (owns the database, so it may create in its public schema) and a runner."""
    suffix = uuid.uuid4().hex[:8]
    owner, runner = f"sd_owner_{suffix}", f"sd_runner_{suffix}"
    name = urlsplit(empty_database_url).path.lstrip("/")
    async with connected(empty_database_url) as admin:
        await admin.execute(f"CREATE ROLE {owner} NOLOGIN; CREATE ROLE {runner} NOLOGIN")
        await admin.execute(f"ALTER DATABASE {name} OWNER TO {owner}")
    try:
        yield owner, runner
    finally:
        async with connected(empty_database_url) as admin:
            await admin.execute(f"ALTER DATABASE {name} OWNER TO current_user")
            for role in (runner, owner):  # one at a time: the owner's default ACL names the runner
                await admin.execute(f"DROP OWNED BY {role} CASCADE")
            await admin.execute(f"DROP ROLE {owner}; DROP ROLE {runner}")


# README: Using your own PostgreSQL (the owner runs them). No DELETE: the daemon deletes no row.
GRANTS = """
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {runner};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO {runner};
"""


async def test_the_owner_migrates_and_a_role_with_row_privileges_runs_the_daemon(
    tmp_path: Path, empty_database_url: str, roles: tuple[str, str]
) -> None:
    owner, runner = roles
    owner_url, runner_url = as_role(empty_database_url, owner), as_role(empty_database_url, runner)
    async with connected(owner_url) as conn:  # what README's commands do, in order
        await schema.upgrade(conn)
        await conn.execute(GRANTS.format(runner=runner))
    config = tmp_path / "config.yaml"
    port = free_port()
    write_config(config, runner_url, "http://127.0.0.1:9", listen=f"127.0.0.1:{port}")
    async with running_daemon(config, f"http://127.0.0.1:{port}") as running:
        status, _ = await running.call("POST", "/jobs/greet/trigger")
        assert status == 202
        status, _ = await running.call("POST", "/jobs/shell/pause")
        assert status == 200
        await wait_until(lambda: _count(runner_url, "executions WHERE status = 'succeeded'"))
    async with connected(runner_url) as conn:
        assert await conn.fetchval("SELECT current_user") == runner
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE paused_at IS NOT NULL") == 1


async def test_a_role_without_ddl_rights_is_told_to_let_the_owner_migrate(
    empty_database_url: str, roles: tuple[str, str]
) -> None:
    owner, runner = roles
    owner_url, runner_url = as_role(empty_database_url, owner), as_role(empty_database_url, runner)
    async with connected(owner_url) as conn:
        await schema.upgrade(conn)
        await conn.execute(GRANTS.format(runner=runner))
    later = with_migrations(
        ("note", "ALTER TABLE jobs ADD COLUMN note text"), ("extra", "CREATE TABLE extra (id int)")
    )
    async with connected(runner_url) as conn:
        with pytest.raises(SchemaError) as refused:
            await schema.upgrade(conn, known=later)
    assert str(refused.value) == (
        f"cannot apply migration {later[-2].label} (rolled back: nothing of it applied): "
        "must be owner of table jobs; apply the migrations as the owner of the tables "
        "(`scheduler-daemon db upgrade` with the owner's URL; README: Using your own PostgreSQL)"
    )
    async with connected(owner_url) as conn:
        assert len(await schema.upgrade(conn, known=later)) == 2
    async with connected(runner_url) as conn:  # default privileges reach a new table
        await conn.execute("INSERT INTO extra VALUES (1)")
        assert await schema.upgrade(conn, known=later) == []  # up to date: no DDL, no refusal


async def _count(dsn: str, where: str) -> bool:
    async with connected(dsn) as conn:
        return bool(await conn.fetchval(f"SELECT count(*) FROM {where}"))
