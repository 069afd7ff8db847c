"""Cluster membership against PostgreSQL: the ``nodes`` statements, name clashes, leave and stop,
a lost connection; and the database lock's modes (replicas share it, a lone daemon does not)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon import __version__
from scheduler_daemon.operation import control
from scheduler_daemon.operation.instance import INSTANCE_LOCK, AnotherDaemon, DatabaseLock
from scheduler_daemon.operation.membership import Membership, NodeNameInUse, PgNodes
from scheduler_daemon.specs.settings import ClusterSpec, DatabaseSpec
from scheduler_daemon.storage import fire_claims, nodes
from scheduler_daemon.storage.fire_claims import ClaimRequest
from scheduler_daemon.storage.nodes import Counts, Me
from scheduler_daemon.timing.clock import SystemClock
from tests.helpers import make_config, rec

CLUSTER = ClusterSpec(enabled=True)


def member(dsn: str, node: str) -> Membership:
    return Membership(
        clock=SystemClock(),
        node=node,
        cluster=CLUSTER,
        table=PgNodes(lambda: dsn),
        on_refused=lambda exc: None,
    )


@asynccontextmanager
async def admin(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_a_replica_registers_its_row_and_stops_cleanly(database_url: str) -> None:
    a = member(database_url, "a")
    await a.start()
    async with admin(database_url) as db:
        row = await db.fetchrow(
            "SELECT *, now() - last_seen < interval '5 s' AS fresh FROM nodes WHERE name = 'a'"
        )
        assert row is not None
        assert (row["host"], row["pid"], row["version"]) == (
            socket.gethostname(),
            os.getpid(),
            __version__,
        )
        assert row["stopped_at"] is None and row["fresh"]
        assert a.connected and a.live == ("a",)
        await a.leave()  # stopping: out of live, still heartbeating through the drain
        await a.beat()
        leaving = await db.fetchrow("SELECT stopped_at, last_seen FROM nodes WHERE name = 'a'")
        assert leaving["stopped_at"] <= leaving["last_seen"]
        await a.stop()
        stopped = await db.fetchrow("SELECT stopped_at, last_seen FROM nodes WHERE name = 'a'")
        assert stopped["stopped_at"] > stopped["last_seen"]  # the stop was its last word


async def test_two_replicas_see_each_other_and_judge_the_dead_by_the_databases_clock(
    database_url: str,
) -> None:
    a, b = member(database_url, "a"), member(database_url, "b")
    try:
        await a.start()
        await b.start()
        await a.beat()
        assert a.live == ("a", "b") == b.live
        assert not a.dead("b")
        async with admin(database_url) as db:  # b went silent 20 s ago (past the 15 s lease)
            await db.execute("UPDATE nodes SET last_seen = now() - interval '20 s' WHERE name='b'")
        await a.beat()
        assert a.live == ("a",) and a.dead("b") and a.dead_nodes == ("b",)
        async with admin(database_url) as db:  # silent 5 s: out of live, not dead
            await db.execute("UPDATE nodes SET last_seen = now() - interval '5 s' WHERE name='b'")
        await a.beat()
        assert a.live == ("a",) and not a.dead("b")
        await b.beat()
        await b.leave()
        await a.beat()
        assert a.live == ("a",) and not a.dead("b")  # leaving: draining, its attempts still its
        await b.stop()
        await a.beat()
        assert a.dead("b")  # stopped cleanly: nobody's
    finally:
        await a.stop()
        await b.stop()


async def test_a_live_name_refuses_a_stale_one_is_taken(database_url: str) -> None:
    async with admin(database_url) as db:
        await db.execute(
            "INSERT INTO nodes (name, started_at, last_seen, version, host, pid)"
            " VALUES ('a', now(), now() - interval '2 s', '0.0.9', 'db-2', 4242)"
        )
        a = member(database_url, "a")
        with pytest.raises(NodeNameInUse) as refused:
            await a.start()
        assert str(refused.value) == (
            "node name a is in use by a live replica (pid 4242 on host db-2): give each replica "
            "its own `node:`"
        )
        assert not a.connected
        await a.stop()  # not ours: left as it is
        assert await db.fetchval("SELECT host FROM nodes WHERE name = 'a'") == "db-2"
        await db.execute("UPDATE nodes SET last_seen = now() - interval '16 s'")
        a = member(database_url, "a")
        await a.start()
        try:
            assert await db.fetchval("SELECT pid FROM nodes WHERE name = 'a'") == os.getpid()
            assert a.connected
        finally:
            await a.stop()


async def test_a_lost_connection_disconnects_until_a_heartbeat_reconnects(
    database_url: str,
) -> None:
    where = [database_url]
    a = Membership(
        clock=SystemClock(),
        node="a",
        cluster=CLUSTER,
        table=PgNodes(lambda: where[0]),
        on_refused=lambda exc: None,
    )
    await a.start()
    name = f"pid {os.getpid()} on host {socket.gethostname()}"[:63]
    backend = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
    try:
        async with admin(database_url) as db:
            first = await db.fetchval(backend, name)
            # The server ends the session (waiting up to 5 s until it has ended)...
            await db.execute("SELECT pg_terminate_backend($1, 5000)", first)
            where[0] = "postgresql://nobody@127.0.0.1:9/none"  # ... and cannot be reached
            await a.beat()
            assert not a.connected and not a.dead("anyone")
            where[0] = database_url
            await a.beat()
            assert a.connected and a.live == ("a",)
            assert await db.fetchval(backend, name) not in (None, first)  # a new connection
    finally:
        await a.stop()


async def test_the_survivors_settle_a_replica_that_died_while_leaving_and_one_back_is_live(
    database_url: str,
) -> None:
    """Membership's rows as the lease settlement (storage/fire_claims.py) reads them: a replica
    that crashed during its drain is settled after the lease like any other; one the survivors
    settled that heartbeats again (it was only cut off) is live again."""
    a, b = member(database_url, "a"), member(database_url, "b")
    await a.start()
    await b.start()
    fire = rec("slow", node="b")
    request = ClaimRequest(fire.fire_id, 1, fire.job_name, fire.scheduled_at)
    try:
        async with admin(database_url) as db:
            assert await fire_claims.claim(db, "b", [request])
            await b.leave()  # draining: its attempt is still its own
            assert await fire_claims.abandon_dead(db, CLUSTER.lease) == []
            await db.execute(  # ... and it crashed 20 s ago, mid-drain
                "UPDATE nodes SET last_seen = last_seen - interval '20 s',"
                " stopped_at = stopped_at - interval '20 s' WHERE name = 'b'"
            )
            settled = await fire_claims.abandon_dead(db, CLUSTER.lease)
            assert [(r["job_name"], r["node"]) for r in settled] == [("slow", "b")]
            await a.beat()
            assert a.dead("b") and a.live == ("a",)

            await db.execute("UPDATE nodes SET last_seen = now() - interval '20 s' WHERE name='a'")
            assert await fire_claims.abandon_dead(db, CLUSTER.lease) == []  # nothing of a's
            assert await db.fetchval("SELECT stopped_at FROM nodes WHERE name = 'a'") is not None
            with capture_logs() as logs:
                await a.beat()  # a was only cut off: it is back
            assert a.connected and a.live == ("a",)
            assert [e["event"] for e in logs if e["event"] == "cluster_node_counted_dead"] == [
                "cluster_node_counted_dead"
            ]
            assert await db.fetchval("SELECT stopped_at FROM nodes WHERE name = 'a'") is None
    finally:
        await a.stop()
        await b.stop()


async def test_status_reads_the_live_replicas_from_the_database(
    database_url: str, tmp_path: Path
) -> None:
    config = make_config(database=DatabaseSpec(url=database_url), state_dir=tmp_path)
    a, b = member(database_url, "b"), member(database_url, "a")
    await a.start()
    await b.start()
    try:
        async with control.DbBackend.open(config) as alone:
            assert await alone.cluster() is None  # not in cluster mode: no line
        clustered = config.model_copy(update={"cluster": CLUSTER})
        async with control.DbBackend.open(clustered) as backend:
            assert await backend.cluster() == {"a": Counts(), "b": Counts()}
            await b.leave()
            assert await backend.cluster() == {"b": Counts()}
    finally:
        await a.stop()
        await b.stop()


# -- the database lock's modes ---------------------------------------------------------------------


def lock(dsn: str, *, shared: bool) -> DatabaseLock:
    return DatabaseLock(lambda: dsn, on_lost=lambda exc: None, shared=shared)


async def test_replicas_share_the_database_lock(database_url: str) -> None:
    one, two = lock(database_url, shared=True), lock(database_url, shared=True)
    try:
        await one.acquire()
        await two.acquire()
        assert one.held and two.held
    finally:
        await one.release()
        await two.release()


async def test_a_lone_daemon_refuses_replicas_and_says_what_to_do(database_url: str) -> None:
    alone, replica = lock(database_url, shared=False), lock(database_url, shared=True)
    await alone.acquire()
    try:
        with pytest.raises(AnotherDaemon) as refused:
            await replica.acquire()
        host = socket.gethostname()
        assert str(refused.value) == (
            f"a daemon not in cluster mode runs on this database (pid {os.getpid()} on host "
            f"{host}): stop it, or set cluster.enabled on every daemon of this database"
        )
        assert not replica.held
    finally:
        await alone.release()
    await replica.acquire()  # it stopped: the replica starts
    await replica.release()


async def test_replicas_refuse_a_lone_daemon_and_say_what_to_do(database_url: str) -> None:
    replicas = [lock(database_url, shared=True), lock(database_url, shared=True)]
    alone = lock(database_url, shared=False)
    for replica in replicas:
        await replica.acquire()
    try:
        with pytest.raises(AnotherDaemon) as refused:
            await alone.acquire()
        me = f"pid {os.getpid()} on host {socket.gethostname()}"
        assert str(refused.value) == (
            f"daemons in cluster mode run on this database ({me}; {me}): stop them, or set "
            "cluster.enabled on this daemon too (every daemon of a database runs in cluster "
            "mode, or one runs alone)"
        )
        assert not alone.held
    finally:
        for replica in replicas:
            await replica.release()


async def test_two_lone_daemons_still_refuse_each_other(database_url: str) -> None:
    first, second = lock(database_url, shared=False), lock(database_url, shared=False)
    await first.acquire()
    try:
        with pytest.raises(AnotherDaemon, match=r"^another daemon \(pid \d+ on host .*\) runs on"):
            await second.acquire()
        async with admin(database_url) as db:
            modes = await db.fetch(
                "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                INSTANCE_LOCK,
            )
        assert [r["mode"] for r in modes] == ["ExclusiveLock"]
    finally:
        await first.release()


async def test_each_replica_reports_its_claims_with_its_heartbeat(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        me = Me(name="counted", version="x", host="h", pid=1)
        started = await nodes.register(conn, me, lease=15.0)
        assert started is not None
        await nodes.heartbeat(conn, me, started, counts=Counts(12, 30, 2))
        seen = await nodes.heartbeat(conn, me, started, counts=Counts(13, 31, 2))
        assert seen.counts["counted"] == Counts(12, 30, 2)  # as the previous heartbeat left it
        assert await nodes.live_counts(conn, within=5.0) == {"counted": Counts(13, 31, 2)}
    finally:
        await conn.close()
