"""status / history / trigger / pause / resume: the installed CLI against a running daemon.

Through the admin API when the config has `admin:`, else straight to PostgreSQL (the daemon picks
up pauses and queued runs from there). The daemon runs in the test's loop; each command is a
process of its own (~0.5 s of imports each), hence the e2e layer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from scheduler_daemon.operation import daemon as daemon_module
from scheduler_daemon.operation import pauses as pauses_module
from scheduler_daemon.storage import queries
from tests.helpers import (
    ENV,
    REPO,
    free_port,
    listening,
    next_event,
    query_value,
    running_daemon,
    wait_until,
    write_config,
)

CLI = Path(sys.executable).with_name("scheduler-daemon")
NO_TARGET = "http://127.0.0.1:9"  # the `ping` job's URL: none of these tests makes it fire


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> tuple[Path, str]:
    port = free_port()
    path = tmp_path / "config.yaml"
    write_config(path, database_url, NO_TARGET, listen=f"127.0.0.1:{port}")
    return path, f"http://127.0.0.1:{port}"


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, "-c", str(config),
        env={**os.environ, **ENV, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return await proc.wait(), out.decode(), err.decode()


async def test_operator_commands_through_the_admin_api(
    config: tuple[Path, str], database_url: str
) -> None:
    config_file, base = config
    async with running_daemon(config_file, base), listening(database_url) as events:
        code, out, _ = await cli(config_file, "trigger", "greet", "--args", '{"name": "cli"}')
        assert code == 0
        fired = json.loads(out)
        event = await next_event(events, fire_id=fired["fire_id"])
        assert event["trigger"] == "manual" and event["status"] == "succeeded"
        code, out, _ = await cli(config_file, "pause", "shell")
        assert code == 0 and json.loads(out)["paused"] is True
        code, out, _ = await cli(config_file, "status")
        assert code == 0
        table, history = out.splitlines()[1:-1], out.splitlines()[-1]
        lines = {line.split()[0]: line for line in table}
        assert set(lines) == {"greet", "explode", "ping", "shell"}
        assert history.startswith("history: ") and "(executions " in history
        assert " paused " in lines["shell"] and " idle " in lines["ping"]
        assert "At 09:00, Monday through Friday (America/Sao_Paulo)" in lines["ping"]
        assert "succeeded" in lines["greet"] and "100.0%" in lines["greet"]

        async def recorded() -> bool:  # polled in the database: a CLI process costs ~0.5 s
            sql = "SELECT count(*) FROM executions WHERE fire_id = $1 AND status <> 'running'"
            return bool(await query_value(database_url, sql, uuid.UUID(fired["fire_id"])))

        await wait_until(recorded, timeout=20)
        code, out, _ = await cli(config_file, "history", "greet", "--json")
        assert code == 0 and any(r["fire_id"] == fired["fire_id"] for r in json.loads(out))
        code, out, _ = await cli(config_file, "history", "greet", "-n", "1")
        assert code == 0 and "manual" in out and "succeeded" in out
        code, _, err = await cli(config_file, "trigger", "nope")
        assert code == 1 and "no job named 'nope'" in err and "404 unknown_job" in err
        code, _, err = await cli(config_file, "history", "nope")
        assert code == 1 and "known: greet" in err


async def test_operator_commands_straight_to_postgresql(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pauses_module, "CONTROL_POLL", 0.05)
    config = tmp_path / "config.yaml"
    port = free_port()
    write_config(config, database_url, NO_TARGET, listen=f"127.0.0.1:{port}")
    async with running_daemon(config, f"http://127.0.0.1:{port}") as running:
        # The CLI reads the same jobs without `admin:`: it must go to the database.
        direct = tmp_path / "direct.yaml"
        write_config(direct, database_url, NO_TARGET, listen=None)
        code, out, err = await cli(direct, "pause", "greet")
        assert code == 0, err
        assert json.loads(out)["paused"] is True
        await wait_until(lambda: _paused(running.daemon, "greet"))
        async with listening(database_url) as events:
            code, out, err = await cli(direct, "trigger", "greet", "--args", '{"name": "db"}')
            assert code == 0, err
            queued = json.loads(out)
            event = await next_event(events, fire_id=queued["run_id"])
        assert event["trigger"] == "manual" and event["status"] == "succeeded"
        code, out, _ = await cli(direct, "status", "--json")
        states = {job["name"]: job["state"] for job in json.loads(out)}
        assert states == {"greet": "paused", "explode": "idle", "ping": "idle", "shell": "idle"}
        code, out, err = await cli(direct, "resume", "greet")
        assert code == 0, err
        await wait_until(lambda: _paused(running.daemon, "greet", False))
        code, _, err = await cli(direct, "trigger", "shell", "--args", "{}")
        assert code == 1 and "command job takes no overrides" in err


async def _paused(daemon: daemon_module.Daemon, job: str, expected: bool = True) -> bool:
    return (job in daemon.paused()) == expected


async def test_a_trigger_past_the_pending_runs_bound_is_refused_with_the_reason(
    tmp_path: Path, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO runs (id, job_name, run_at) VALUES ($1, 'greet', now() + '1 day')",
            [(uuid.uuid4(),) for _ in range(queries.MAX_PENDING_RUNS_PER_JOB)],
        )
    finally:
        await conn.close()
    direct = tmp_path / "direct.yaml"
    write_config(direct, database_url, NO_TARGET, listen=None)
    code, out, err = await cli(direct, "trigger", "greet")
    assert code == 1 and out == ""
    assert "100 one-off runs of job 'greet' are pending already" in err
    total = "SELECT count(*) FROM runs WHERE started_at IS NULL AND cancelled_at IS NULL"
    assert await query_value(database_url, total) == queries.MAX_PENDING_RUNS_PER_JOB
