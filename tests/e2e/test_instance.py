"""One daemon per state directory and per database: a second one is refused before it changes
anything — no recovery of the first one's attempts, no fire of its own."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap
from pathlib import Path

import asyncpg

from tests.helpers import REPO, start_daemon, wait_until


def _config(path: Path, database_url: str, marker: Path) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        state_dir: ./state
        shutdown_grace: 5s
        jobs:
          slow:
            every: 1h
            run_on_start: true
            shell: "echo started >> {marker}; sleep 2"
    """)
    )
    return path


async def test_a_second_daemon_on_the_same_state_is_refused_and_touches_nothing(
    tmp_path: Path, database_url: str
) -> None:
    marker = tmp_path / "starts"
    config = _config(tmp_path / "config.yaml", database_url, marker)
    first = await start_daemon(config)
    try:
        await wait_until(lambda: asyncio.sleep(0, marker.exists()))
        second = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "scheduler_daemon", "run", "-c", str(config)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        output, _ = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 1
        said = output.decode()
        host = socket.gethostname()
        assert f"another daemon (pid {first.proc.pid} on host {host}) runs on state_dir" in said
        assert "Traceback" not in said
        await first.wait_for("attempt_finished", job="slow", status="succeeded")
    finally:
        assert await first.stop() == 0
    conn = await asyncpg.connect(database_url)
    try:
        statuses = await conn.fetch("SELECT status FROM executions WHERE job_name = 'slow'")
    finally:
        await conn.close()
    assert [r["status"] for r in statuses] == ["succeeded"]  # not abandoned by the second
    assert marker.read_text() == "started\n"  # the second never ran it


async def test_a_second_daemon_on_the_same_database_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    marker = tmp_path / "starts"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await start_daemon(_config(tmp_path / "a" / "config.yaml", database_url, marker))
    try:
        await first.wait_for("database_locked")
        second = await start_daemon(_config(tmp_path / "b" / "config.yaml", database_url, marker))
        assert await asyncio.wait_for(second.proc.wait(), 30) == 1
        said = "\n".join(second.raw)
        assert f"another daemon (pid {first.proc.pid} on host" in said
        assert "runs on this database" in said and "Traceback" not in said
        assert not second.matching("daemon_started")
        await first.wait_for("attempt_finished", job="slow")
    finally:
        assert await first.stop() == 0
    assert marker.read_text() == "started\n"
