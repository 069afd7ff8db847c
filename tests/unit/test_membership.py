"""Cluster membership on the fake clock: the heartbeat loop, who is live, who is dead, refusals.

The ``nodes`` table is a stand-in here that keeps the rules of storage/nodes.py's statements
(their SQL is checked against PostgreSQL in tests/pg/test_membership.py); its "database time"
is the fake clock's wall time.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.instance import AnotherDaemon
from scheduler_daemon.operation.membership import (
    Membership,
    NodeNameInUse,
    PgNodes,
    heartbeat_every,
    live_within,
)
from scheduler_daemon.specs.settings import ClusterSpec
from scheduler_daemon.storage.nodes import Counts, Holder, Me, Seen
from tests.helpers import FakeClock

HOST = socket.gethostname()
NO_SUCH_PID = 2**22 + 4321  # above Linux's pid_max: never a running process
CLUSTER = ClusterSpec(enabled=True)  # takeover_after 2 s, lease 15 s


@dataclass
class Row:
    host: str
    pid: int | None
    started_at: datetime
    last_seen: float
    stopped_at: float | None = None


class FakeNodes:
    """The ``nodes`` table in memory; ``down``: every statement fails like a lost connection;
    ``hang``: the heartbeat never answers."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rows: dict[str, Row] = {}
        self.down = False
        self.hang = False
        self.heartbeats = 0
        self.resets = 0

    def _now(self) -> float:
        if self.down:
            raise ConnectionResetError("connection lost")
        return self.clock.time()

    def other(self, name: str, *, ago: float = 0.0, host: str = "elsewhere", pid: int = 7) -> None:
        """Another replica's row, its last heartbeat ``ago`` seconds back."""
        now = self.clock.time()
        self.rows[name] = Row(host, pid, datetime.fromtimestamp(now - ago, UTC), now - ago)

    def beat(self, name: str) -> None:
        self.rows[name].last_seen = self.clock.time()

    def _free(self, row: Row, me: Me, lease: float) -> bool:
        now = self.clock.time()
        gone = row.stopped_at is not None and row.stopped_at > row.last_seen
        return gone or row.last_seen < now - lease or (row.host, row.pid) == (me.host, me.pid)

    def _take(self, me: Me) -> datetime:
        now = self.clock.time()
        started = datetime.fromtimestamp(now, UTC)
        self.rows[me.name] = Row(me.host, me.pid, started, now)
        return started

    def _mine(self, me: Me, started_at: datetime) -> Row | None:
        row = self.rows.get(me.name)
        if row is None or (row.host, row.pid, row.started_at) != (me.host, me.pid, started_at):
            return None
        return row

    async def register(self, me: Me, lease: float) -> datetime | None:
        self._now()
        row = self.rows.get(me.name)
        return self._take(me) if row is None or self._free(row, me, lease) else None

    async def take_over(self, me: Me, gone: Holder) -> datetime | None:
        self._now()
        row = self.rows.get(me.name)
        if row is None or row.started_at != gone.started_at:
            return None
        return self._take(me)

    async def holder(self, name: str) -> Holder | None:
        now = self._now()
        row = self.rows.get(name)
        if row is None:
            return None
        gone = row.stopped_at is not None and row.stopped_at > row.last_seen
        return Holder(row.host, row.pid, row.started_at, now - row.last_seen, gone)

    async def heartbeat(self, me: Me, started_at: datetime, leaving: bool, counts: Counts) -> Seen:
        now = self._now()
        if self.hang:
            await asyncio.get_running_loop().create_future()
        self.heartbeats += 1
        before = {name: replace(row) for name, row in self.rows.items()}
        mine = self._mine(me, started_at)
        if mine is not None:
            mine.last_seen = now
            mine.stopped_at = (mine.stopped_at or now) if leaving else None
        return Seen(
            mine=mine is not None,
            ages={name: now - row.last_seen for name, row in before.items()},
            stopping=frozenset(n for n, r in before.items() if r.stopped_at is not None),
            gone=frozenset(n for n, r in before.items() if (r.stopped_at or 0) > r.last_seen),
        )

    async def stop(self, me: Me, started_at: datetime) -> None:
        now = self._now()
        row = self._mine(me, started_at)
        if row is not None:
            row.stopped_at = max(now, row.last_seen + 1e-6)

    def reset(self) -> None:
        self.resets += 1

    async def close(self) -> None:
        return None


def membership(
    clock: FakeClock, table: FakeNodes, *, node: str = "a", cluster: ClusterSpec = CLUSTER
) -> tuple[Membership, list[AnotherDaemon]]:
    refused: list[AnotherDaemon] = []
    return (
        Membership(clock=clock, node=node, cluster=cluster, table=table, on_refused=refused.append),
        refused,
    )


@asynccontextmanager
async def heartbeating(member: Membership) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(member.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()  # the loop ran until stopped: it never ended on its own


def test_the_heartbeat_is_well_under_takeover_after_and_live_within_the_lease() -> None:
    assert (heartbeat_every(CLUSTER), live_within(CLUSTER)) == (1.0, 3.0)
    quick = ClusterSpec(enabled=True, takeover_after=0.5, lease=1.0)
    assert (heartbeat_every(quick), live_within(quick)) == (0.25, 0.75)
    tight = ClusterSpec(enabled=True, takeover_after=2.0, lease=2.5)
    assert live_within(tight) == 2.5  # never past the lease


async def test_it_registers_heartbeats_every_second_and_sees_the_others() -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    table.other("b")
    member, _ = membership(clock, table)
    changes: list[tuple[str, ...]] = []
    member.on_change = changes.append
    await member.start()
    assert member.connected and member.live == ("a", "b")
    row = table.rows["a"]
    assert (row.host, row.pid, row.stopped_at) == (HOST, os.getpid(), None)
    async with heartbeating(member):
        for _ in range(10):
            await clock.advance(1.0)
            table.beat("b")
        table.other("c")  # joins
        await clock.advance(1.0)
    assert table.heartbeats == 1 + 11 + 1  # the start's, one a second, one at t=0 of the loop
    assert member.live == ("a", "b", "c") and member.connected
    assert changes == [("a", "b"), ("a", "b", "c")]


async def test_a_silent_replica_leaves_live_after_3_beats_and_dies_only_after_the_lease() -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    table.other("b")
    member, _ = membership(clock, table)
    await member.start()
    async with heartbeating(member):
        await clock.advance(2.5)  # b silent since t=0
        assert member.live == ("a", "b") and not member.dead("b")
        await clock.advance(1.0)  # seen 3 s ago by the heartbeat at 3.0: out of live
        assert member.live == ("a",) and not member.dead("b")
        assert member.dead_nodes == ()
        await clock.advance(11.0)  # 14.5 s: still within the lease
        assert not member.dead("b")
        await clock.advance(1.0)  # 15.5 s: the heartbeat at 15 saw it 15 s old; at 16 past it
        await clock.advance(0.6)
        assert member.dead("b") and member.dead_nodes == ("b",)
    assert not member.dead("a")  # never ourselves
    assert not member.dead("nobody")  # no row: not ours to judge


async def test_a_failed_heartbeat_disconnects_and_stops_judging_others_dead() -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    table.other("b", ago=20.0)  # long dead
    member, _ = membership(clock, table)
    await member.start()
    assert member.dead("b")
    with capture_logs() as logs:
        async with heartbeating(member):
            table.down = True
            await clock.advance(3.0)  # four failed heartbeats: at 0, 1, 2 and 3 s
            assert not member.connected
            assert not member.dead("b")  # a stale view judges no one
            assert member.since_heartbeat() == pytest.approx(3.0)
            table.down = False
            await clock.advance(1.0)
            assert member.connected and member.dead("b")
    events = [e["event"] for e in logs if e["event"].startswith("cluster_heartbeat")]
    assert events == ["cluster_heartbeat_failed", "cluster_heartbeat_recovered"]  # once each
    assert table.resets == 4  # each failure drops the connection: the next one is new


async def test_a_hanging_heartbeat_disconnects_within_live_within() -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    member, _ = membership(clock, table)
    await member.start()
    async with heartbeating(member):
        await clock.advance(0.5)
        table.hang = True
        await clock.advance(1.0)  # the heartbeat at 1.0 hangs
        assert member.connected
        await clock.advance(2.6)  # 3.0 s past the last good one: the others count us out
        assert not member.connected  # (it timed out at 4.0, and the retry hangs again)
        table.hang = False
        await clock.advance(3.0)  # the retry times out at 7.0; the next goes through
        assert member.connected


async def test_a_live_replica_with_our_name_refuses_the_start() -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    table.other("a", ago=5.0, host="db-2", pid=4242)
    member, _ = membership(clock, table)
    with pytest.raises(NodeNameInUse) as refused:
        await member.start()
    assert str(refused.value) == (
        "node name a is in use by a live replica (pid 4242 on host db-2): give each replica its "
        "own `node:`"
    )
    assert isinstance(refused.value, AnotherDaemon)  # exits like another daemon: 1
    assert not member.connected and table.rows["a"].host == "db-2"  # untouched
    await member.stop()
    assert table.rows["a"].stopped_at is None  # not ours to stop


async def test_a_replica_that_takes_our_name_later_stops_us() -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    member, refused = membership(clock, table)
    await member.start()
    async with heartbeating(member) as task:
        await clock.advance(1.0)
        table.other("a", host="db-2", pid=4242)  # e.g. after our outage outlasted the lease
        await clock.advance(1.0)  # the heartbeat finds the row not ours
        assert not member.connected and refused == []
        await clock.advance(1.0)  # registering again finds it live, someone else's
        assert [str(r) for r in refused] == [
            "node name a is in use by a live replica (pid 4242 on host db-2): give each "
            "replica its own `node:`"
        ]
        await clock.advance(5.0)
        assert not task.done()  # parked until the daemon stops it


@pytest.mark.parametrize(
    ("host", "pid", "ago", "taken"),
    [
        (HOST, NO_SUCH_PID, 1.0, True),  # this host, the process is gone: a quick restart
        (HOST, os.getppid(), 1.0, False),  # this host, a process that runs
        ("db-2", NO_SUCH_PID, 1.0, False),  # another host: its pids are not ours to look at
        ("db-2", 4242, 16.0, True),  # not seen for the lease
    ],
    ids=["gone-here", "alive-here", "elsewhere", "stale"],
)
async def test_a_row_whose_process_is_known_gone_is_taken_over(
    host: str, pid: int, ago: float, taken: bool
) -> None:
    clock = FakeClock()
    table = FakeNodes(clock)
    table.other("a", ago=ago, host=host, pid=pid)
    member, _ = membership(clock, table)
    if taken:
        await member.start()
        assert member.connected and table.rows["a"].pid == os.getpid()
    else:
        with pytest.raises(NodeNameInUse):
            await member.start()
        assert table.rows["a"].pid == pid


async def test_leaving_takes_us_out_of_live_while_the_heartbeat_goes_on_then_stop_is_final() -> (
    None
):
    clock = FakeClock()
    table = FakeNodes(clock)
    member, _ = membership(clock, table)
    watcher, _ = membership(clock, table, node="b")
    await member.start()
    await watcher.start()
    assert watcher.live == ("a", "b")
    async with heartbeating(member):
        await member.leave()
        await clock.advance(20.0)  # a long drain, past the lease: still heartbeating
        await watcher.beat()
        assert watcher.live == ("b",) and not watcher.dead("a")
        assert "a" not in member.live  # it routes no fire to itself either
    await member.stop()
    await watcher.beat()
    assert watcher.dead("a")  # a clean stop: its attempts are nobody's at once
    assert not member.connected
    stopped = table.rows["a"].stopped_at
    await member.stop()  # once
    assert table.rows["a"].stopped_at == stopped


async def test_an_embedded_server_not_running_is_a_database_away_not_a_crash() -> None:
    def no_server() -> str:
        raise RuntimeError("the embedded PostgreSQL is not started")

    member = Membership(
        clock=FakeClock(),
        node="a",
        cluster=CLUSTER,
        table=PgNodes(no_server),
        on_refused=lambda exc: None,
    )
    await member.start()  # deferred to the loop, as with a database that is down
    assert not member.connected
    await member.stop()
