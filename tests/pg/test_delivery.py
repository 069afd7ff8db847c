"""Delivery after a restart, against PostgreSQL: an at_most_once job's abandoned attempt stays
abandoned, an at_least_once job's is retried."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import asyncpg
from structlog.testing import capture_logs

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import load_config
from scheduler_daemon.storage import store
from tests.helpers import T, make_job, query_value, rec, wait_until

CONFIG = """\
database: {{url: "{url}"}}
state_dir: ./state
node: n1
defaults: {{retry: {{attempts: 3}}}}
jobs:
  least: {{every: 1h, command: ["true"]}}
  most: {{every: 1h, command: ["true"], delivery: at_most_once}}
"""


async def test_an_at_most_once_jobs_abandoned_attempt_is_not_retried_after_a_restart(
    tmp_path: Path, database_url: str
) -> None:
    # What a process killed mid-attempt leaves behind: each job's attempt 1 still `running`.
    pool: asyncpg.Pool = await store.connect(database_url)
    try:
        await store.sync_jobs(pool, [make_job("least"), make_job("most")], {})
        running = {"status": Status.RUNNING, "finished_at": None, "duration_ms": None}
        async with pool.acquire() as conn:
            await store.write_executions(conn, [rec("least", **running), rec("most", **running)])
    finally:
        await pool.close()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url=database_url))
    daemon = Daemon(load_config(config))
    with capture_logs() as logs:
        run = asyncio.create_task(daemon.run())
        sql = "SELECT count(*) FROM executions WHERE job_name = $1 AND attempt = 2"
        await wait_until(lambda: _has(database_url, sql, "least"))
        daemon.request_stop()
        assert await asyncio.wait_for(run, 30) == 0
    rows = await _rows(database_url)
    assert rows["least", T] == [(1, "abandoned"), (2, "succeeded")]
    assert rows["most", T] == [(1, "abandoned")]
    # The downtime since T was caught up too: at most once, nothing of it was run.
    others = {
        status
        for (job, at), fire in rows.items()
        if job == "most" and at != T
        for _, status in fire
    }
    assert others == {"missed"}
    why = {e["job"]: e.get("not_retried") for e in logs if e["event"] == "attempt_abandoned"}
    assert why == {"least": None, "most": "delivery: at_most_once"}


async def _has(url: str, sql: str, job: str) -> bool:
    return bool(await query_value(url, sql, job))


async def _rows(url: str) -> dict[tuple[str, datetime], list[tuple[int, str]]]:
    """(attempt, status) of each fire's rows, by job and instant."""
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            "SELECT job_name, scheduled_at, attempt, status FROM executions ORDER BY attempt"
        )
    finally:
        await conn.close()
    rows: dict[tuple[str, datetime], list[tuple[int, str]]] = {}
    for r in found:
        rows.setdefault((r["job_name"], r["scheduled_at"]), []).append((r["attempt"], r["status"]))
    return rows
