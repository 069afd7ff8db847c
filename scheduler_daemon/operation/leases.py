"""Cluster mode: the attempts of a replica that died are settled by the survivors.

A replica's claims hold while it heartbeats (membership.py); once it has not been seen for
``cluster.lease``, a survivor marks its unfinished attempts `abandoned` — exactly one survivor
gets each one — and retries them per the job's policy (at_least_once, attempts left, within its
starting_deadline), as a restarted daemon retries its own. Never while the owner heartbeats: an
attempt that is merely slow is not run twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import structlog

from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.operation.recovery import retry_abandoned
from scheduler_daemon.running.records import FireKind
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage import fire_claims, store
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.leases")


async def settle_dead_replicas(
    *,
    clock: Clock,
    pool: Callable[[], asyncpg.Pool | None],
    lease: float,
    every: float,
    jobs: Callable[[], Sequence[JobSpec]],
    runner: Runner,
    runs: OneOffRuns,
) -> None:
    """Every ``every`` seconds: abandon and retry the attempts of replicas dead past ``lease``."""
    while True:
        await clock.sleep(every)
        db = pool()
        if db is None:
            continue  # cut off: we cannot know who is alive
        try:
            abandoned = await fire_claims.abandon_dead(db, lease)
        except store.DB_ERRORS as exc:
            log.debug("dead_replicas_not_checked", error=str(exc))
            continue
        if not abandoned:
            continue
        log.warning(
            "replica_attempts_abandoned",
            replicas=sorted({row["node"] for row in abandoned}),
            attempts=len(abandoned),
        )
        now = datetime.fromtimestamp(clock.time(), UTC)
        manual = [row["fire_id"] for row in abandoned if row["trigger"] == FireKind.MANUAL]
        try:
            resumable = await runs.resumable(db, manual)  # a one-off run resumes as it ran
        except store.DB_ERRORS as exc:
            log.warning("abandoned_runs_not_read", error=str(exc))
            resumable = {}
        by_name = {job.name: job for job in jobs()}
        retry_abandoned(abandoned, by_name, runner, now, runs=resumable)
