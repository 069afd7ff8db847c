"""Cluster mode with real daemon processes on one PostgreSQL: replicas with distinct node names run
side by side and see each other; a daemon not in cluster mode, or a replica reusing a live node
name, is refused while they run; a clean stop leaves the live set at once."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import REPO, DaemonProcess, free_port, query_value, start_daemon, wait_until

CLI = Path(sys.executable).with_name("scheduler-daemon")


def _config(
    root: Path, database_url: str, *, node: str, cluster: bool, port: int | None = None
) -> Path:
    folder = root / f"{len(list(root.iterdir()))}-{node}"  # each daemon a state_dir of its own
    folder.mkdir()
    admin = f"admin: {{listen: 127.0.0.1:{port}, open_reads: true}}\n" if port else ""
    (folder / "config.yaml").write_text(
        textwrap.dedent(f"""
        database: {{url: "{database_url}"}}
        state_dir: ./state
        shutdown_grace: 2s
        node: {node}
        cluster: {{enabled: {str(cluster).lower()}}}
        jobs:
          hourly:
            every: 1h
            command: ["true"]
        """)
        + admin
    )
    return folder / "config.yaml"


async def _health(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as resp,
    ):
        body: dict[str, Any] = await resp.json()
        return body


async def _sees(port: int, live: list[str]) -> bool:
    try:
        cluster = (await _health(port))["cluster"]
    except aiohttp.ClientError:
        return False
    return bool(cluster["connected"]) and cluster["live"] == live


async def _refused(config: Path) -> str:
    """The output of a daemon that must exit 1 at once."""
    refused = await start_daemon(config)
    assert await asyncio.wait_for(refused.proc.wait(), 30) == 1
    await asyncio.wait_for(refused._reader, 5)  # its last lines read
    said = "\n".join(refused.raw)
    assert "Traceback" not in said and not refused.matching("daemon_started")
    return said


async def _status(config: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "status", "-c", str(config),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_replicas_share_a_database_and_a_lone_daemon_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    port_a, port_b = free_port(), free_port()
    config_a = _config(tmp_path, database_url, node="a", cluster=True, port=port_a)
    config_b = _config(tmp_path, database_url, node="b", cluster=True, port=port_b)
    a = await start_daemon(config_a)
    b: DaemonProcess | None = None
    try:
        await a.wait_for("daemon_started")
        b = await start_daemon(config_b)
        await b.wait_for("daemon_started")
        await wait_until(lambda: _sees(port_a, ["a", "b"]), timeout=15)
        await wait_until(lambda: _sees(port_b, ["a", "b"]), timeout=15)
        health = await _health(port_a)
        assert health["status"] == "ok" and health["cluster"]["node"] == "a"

        said = await _refused(_config(tmp_path, database_url, node="c", cluster=False))
        host = socket.gethostname()
        assert "daemons in cluster mode run on this database (" in said
        assert f"pid {a.proc.pid} on host {host}" in said and f"pid {b.proc.pid} on host" in said
        assert "set cluster.enabled on this daemon too" in said

        said = await _refused(_config(tmp_path, database_url, node="a", cluster=True))
        assert (
            f"node name a is in use by a live replica (pid {a.proc.pid} on host {host}): "
            "give each replica its own `node:`"
        ) in said

        assert await _sees(port_a, ["a", "b"])  # the refused ones changed nothing
        said = await _status(config_a)  # over the API
        assert "cluster: 2 replicas live: a (0 claimed, 0 taken over), b (0 claimed" in said

        assert await b.stop() == 0
        b = None
        await wait_until(lambda: _sees(port_a, ["a"]), timeout=5)  # a clean stop: at once
        gone = "SELECT stopped_at > last_seen FROM nodes WHERE name = 'b'"
        assert await query_value(database_url, gone) is True
        assert "cluster: 1 replica live: a (" in await _status(config_a)
    finally:
        if b is not None:
            await b.stop()
        assert await a.stop() == 0
    rows = await query_value(
        database_url, "SELECT json_agg(name ORDER BY name) FROM nodes WHERE stopped_at IS NOT NULL"
    )
    assert json.loads(rows) == ["a", "b"]  # the refused ones never registered


async def test_a_draining_replica_keeps_its_attempt_past_the_lease(
    tmp_path: Path, database_url: str
) -> None:
    """SIGTERM during a long attempt: the replica leaves the live set at once but heartbeats on
    while it drains, so the survivor never takes its attempt for abandoned (lease 2 s, drain
    ~4 s)."""
    replicas: dict[str, DaemonProcess] = {}
    for node in ("a", "b"):
        folder = tmp_path / node
        folder.mkdir()
        (folder / "config.yaml").write_text(
            textwrap.dedent(f"""
            database: {{url: "{database_url}"}}
            state_dir: ./state
            shutdown_grace: 20s
            node: {node}
            cluster: {{enabled: true, takeover_after: 1s, lease: 2s}}
            jobs:
              slow:
                every: 3s
                shell: "sleep 4"
            """)
        )
        replicas[node] = await start_daemon(folder / "config.yaml")
    try:
        for daemon in replicas.values():
            await daemon.wait_for("daemon_started")
        running = "SELECT fire_id FROM executions WHERE status = 'running'"
        await wait_until(lambda: _has_value(database_url, running), timeout=15)
        fire_id = await query_value(database_url, running)
        owner = await query_value(  # the replica that won the claim
            database_url, "SELECT node FROM executions WHERE fire_id = $1", fire_id
        )
        survivor = replicas["b" if owner == "a" else "a"]
        assert await replicas.pop(owner).stop() == 0  # drains: ~4 s, twice the lease
        assert not survivor.matching("replica_attempts_abandoned")
    finally:
        for daemon in replicas.values():
            assert await daemon.stop() == 0
    statuses = await query_value(
        database_url,
        "SELECT json_agg(status || ' on ' || node) FROM executions WHERE fire_id = $1",
        fire_id,
    )
    assert json.loads(statuses) == [f"succeeded on {owner}"]  # finished where it began
    abandoned = "SELECT count(*) FROM executions WHERE status = 'abandoned'"
    assert await query_value(database_url, abandoned) == 0


async def _has_value(dsn: str, sql: str) -> bool:
    return await query_value(dsn, sql) is not None
