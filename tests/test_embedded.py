"""The embedded PostgreSQL: start, reuse after a crash, stale pid files, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import asyncpg

from scheduler_daemon.embedded import EmbeddedPostgres
from tests.test_e2e import start_daemon


def postgres_processes(data_dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names ``data_dir``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir) in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


async def _select_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


async def test_start_stop_leaves_no_process_and_keeps_data(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = await server.astart()
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    await conn.close()
    assert postgres_processes(server.pgdata)
    await server.astop()
    assert postgres_processes(server.pgdata) == []

    again = EmbeddedPostgres(tmp_path / "pg")
    dsn = await again.astart()
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT x FROM kept") == 42
    await conn.close()
    await again.astop()


async def test_a_server_left_running_is_reused(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path / "pg")
    await first.astart()
    pids = postgres_processes(first.pgdata)
    second = EmbeddedPostgres(tmp_path / "pg")  # as after a kill -9 of the daemon
    dsn = await second.astart()
    assert await _select_one(dsn) == 1
    assert postgres_processes(second.pgdata) == pids
    await second.astop()
    assert postgres_processes(first.pgdata) == []


async def test_a_stale_pid_file_does_not_block_start(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    await server.astart()
    await server.astop()
    (server.pgdata / "postmaster.pid").write_text("999999\n" + str(server.pgdata) + "\n")
    dsn = await server.astart()
    assert await _select_one(dsn) == 1
    await server.astop()


async def test_long_state_paths_get_a_short_socket_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    server = EmbeddedPostgres(deep / "pg")
    dsn = await server.astart()
    assert len(str(server.socket_dir)) < 100
    assert await _select_one(dsn) == 1
    await server.astop()


async def test_the_daemon_runs_on_the_embedded_database_by_default(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent("""
        state_dir: ./state
        shutdown_grace: 1s
        jobs:
          tick: {every: 1s, command: ["echo", "tick"]}
    """)
    )
    daemon = await start_daemon(config)
    started = await daemon.wait_for("embedded_postgres_started")
    await daemon.wait_for("database_connected")
    await asyncio.sleep(2.2)
    dsn_host = started["psql"].split("host=")[1].split()[0]
    assert await daemon.stop(signal.SIGINT) == 0
    pgdata = tmp_path / "state" / "postgres" / "pgdata"
    assert postgres_processes(pgdata) == [], "the embedded server outlived the daemon"

    server = EmbeddedPostgres(tmp_path / "state" / "postgres")
    dsn = await server.astart()
    try:
        assert str(server.socket_dir) == dsn_host
        conn = await asyncpg.connect(dsn)
        count = await conn.fetchval("SELECT count(*) FROM executions WHERE job_name = 'tick'")
        await conn.close()
        assert count >= 2
    finally:
        await server.astop()
    assert os.path.isdir(tmp_path / "state" / "postgres" / "pgdata")
