"""Cluster mode's parts, wired once: who is alive (membership.py), who runs each attempt
(claims.py), and the settling of a dead replica's attempts (leases.py). README: Running several
replicas. A daemon without cluster mode has none of them, and no claim on its fire path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

import structlog

from scheduler_daemon.errors import SchedulerDaemonError
from scheduler_daemon.operation.claims import Claims, ClusterDispatch, Ownership
from scheduler_daemon.operation.leases import settle_dead_replicas
from scheduler_daemon.operation.membership import Membership, PgNodes
from scheduler_daemon.operation.metrics import Metrics
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.storage import fire_claims, store
from scheduler_daemon.storage.database import Database
from scheduler_daemon.storage.nodes import Counts
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.cluster")

MEMBERSHIP = "membership"  # the heartbeat's loop: it ends after the drain, not before
READY_POLL = 0.1
PRUNE_EVERY = 3600.0


class Cluster:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        database: Database,
        limiter: Limiter,
        on_refused: Callable[[SchedulerDaemonError], None],
    ) -> None:
        self._config = config
        self._clock = clock
        self._database = database
        self._limiter = limiter
        self.membership = Membership(
            clock=clock,
            node=config.node,
            cluster=config.cluster,
            table=PgNodes(lambda: database.dsn),
            on_refused=on_refused,
            joining=True,
            counts=self._counts,
        )
        self.claims = Claims(node=config.node, pool=lambda: database.pool, members=self.membership)
        self._dispatch: ClusterDispatch | None = None
        self._settle: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._starting: list[tuple[JobSpec, datetime]] = []
        self._ready: Callable[[], bool] = lambda: False
        self._submit: Callable[..., object] = lambda *a, **k: None

    def attach(
        self,
        runner: Runner,
        *,
        jobs: Callable[[], Sequence[JobSpec]],
        runs: OneOffRuns,
        ready: Callable[[], bool],
        metrics: Metrics,
    ) -> None:
        """The parts that need the runner: the scheduler's fires claimed, then submitted to it;
        a dead replica's attempts retried on it. ``ready``: the first connection is settled."""
        dispatch = self._dispatch = ClusterDispatch(
            claims=self.claims,
            members=self.membership,
            limiter=self._limiter,
            submit=runner.submit,
            clock=self._clock,
            takeover_after=self._config.cluster.takeover_after,
        )
        self._ready, self._submit = ready, runner.submit
        lease = self._config.cluster.lease
        self._settle = lambda: settle_dead_replicas(
            clock=self._clock,
            pool=lambda: self._database.pool if ready() else None,
            lease=lease,
            every=lease / 5,
            jobs=jobs,
            runner=runner,
            runs=runs,
        )
        metrics.claims = lambda: self.claims.counts
        metrics.takeovers = lambda: dispatch.takeovers

    def dispatch(self, job: JobSpec, fire_at: datetime) -> None:
        """A due fire: run here only if this replica wins its claim."""
        assert self._dispatch is not None, "attach() first"
        self._dispatch(job, fire_at)

    @property
    def ownership(self) -> Ownership:
        """The jobs this replica is preferred for now (it writes their next fires)."""
        assert self._dispatch is not None, "attach() first"
        return self._dispatch.owned

    def run_on_start(self, jobs: Sequence[JobSpec], at: datetime) -> None:
        """Each replica runs its `run_on_start` jobs at its own start, once it can claim them."""
        self._starting = [(job, at) for job in jobs]

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        assert self._dispatch is not None and self._settle is not None, "attach() first"
        return {
            MEMBERSHIP: self.membership.run(),
            "take-over": self._dispatch.take_over(),
            "settle-dead-replicas": self._settle(),
            "join": self._start_when_connected(),
            "prune-claims": self._prune_claims(),
        }

    async def _start_when_connected(self) -> None:
        """Join the live set, and run the `run_on_start` jobs, once claims can be made: after
        the first connection is settled."""
        while not self._ready():
            await self._clock.sleep(READY_POLL)
        await self.membership.join()
        starting, self._starting = self._starting, []
        for job, at in starting:
            self._submit(job, at)
        await asyncio.Event().wait()  # a background loop runs until the daemon stops

    async def _prune_claims(self) -> None:
        """Claims older than fire_claims.KEEP_CLAIMS_DAYS go (every replica tries; cheap)."""
        while True:
            await self._clock.sleep(PRUNE_EVERY)
            pool = self._database.pool
            if pool is None:
                continue
            try:
                pruned = await fire_claims.prune(pool)
            except store.DB_ERRORS as exc:
                log.debug("claims_not_pruned", error=str(exc))
                continue
            if pruned:
                log.info("claims_pruned", claims=pruned)

    async def stop(self, heartbeat: asyncio.Task[None] | None) -> None:
        """After the drain: the heartbeat ends, and the stop is our row's last word."""
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        await self.membership.stop()

    def _counts(self) -> Counts:
        won, lost = self.claims.counts["won"], self.claims.counts["lost"]
        return Counts(won, lost, self._dispatch.takeovers if self._dispatch else 0)

    def gauges(self) -> tuple[int, bool]:
        """(live replicas, whether this one heartbeats) for the metrics."""
        return len(self.membership.live), self.membership.connected
