"""kill -9, then restart: abandoned attempts, catch-up, and no gap in the record."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from datetime import timedelta
from pathlib import Path

import asyncpg

from tests.test_e2e import _processes_with, start_daemon


async def test_kill_9_then_restart_recovers_and_leaves_no_gap(
    tmp_path: Path, database_url: str
) -> None:
    marker = f"recovery-slow-{os.getpid()}"
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        shutdown_grace: 1s
        jobs:
          tick: {{every: 1s, command: ["true"]}}
          slow:
            every: 1h
            run_on_start: true
            overlap: allow
            max_instances: 2
            shell: "sleep 30 # {marker}"
            retry: {{attempts: 2, delay: 100ms}}
          boot: {{cron: "@reboot", command: ["true"]}}
    """)
    )
    try:
        first = await start_daemon(config)
        await first.wait_for("database_connected")
        await asyncio.sleep(2.5)
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        await asyncio.sleep(3)  # downtime: ~3 fires of `tick` are missed

        second = await start_daemon(config)
        connected = await second.wait_for("database_connected")
        assert connected["abandoned"] >= 1
        await asyncio.sleep(2.5)
        assert await second.stop() == 0
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM executions ORDER BY scheduled_at, attempt")
    finally:
        await conn.close()
    by_job: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_job.setdefault(row["job_name"], []).append(row)

    # the attempt running at the kill is `abandoned`, then retried as attempt 2 of the same fire
    slow = by_job["slow"]
    abandoned = [r for r in slow if r["status"] == "abandoned"]
    assert len(abandoned) == 1 and abandoned[0]["attempt"] == 1
    retry = [r for r in slow if r["fire_id"] == abandoned[0]["fire_id"] and r["attempt"] == 2]
    assert len(retry) == 1 and retry[0]["status"] == "cancelled"  # cut by the second SIGTERM

    # `tick`: every second from the first fire to the last has a row — run, caught up or missed
    ticks = by_job["tick"]
    seconds = sorted({r["scheduled_at"] for r in ticks})
    assert seconds == [seconds[0] + timedelta(seconds=i) for i in range(len(seconds))]
    statuses = {r["status"] for r in ticks}
    # (a live fire may meet the catch-up fire still running: overlap skip records it)
    assert "missed" in statuses and statuses <= {"succeeded", "missed", "skipped"}
    assert sum(r["trigger"] == "catchup" for r in ticks) == 1  # catch_up: latest
    assert len(ticks) == len(seconds)  # one row per instant: nothing twice

    # @reboot fired once per start
    assert len(by_job["boot"]) == 2
    assert all(r["status"] != "running" for r in rows)
