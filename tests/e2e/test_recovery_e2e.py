"""kill -9, then restart: abandoned attempts, catch-up, and no gap in the record."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from structlog.testing import capture_logs

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import schema, store
from scheduler_daemon.storage.journal import Journal
from tests.helpers import DaemonProcess, processes_with, query_value, start_daemon, wait_until

FINISHED = "attempt_finished"


def _recovery_config(tmp_path: Path, database_url: str, marker: str) -> Path:
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
    return config


async def test_kill_9_then_restart_recovers_and_leaves_no_gap(
    tmp_path: Path, database_url: str
) -> None:
    marker = f"recovery-slow-{os.getpid()}"
    config = _recovery_config(tmp_path, database_url, marker)
    try:
        first = await start_daemon(config)
        await first.wait_for("database_connected")
        # in the database before the kill: `boot`'s row, `slow` running, a tick
        await wait_until(lambda: _rows(database_url, BOOT, TICK, SLOW_RUNNING))
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        # Downtime: two whole `tick` instants pass (one run by catch-up, one recorded missed).
        killed_at = time.time()
        await wait_until(lambda: _past(math.floor(killed_at) + 2.1))

        second = await start_daemon(config)
        connected = await second.wait_for("database_connected")
        assert connected["abandoned"] >= 1
        await second.wait_for(FINISHED, job="boot")
        await second.wait_for(FINISHED, job="tick", trigger="catchup")
        await second.wait_for(FINISHED, job="tick", trigger="schedule")
        # the abandoned attempt's retry has started (and is cut by the SIGTERM below)
        await wait_until(lambda: _rows(database_url, SLOW_RETRY), timeout=30)
        assert await second.stop() == 0
    finally:
        for pid in processes_with(marker):
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
    # (a live fire may meet the catch-up fire still running: overlap skip records it; a tick
    # that began just before the kill, its row not yet written, is abandoned)
    assert "missed" in statuses and statuses <= {"succeeded", "missed", "skipped", "abandoned"}
    assert sum(r["trigger"] == "catchup" for r in ticks) == 1  # catch_up: latest
    assert len(ticks) == len(seconds)  # one row per instant: nothing twice

    # @reboot fired once per start
    assert len(by_job["boot"]) == 2
    assert all(r["status"] != "running" for r in rows)


BOOT = "job_name = 'boot'"
TICK = "job_name = 'tick'"
SLOW_RUNNING = "job_name = 'slow' AND status = 'running'"
SLOW_RETRY = "job_name = 'slow' AND attempt = 2"


async def _rows(dsn: str, *conditions: str) -> bool:
    """Has executions a row meeting each condition?"""
    for where in conditions:
        if not await query_value(dsn, f"SELECT count(*) FROM executions WHERE {where}"):
            return False
    return True


async def _past(instant: float) -> bool:
    return time.time() >= instant


# -- the previous process's journal (in-process daemon) ------------------------------------------


async def test_a_journal_left_by_the_previous_process_is_replayed_before_catch_up(
    tmp_path: Path, database_url: str
) -> None:
    """The fire it holds already ran: catch-up must not run it again."""

    marks = tmp_path / "marks"
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
database: {{url: "{database_url}"}}
state_dir: ./state
jobs:
  hourly:
    every: 1h
    catch_up: latest
    python: tests.e2e_jobs:mark
    args: {{path: "{marks}"}}
"""
    )
    now = datetime.now(UTC)
    ran_at = now.replace(minute=0, second=0, microsecond=0)  # the latest hourly instant
    config = load_config(path, environ={})
    pool = await store.connect(database_url)
    try:
        await schema.upgrade(pool)
        await store.sync_jobs(pool, config.jobs, {})
        # What the database knew before the outage: the instant before.
        await pool.execute("UPDATE jobs SET last_scheduled_at = $1", ran_at - timedelta(hours=1))
    finally:
        await pool.close()
    # The previous process ran the latest instant during the outage and journaled its row.
    Journal(config.state_dir / "journal" / "executions.jsonl").append([
        ExecutionRecord(scheduled_fire_id("hourly", ran_at), "hourly", ran_at, 1, FireKind.SCHEDULE,
                        Status.SUCCEEDED, ran_at, ran_at, 1.0, 1.0, node=config.node)
    ])  # fmt: skip
    daemon = Daemon(config)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        await wait_until(lambda: _logged(logs, "database_connected"))
        await wait_until(lambda: _logged(logs, "journal_replayed"))
        daemon.request_stop("test")
        assert await asyncio.wait_for(task, 30) == 0
    assert not marks.exists()  # the journaled fire was not run again
    assert not [e for e in logs if e["event"] == "catch_up"]


async def _logged(logs: list[dict[str, Any]], event: str) -> bool:
    return any(e["event"] == event for e in logs)


# -- an attempt that began just before the crash: its start is on disk, not only in a batch --------


async def test_an_attempt_killed_before_its_row_was_written_is_abandoned_and_not_run_again(
    tmp_path: Path, database_url: str
) -> None:
    starts = tmp_path / "starts"  # one file per attempt that began
    starts.mkdir()
    marker = f"startlog-{os.getpid()}"
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        state_dir: ./state
        shutdown_grace: 2s
        jobs:
          mark:
            every: 1s
            shell: "mktemp {starts}/start.XXXXXX >/dev/null; sleep 0.3 # {marker}"
            retry: {{attempts: 1}}
    """)
    )
    try:
        first = await start_daemon(config)
        await first.wait_for("database_connected")
        await wait_until(lambda: _rows(database_url, "job_name = 'mark'"))  # catch-up's start
        killed_file_at = await _kill_right_after_a_start(first, database_url, starts)

        second = await start_daemon(config)
        connected = await second.wait_for("database_connected")
        assert connected["abandoned"] >= 1
        await second.wait_for(FINISHED, job="mark", trigger="schedule")
        assert await second.stop() == 0
        # replayed, then its own files removed at the clean stop
        assert not list((tmp_path / "state" / "journal").glob("starts-*.jsonl"))
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM executions ORDER BY scheduled_at, attempt")
    finally:
        await conn.close()
    began = [r for r in rows if r["started_at"] is not None]
    # every attempt that began has a row of its own: none ran twice (a row may also be an
    # attempt killed between its start reaching the disk and its action: abandoned too)
    assert len(list(starts.iterdir())) <= len(began)
    # the attempt killed is abandoned (started_at: before its file, by the fsync at most)
    killed = max(
        (r for r in began if r["started_at"].timestamp() <= killed_file_at + 0.05),
        key=lambda r: r["started_at"],
    )
    assert killed["status"] == "abandoned"
    assert all(r["status"] != "running" for r in rows)
    # and every instant from the first to the last has a row
    seconds = sorted({r["scheduled_at"] for r in rows})
    assert seconds == [seconds[0] + timedelta(seconds=i) for i in range(len(seconds))]


async def _kill_right_after_a_start(daemon: DaemonProcess, dsn: str, starts: Path) -> float:
    """SIGKILL ``daemon`` as soon as an attempt's action has begun, with none of the rows
    recorded since just before then in the database (a lock holds the recorder's batch);
    returns when that action began (its file's mtime)."""
    lock = await asyncpg.connect(dsn)
    try:
        held = lock.transaction()
        await held.start()
        await lock.execute("LOCK TABLE executions IN EXCLUSIVE MODE")
        before = set(starts.iterdir())
        await wait_until(lambda: _more_files_than(starts, len(before)))
        daemon.proc.send_signal(signal.SIGKILL)
        await daemon.proc.wait()
        [new] = set(starts.iterdir()) - before
        # The batch it was writing waits for our lock: end it before it can go on.
        await lock.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'scheduler_daemon' AND datname = current_database()"
        )
        await held.rollback()
    finally:
        await lock.close()
    return new.stat().st_mtime


async def _more_files_than(directory: Path, count: int) -> bool:
    return len(list(directory.iterdir())) > count
