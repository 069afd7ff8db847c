"""A wrong database URL as a user meets it: the `db` commands print one line and exit 1 (no
traceback), and the daemon logs an error naming host, port and database, once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, start_daemon

CLI = Path(sys.executable).with_name("scheduler-daemon")


def write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f'database: {{url: "{url}"}}\nstate_dir: ./state\n'
        'jobs:\n  tick: {every: 1s, command: ["true"]}\n'
    )
    return path


@pytest.mark.parametrize("command", [["db", "init"], ["db", "upgrade"], ["db", "status"]])
async def test_a_db_command_on_a_wrong_url_prints_one_line_and_exits_1(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    config = write(tmp_path, f"postgresql://bob:s3cr3t@127.0.0.1:{port}/jobs")
    env = {k: v for k, v in os.environ.items() if k != "SCHEDULER_DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *command, "-c", str(config),
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert out == b""
    assert err.decode() == (
        f"error: cannot connect to postgresql://bob@127.0.0.1:{port}/jobs: connection refused\n"
    )


async def test_the_daemon_logs_a_database_never_reached_as_an_error_naming_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    daemon = await start_daemon(write(tmp_path, f"postgresql://bob:s3cr3t@127.0.0.1:{port}/jobs"))
    try:
        unreachable = await daemon.wait_for("database_unreachable")
        await daemon.wait_for("attempt_finished", count=3, job="tick")  # jobs run meanwhile
    finally:
        assert await daemon.stop() == 0
    assert unreachable["level"] == "error"
    assert (unreachable["host"], unreachable["port"], unreachable["database"]) == (
        "127.0.0.1",
        str(port),
        "jobs",
    )
    assert unreachable["user"] == "bob" and unreachable["error"] == "connection refused"
    # Retried every few seconds meanwhile, never said again; the password never logged.
    assert len(daemon.matching("database_unreachable")) == 1
    assert not daemon.matching("recorder_db_unavailable")
    assert not any("s3cr3t" in line for line in daemon.raw)
