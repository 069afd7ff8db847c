"""A fire in flight, and what the runner reports to: the recorder, the start log, the claims of
cluster mode, the metrics.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from scheduler_daemon.running.actions import Action
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.specs import JobSpec, RetrySpec


class RecordSink(Protocol):
    def record(self, rec: ExecutionRecord) -> None: ...


class StartEntry(Protocol):
    def recorded(self) -> None:
        """A row of this attempt (`running` or final) has been handed to the recorder."""


class StartSink(Protocol):
    """Makes attempts' starts durable before their actions begin (storage/startlog.py)."""

    def durable(self) -> Awaitable[None]:
        """Done once every start logged so far is on disk (or failed to get there, said in the
        log: attempts run anyway)."""
        ...

    def log_fire(
        self,
        fire: Fire,
        started: float,
        drift_ms: float,
        node: str,
        then: Callable[[Fire], None] | None = None,
    ) -> StartEntry:
        """Queue the start of ``fire``'s current attempt (its `running` record, begun at
        ``started``); ``then(fire)`` is called once it is on disk (or failed to get there), at
        once if the log is stalled."""
        ...


class Claims(Protocol):
    """Cluster mode: whether this replica runs an attempt (operation/claims.py)."""

    async def claim(self, fire: Fire) -> bool:
        """True: this replica won attempt ``fire.attempt`` of the fire; False: another one runs
        it, or the claim could not be made (then no one here runs it)."""
        ...


class FireObserver(Protocol):
    """Told of every attempt that starts, every final attempt and every ended fire (metrics, the
    status page's live updates); must return at once."""

    def attempt_started(self, fire: Fire) -> None: ...

    def attempt_finished(self, rec: ExecutionRecord) -> None: ...

    def fire_ended(self, job: str, status: Status) -> None: ...


class NoObserver:
    def attempt_started(self, fire: Fire) -> None:
        pass

    def attempt_finished(self, rec: ExecutionRecord) -> None:
        pass

    def fire_ended(self, job: str, status: Status) -> None:
        pass


ActionFor = Callable[[JobSpec], Action]


class Submit(Protocol):
    """The runner's ``submit``, for what starts fires besides the scheduler (runs, chains)."""

    def __call__(
        self,
        job: JobSpec,
        scheduled_at: datetime,
        *,
        trigger: FireKind = ...,
        overrides: Mapping[str, Any] | None = None,
        fire_id: uuid.UUID | None = None,
        attempt: int = 1,
        claimed: bool = False,
        parent: Fire | None = None,
    ) -> Fire | None: ...


def backoff_delay(policy: RetrySpec, failed_attempt: int, rng: random.Random) -> float:
    """Seconds to wait after attempt ``failed_attempt`` (1-based) failed.

    Exponential from ``delay`` by ``backoff``, capped at ``max_delay``, then ± ``jitter``.
    """
    delay = min(policy.delay * policy.backoff ** (failed_attempt - 1), policy.max_delay)
    if policy.jitter:
        delay *= 1 + rng.uniform(-policy.jitter, policy.jitter)
    return max(delay, 0.0)


@dataclass(slots=True, eq=False)
class Fire:
    """A fire in flight: its task and what it is doing now (for drain and overlap decisions)."""

    job: JobSpec
    scheduled_at: datetime
    trigger: FireKind
    overrides: Mapping[str, Any] | None
    given_id: uuid.UUID | None = None  # manual and resumed fires; else derived on first use
    parent_fire_id: uuid.UUID | None = None  # a chained fire's parent (trigger `chain`)
    chain: tuple[str, ...] = ()  # a chained fire's ancestors' jobs, oldest first
    state: str = "waiting"  # waiting (for a slot) | starting (its start logged) | running | backoff
    attempt: int = 1
    claimed: int = 0  # cluster mode: the attempts of this fire this replica has claimed
    cancel_reason: str = "cancelled"
    started: float = 0.0  # the running attempt's start and due times (wall clock)
    due: float = 0.0
    announced: bool = False  # its `running` row has been recorded
    start: StartEntry | None = None  # the running attempt's start entry, until a row covers it
    # Its first attempt's start was logged from submit: no task until that is durable (a burst's
    # fires wait for their group commit without a task each); see Runner.submit.
    pending: bool = False
    task_ready: asyncio.Future[None] | None = None  # for Runner.finished, while pending
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def fire_id(self) -> uuid.UUID:
        # Derived lazily: hashing is not worth doing before the attempt has begun.
        if self.given_id is None:
            self.given_id = scheduled_fire_id(self.job.name, self.scheduled_at)
        return self.given_id
