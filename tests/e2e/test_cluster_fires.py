"""Replicas: several daemon processes in cluster mode on one PostgreSQL, as an operator runs them.

Each test starts real `scheduler-daemon run` processes with distinct node names, kills or cuts
off some, and reads the outcome back from the executions table and the daemons' logs: every
(job, instant) runs once, the load is shared, a dead replica's fires and attempts move.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

from tests.helpers import (
    ADMIN_TOKEN,
    AUTH,
    DaemonProcess,
    free_port,
    start_daemon,
    wait_until,
)


def cluster_config(
    tmp_path: Path, node: str, dsn: str, jobs: str, *, takeover: str = "1s", lease: str = "4s"
) -> Path:
    place = tmp_path / node
    place.mkdir()
    path = place / "config.yaml"
    path.write_text(
        f"""\
database: {{url: "{dsn}"}}
state_dir: ./state
node: {node}
shutdown_grace: 2s
max_concurrency: 400
cluster: {{enabled: true, takeover_after: {takeover}, lease: {lease}}}
jobs:
{jobs}"""
    )
    return path


def every_second(count: int, action: str = "python: os:getpid") -> str:
    return "".join(f"  j{i:03d}: {{every: 1s, {action}}}\n" for i in range(count))


@asynccontextmanager
async def replicas(configs: list[Path]) -> AsyncIterator[list[DaemonProcess]]:
    daemons = [await start_daemon(config) for config in configs]
    try:
        await asyncio.gather(*(d.wait_for("database_connected") for d in daemons))
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.proc.returncode is None:
                await daemon.stop()


async def test_three_replicas_run_every_instant_once_and_share_the_load(
    tmp_path: Path, database_url: str
) -> None:
    jobs = every_second(200)
    configs = [cluster_config(tmp_path, n, database_url, jobs) for n in ("r1", "r2", "r3")]
    async with replicas(configs) as daemons:
        begin = datetime.now(UTC) + timedelta(seconds=2)
        await asyncio.sleep(60)
        end = datetime.now(UTC) - timedelta(seconds=2)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT job_name, scheduled_at, node, count(*) OVER (PARTITION BY fire_id) AS n
               FROM executions WHERE attempt = 1 AND scheduled_at BETWEEN $1 AND $2""",
            begin,
            end,
        )
        claims = await conn.fetchval("SELECT count(*) FROM fire_claims")
        started = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE started_at IS NOT NULL"
        )
    finally:
        await conn.close()
    seconds = int((end - begin).total_seconds())
    assert len(rows) >= 200 * (seconds - 1), "instants are missing"
    assert all(row["n"] == 1 for row in rows)
    instants = Counter((row["job_name"], row["scheduled_at"]) for row in rows)
    assert max(instants.values()) == 1
    # Ran once: as many attempts ran (each replica logs each of its own) as rows were kept (a
    # second run of an instant would have been logged, and its row dropped by the key).
    finished = sum(len(d.matching("attempt_finished")) for d in daemons)
    assert finished == started <= claims  # a claim may end cancelled unstarted at the stop
    shares = Counter(row["node"] for row in rows)
    for node in ("r1", "r2", "r3"):
        assert 0.20 <= shares[node] / len(rows) <= 0.45, shares


async def test_a_killed_replicas_fires_and_attempts_move_to_the_others(
    tmp_path: Path, database_url: str
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    soon = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    jobs = every_second(30) + (
        "  long:\n"
        f"    at: '{soon.isoformat()}'\n"
        f"    python: tests.e2e_jobs:hang\n    args: {{path: '{marks}/long'}}\n"
        "    retry: {attempts: 3, delay: 100ms}\n"
    )
    configs = [cluster_config(tmp_path, n, database_url, jobs) for n in ("k1", "k2")]
    async with replicas(configs) as daemons:
        conn = await asyncpg.connect(database_url)
        try:
            # Wait for the minute's `long` to start somewhere: kill that replica.
            await wait_until(lambda: _exists(marks / "long"), timeout=20)
            owner = await conn.fetchval(
                "SELECT node FROM fire_claims WHERE job_name = 'long' AND attempt = 1"
            )
            victim, survivor = (daemons[0], daemons[1]) if owner == "k1" else daemons[::-1]
            survivor_name = "k2" if owner == "k1" else "k1"
            killed_at = datetime.now(UTC)
            victim.proc.send_signal(signal.SIGKILL)
            await victim.proc.wait()
            abandoned = await survivor.wait_for("replica_attempts_abandoned", timeout=20)
            settled_at = datetime.fromisoformat(abandoned["timestamp"])
            # Not before the lease (4 s) from its last heartbeat, at most 1 s before the kill.
            assert settled_at - killed_at >= timedelta(seconds=3)
            # Retried once (a thread's start on two busy cores took longer than 10 s once).
            await wait_until(lambda: _lines(marks / "long", 2), timeout=20)
            await asyncio.sleep(3)
            taken = await conn.fetch(
                """SELECT drift_ms FROM executions
                   WHERE node = $1 AND attempt = 1 AND job_name <> 'long'
                     AND scheduled_at > $2::timestamptz + interval '1 second'
                     AND drift_ms IS NOT NULL""",
                survivor_name,
                killed_at,
            )
            assert taken and max(r["drift_ms"] for r in taken) <= 1000 + 1000 + 500
            twice = await conn.fetchval(
                """SELECT count(*) FROM (SELECT fire_id, attempt FROM executions
                   GROUP BY 1, 2 HAVING count(*) > 1) d"""
            )
            long_rows = await conn.fetch(
                "SELECT attempt, status, node FROM executions WHERE job_name = 'long' "
                "ORDER BY attempt"
            )
        finally:
            await conn.close()
    assert twice == 0
    assert [(r["attempt"], r["status"]) for r in long_rows][:1] == [(1, "abandoned")]
    assert [r["attempt"] for r in long_rows] in ([1], [1, 2])  # attempt 2 runs (or is drained)
    assert (marks / "long").read_text().count("started") == 2


async def test_after_every_replica_was_down_the_catch_up_runs_once(
    tmp_path: Path, database_url: str
) -> None:
    jobs = "  tick:\n    every: 1s\n    catch_up: all\n    python: os:getpid\n"
    configs = [cluster_config(tmp_path, n, database_url, jobs) for n in ("c1", "c2")]
    async with replicas(configs) as daemons:
        await daemons[0].wait_for("attempt_finished", count=2)
    await asyncio.sleep(4)  # every replica down: about 4 instants missed
    async with replicas(configs) as daemons:
        await asyncio.sleep(3)
    conn = await asyncpg.connect(database_url)
    try:
        dupes = await conn.fetchval(
            "SELECT count(*) FROM (SELECT scheduled_at FROM executions WHERE attempt = 1 "
            "GROUP BY 1 HAVING count(*) > 1) d"
        )
        catchups = await conn.fetch(
            "SELECT node FROM executions WHERE trigger = 'catchup' AND status = 'succeeded'"
        )
    finally:
        await conn.close()
    assert dupes == 0
    assert len(catchups) >= 3
    ran = sum(len(d.matching("attempt_finished", trigger="catchup")) for d in daemons)
    assert ran == len(catchups)  # each missed instant ran on one replica only


async def _exists(path: Path) -> bool:
    return path.exists()


async def _lines(path: Path, count: int) -> bool:
    return path.exists() and path.read_text().count("started") >= count


async def test_replicas_whose_connections_are_killed_run_no_instant_twice(
    tmp_path: Path, database_url: str
) -> None:
    jobs = every_second(50)
    configs = [cluster_config(tmp_path, n, database_url, jobs) for n in ("x1", "x2")]
    conn = await asyncpg.connect(database_url)
    try:
        async with replicas(configs) as daemons:
            for _ in range(4):  # cut every replica off, again and again
                await asyncio.sleep(3)
                await conn.execute(
                    """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()"""
                )
            await asyncio.sleep(3)
        started = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE started_at IS NOT NULL"
        )
    finally:
        await conn.close()
    finished = sum(len(d.matching("attempt_finished")) for d in daemons)
    assert started > 50 * 5
    assert finished == started  # an instant run twice would be logged twice, kept once


async def test_a_manual_trigger_sent_to_one_replica_runs_once(
    tmp_path: Path, database_url: str
) -> None:
    jobs = "  hourly: {every: 1h, python: os:getpid}\n"
    ports = {node: free_port() for node in ("m1", "m2")}
    configs = []
    for node, port in ports.items():
        config = cluster_config(tmp_path, node, database_url, jobs)
        admin = f"admin: {{listen: '127.0.0.1:{port}', token: {ADMIN_TOKEN}}}\n"
        config.write_text(config.read_text().replace("jobs:\n", admin + "jobs:\n"))
        configs.append(config)
    async with replicas(configs) as daemons, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{ports['m2']}/jobs/hourly/trigger"
        async with http.post(url, headers=AUTH) as response:
            assert response.status == 202
            fire_id = (await response.json())["fire_id"]
        await daemons[1].wait_for("attempt_finished", job="hourly")
        await asyncio.sleep(2)  # time for anything else that would run it
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT node FROM executions WHERE fire_id = $1", fire_id)
    finally:
        await conn.close()
    assert [r["node"] for r in rows] == ["m2"]
    assert daemons[0].matching("attempt_finished", job="hourly") == []
