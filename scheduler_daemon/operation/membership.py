"""Cluster membership: this replica's row in ``nodes``, its heartbeat, and who else is alive.

What the claim path asks (README: Running several replicas):

- ``live``: the replicas among which each fire's preferred owner is chosen (rendezvous hashing):
  seen within ``live_within`` (about LIVE_BEATS heartbeats) and not stopping. A replica that
  crashed leaves it after that; one that stops cleanly at once (it says so before it drains).
- ``dead(node)``: may ``node``'s running attempts be taken for abandoned? Only once it has not
  heartbeated for ``lease``, or its clean stop was its last word; never while we cannot
  heartbeat ourselves (our view is stale then).
- ``connected``: our last heartbeat went through, recently. False: stop claiming (we cannot know
  what the others did, and they may already count us out).

Ages come from the database's clock (``now() - last_seen``), so replicas on hosts whose clocks
disagree agree on who is alive; the loop itself runs on the injected Clock.

Why HEARTBEAT is 1 s: a replica that crashed keeps its place in the others' ``live`` for about
LIVE_BEATS heartbeats, and meanwhile the fires it was preferred for wait ``takeover_after``
(default 2 s) before another replica claims them; a 1 s beat keeps that window near
``takeover_after`` itself, and a joining replica is seen by the others within a second, so
both sides agree on the preferred owner nearly all the time. It is never more than half of
``takeover_after``. The cost is one short statement per second per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import asyncpg
import structlog

from scheduler_daemon import __version__
from scheduler_daemon.operation.instance import AnotherDaemon, identity
from scheduler_daemon.specs.settings import ClusterSpec
from scheduler_daemon.storage import nodes, store
from scheduler_daemon.storage.nodes import Counts, Holder, Me, Seen
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.membership")

HEARTBEAT = 1.0
LIVE_BEATS = 3  # heartbeats a replica may miss before it leaves the others' live set
DB_FAILURES = (*store.DB_ERRORS, asyncpg.InternalClientError)


def heartbeat_every(cluster: ClusterSpec) -> float:
    return min(HEARTBEAT, cluster.takeover_after / 2)


def live_within(cluster: ClusterSpec) -> float:
    """How recently a replica must have heartbeated to be live (always below the lease)."""
    return min(LIVE_BEATS * heartbeat_every(cluster), cluster.lease)


class NodeNameInUse(AnotherDaemon):
    """Another live replica runs under this node name."""


class NodesTable(Protocol):
    """The ``nodes`` statements Membership uses (PgNodes; tests pass a stand-in)."""

    async def register(self, me: Me, lease: float) -> datetime | None: ...
    async def take_over(self, me: Me, gone: Holder) -> datetime | None: ...
    async def holder(self, name: str) -> Holder | None: ...
    async def heartbeat(
        self, me: Me, started_at: datetime, leaving: bool, counts: Counts
    ) -> Seen: ...
    async def stop(self, me: Me, started_at: datetime) -> None: ...
    def reset(self) -> None: ...
    async def close(self) -> None: ...


class PgNodes:
    """The ``nodes`` table over a connection of its own: a heartbeat never waits for the pool
    (busy with a burst's rows) nor for its reconnection."""

    def __init__(self, dsn: Callable[[], str]) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def register(self, me: Me, lease: float) -> datetime | None:
        return await nodes.register(await self._connection(), me, lease=lease)

    async def take_over(self, me: Me, gone: Holder) -> datetime | None:
        return await nodes.take_over(await self._connection(), me, gone)

    async def holder(self, name: str) -> Holder | None:
        return await nodes.holder(await self._connection(), name)

    async def heartbeat(self, me: Me, started_at: datetime, leaving: bool, counts: Counts) -> Seen:
        conn = await self._connection()
        return await nodes.heartbeat(conn, me, started_at, leaving=leaving, counts=counts)

    async def stop(self, me: Me, started_at: datetime) -> None:
        await nodes.stop(await self._connection(), me, started_at)

    def reset(self) -> None:
        """After a failure: the connection may be dead or mid-statement; the next call opens
        another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:  # noqa: BLE001 - a broken connection: ending it is all we want
                conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                dsn = self._dsn()
            except RuntimeError as exc:  # the embedded server is not running (any more)
                raise ConnectionError(str(exc)) from None
            self._conn = await asyncpg.connect(
                dsn,
                timeout=store.CONNECT_TIMEOUT,
                command_timeout=store.COMMAND_TIMEOUT,
                server_settings={"application_name": identity()},
            )
        return self._conn


class Membership:
    """This replica in the cluster: register, heartbeat (``run``), leave, stop."""

    def __init__(
        self,
        *,
        clock: Clock,
        node: str,
        cluster: ClusterSpec,
        table: NodesTable,
        on_refused: Callable[[AnotherDaemon], None],
        joining: bool = False,
        counts: Callable[[], Counts] = Counts,
    ) -> None:
        """``table``: PgNodes (tests pass a stand-in); ``on_refused``: called when another live
        process takes our node name after the start (the daemon stops); ``joining``: stay out of
        the live set (registered as leaving) until ``join``; ``counts``: our claims so far,
        reported with each heartbeat."""
        self._counts = counts
        self.counts: dict[str, Counts] = {}  # every replica's, as its last heartbeat said
        self.node = node
        self.every = heartbeat_every(cluster)
        self.live_within = live_within(cluster)
        self.lease = cluster.lease
        self.on_change: Callable[[tuple[str, ...]], None] | None = None
        self._clock = clock
        self._table = table
        self._on_refused = on_refused
        self._me = Me(name=node, version=__version__, host=socket.gethostname(), pid=os.getpid())
        self._started_at: datetime | None = None  # our row's identity, once registered
        self._busy = asyncio.Lock()  # one statement at a time on the connection
        self._ok = False
        self._outage = False
        self._seen_at: float | None = None  # monotonic, the last heartbeat that went through
        self._ages: dict[str, float] = {}
        self._gone: frozenset[str] = frozenset()
        self._leaving = joining
        self.live: tuple[str, ...] = ()

    # -- what the claim path reads ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Our last heartbeat went through, within ``live_within``: the others count us in."""
        return (
            self._ok
            and self._seen_at is not None
            and self._clock.monotonic() - self._seen_at < self.live_within
        )

    def dead(self, node: str) -> bool:
        """``node`` stopped heartbeating past the lease, or stopped cleanly: its running attempts
        are nobody's. False for ourselves, for a name without a row (its rows predate cluster
        mode: its own start recovers them), and whenever we are not connected."""
        if node == self.node or not self.connected or node not in self._ages:
            return False
        return node in self._gone or self._ages[node] > self.lease

    @property
    def dead_nodes(self) -> tuple[str, ...]:
        return tuple(sorted(node for node in self._ages if self.dead(node)))

    def since_heartbeat(self) -> float | None:
        """Seconds since our last heartbeat went through (None: never). Past ``lease`` the
        others may have taken our running attempts for abandoned."""
        if self._seen_at is None:
            return None
        return self._clock.monotonic() - self._seen_at

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register before the schedule starts: NodeNameInUse if a live replica has our name. A
        database that is down (or not upgraded yet) only defers it to the loop."""
        await self.beat()

    async def run(self) -> None:
        """Heartbeat every ``every`` seconds until cancelled; a refusal stops the daemon."""
        while True:
            began = self._clock.monotonic()
            try:
                await self.beat()
            except NodeNameInUse as exc:
                log.error("cluster_node_name_in_use", error=str(exc))
                self._on_refused(exc)
                await asyncio.get_running_loop().create_future()  # the daemon stops us
            await self._clock.sleep(self.every - (self._clock.monotonic() - began))

    async def beat(self) -> None:
        """One heartbeat (registering first if needed); failures only mark us disconnected."""
        try:
            async with self._busy, self._clock.timeout(self.live_within):
                if self._started_at is None:
                    self._started_at = await self._register()
                    log.info("cluster_node_registered", node=self.node, host=self._me.host)
                seen = await self._table.heartbeat(
                    self._me, self._started_at, self._leaving, self._counts()
                )
        except NodeNameInUse:
            self._ok = False
            raise
        except DB_FAILURES as exc:
            self._failed(exc)
            return
        if not seen.mine:  # another process took the name, or the row was deleted
            log.warning("cluster_node_row_lost", node=self.node)
            self._started_at = None
            self._ok = False
            return  # the next beat registers again, or finds who holds the name
        self._saw(seen)

    async def join(self) -> None:
        """Ready to claim: into everyone's live set. Until now the others routed none of the
        fires to us, which we could not have claimed before our first connection settled."""
        self._leaving = False
        with contextlib.suppress(NodeNameInUse):  # the loop's next beat reports it
            await self.beat()

    async def leave(self) -> None:
        """Say we stop: out of everyone's live set at once; the heartbeat goes on through the
        drain, so our running attempts are not taken for abandoned."""
        self._leaving = True
        with contextlib.suppress(NodeNameInUse):  # stopping anyway
            await self.beat()

    async def stop(self) -> None:
        """After the drain, with the loop ended: a clean stop, then the connection closes.
        Once: a second call does nothing."""
        started, self._started_at = self._started_at, None
        self._ok = False
        if started is not None:
            try:
                async with self._busy, self._clock.timeout(self.live_within):
                    await self._table.stop(self._me, started)
            except DB_FAILURES as exc:
                self._table.reset()
                log.warning(
                    "cluster_stop_unrecorded",
                    error=f"{type(exc).__name__}: {exc}",
                    consequence=f"the others count this replica out after {self.lease:g}s",
                )
        await self._table.close()

    # -- inside ----------------------------------------------------------------------------------

    async def _register(self) -> datetime:
        started = await self._table.register(self._me, self.lease)
        held = None if started else await self._table.holder(self.node)
        if started is None and held is None:  # the row went between the two: free now
            started = await self._table.register(self._me, self.lease)
            held = None if started else await self._table.holder(self.node)
        if started is not None:
            return started
        if held is not None and self._gone_process(held):
            started = await self._table.take_over(self._me, held)
            if started is not None:
                log.info("cluster_node_taken_over", node=self.node, old_pid=held.pid)
                return started
        who = f"pid {held.pid} on host {held.host}" if held else "unknown"
        raise NodeNameInUse(
            f"node name {self.node} is in use by a live replica ({who}): give each replica its "
            "own `node:`"
        )

    def _gone_process(self, held: Holder) -> bool:
        """Its row is still live, but we can see the process is gone: it ran on this host (a
        kill -9 and a quick restart) and its pid runs nothing."""
        if held.host != self._me.host or held.pid is None or held.pid == self._me.pid:
            return False
        try:
            os.kill(held.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process: alive
            return False
        return False

    def _saw(self, seen: Seen) -> None:
        if self.node in seen.stopping and not self._leaving:
            log.warning(
                "cluster_node_counted_dead",
                node=self.node,
                why=f"no heartbeat went through for over {self.lease:g}s: the other replicas "
                "abandoned this one's running attempts (retried per policy); live again now",
            )
        if self._outage:
            self._outage = False
            log.info("cluster_heartbeat_recovered", node=self.node)
        self._ok = True
        self._seen_at = self._clock.monotonic()
        self._ages = {**seen.ages, self.node: 0.0}
        self._gone = seen.gone
        self.counts = {**seen.counts, self.node: self._counts()}
        # Our own row as this heartbeat left it (the answer shows it as it was before).
        stopping = (seen.stopping - {self.node}) | ({self.node} if self._leaving else set())
        live = tuple(
            sorted(
                node
                for node, age in self._ages.items()
                if age < self.live_within and node not in stopping
            )
        )
        if live != self.live:
            joined, left = sorted(set(live) - set(self.live)), sorted(set(self.live) - set(live))
            self.live = live
            log.info("cluster_live_changed", live=list(live), joined=joined, left=left)
            if self.on_change is not None:
                self.on_change(live)

    def _failed(self, exc: BaseException) -> None:
        self._table.reset()
        if not self._outage:  # once per outage
            self._outage = True
            log.warning(
                "cluster_heartbeat_failed",
                node=self.node,
                error=f"{type(exc).__name__}: {exc}",
                claims="stopped until the database answers",
            )
        self._ok = False
