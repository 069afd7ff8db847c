"""Cluster mode: which replica runs each attempt of a fire (README: Running several replicas).

Every replica computes the same fires. Each job has a preferred replica among the live ones, by
rendezvous hashing of (job, replica): it claims the job's fires as they fall due, while it has a
free slot; the others claim a fire only if it is still unclaimed ``takeover_after`` past due (its
preferred replica is dead, cut off or full). A claim is a row in ``fire_claims``: the one INSERT
that wins runs the attempt, every other replica drops it. Keeping a job's fires on one replica
keeps `overlap` and `max_instances` meaningful, which a replica can only check for its own fires.

All the claims asked for in one pass of the event loop (the fires due at one instant, say) are
one statement. A replica that cannot reach the database claims nothing: it cannot know what the
others did, and its fires are theirs (or the catch-up's).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import asyncpg
import structlog

from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import scheduled_fire_id
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.storage import fire_claims, store
from scheduler_daemon.storage.fire_claims import ClaimRequest
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.claims")


class LiveSet(Protocol):
    """The replicas seen alive lately (membership.py), and whether we still reach the others."""

    @property
    def live(self) -> Sequence[str]: ...

    @property
    def connected(self) -> bool: ...


def preferred(job: str, live: Sequence[str]) -> str:
    """The replica that claims ``job``'s fires first: the same answer on every replica that sees
    the same live set, and when one leaves only its jobs move (rendezvous hashing)."""
    return max(live, key=lambda node: _weight(job, node))


def _weight(job: str, node: str) -> bytes:
    return hashlib.blake2b(f"{job}\0{node}".encode(), digest_size=8).digest()


class Ownership:
    """Whether this replica is each job's preferred one, remembered until the live set changes:
    a fire (on every replica) or a write of next fires costs a lookup, not a hash per replica.
    Out of the live set (joining, leaving) we own nothing; with no live set seen, everything."""

    def __init__(self, node: str, members: LiveSet) -> None:
        self._node = node
        self._members = members
        self._live: Sequence[str] = ()
        self._mine: dict[str, bool] = {}

    @property
    def live(self) -> Sequence[str]:
        """The live set as membership last saw it (a new object whenever it changes)."""
        return self._members.live

    @property
    def alone(self) -> bool:
        """No other replica is live: none would take over what this one leaves."""
        live = self._members.live
        return not live or (len(live) == 1 and live[0] == self._node)

    def mine(self, job: str) -> bool:
        live = self._members.live
        if live is not self._live:
            self._live, self._mine = live, {}
        try:
            return self._mine[job]
        except KeyError:
            answer = self._mine[job] = preferred(job, live or (self._node,)) == self._node
            return answer


class Claims:
    """Claims of this replica, batched by pass of the event loop; the runner's ``Claims``."""

    def __init__(
        self,
        *,
        node: str,
        pool: Callable[[], asyncpg.Pool | None],
        members: LiveSet,
    ) -> None:
        self.node = node
        self._pool = pool
        self._members = members
        self._batch: list[tuple[ClaimRequest, asyncio.Future[bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = collections.Counter[str]()  # won, lost, unreachable

    def ask(self, request: ClaimRequest) -> asyncio.Future[bool]:
        """Whether this replica wins ``request``, once the statement that carries it has run."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self._batch and not self._tasks:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append((request, future))
        return future

    async def claim(self, fire: Fire) -> bool:
        request = ClaimRequest(
            fire.fire_id, fire.attempt, fire.job.name, fire.scheduled_at, trigger=fire.trigger
        )
        return await self.ask(request)

    def _flush(self) -> None:
        """One statement in flight at a time: the claims asked for meanwhile wait for it and go
        together in the next one. Fires spread over the second (2,000/s) then cost a statement
        per round trip, not one each, and a slow database gets fewer, larger statements."""
        if not self._batch or self._tasks:
            return
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._insert(batch))
        self._tasks.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._batch:
            asyncio.get_running_loop().call_soon(self._flush)

    async def _insert(self, batch: list[tuple[ClaimRequest, asyncio.Future[bool]]]) -> None:
        won: set[tuple[uuid.UUID, int]] = set()
        reached = False
        pool = self._pool()
        if pool is not None and self._members.connected:
            try:
                won = await fire_claims.claim(pool, self.node, [r for r, _ in batch])
                reached = True
            except store.DB_ERRORS as exc:
                log.warning("claims_failed", fires=len(batch), error=str(exc))
        if not reached:
            self.counts["unreachable"] += len(batch)
        for request, future in batch:
            mine = (request.fire_id, request.attempt) in won
            if reached:
                self.counts["won" if mine else "lost"] += 1
            if not future.done():
                future.set_result(mine)

    async def claim_all(self, requests: Sequence[ClaimRequest]) -> set[uuid.UUID]:
        """The fire ids among ``requests`` this replica won (one statement)."""
        futures = [self.ask(request) for request in requests]
        answers = await asyncio.gather(*futures)
        return {r.fire_id for r, mine in zip(requests, answers, strict=True) if mine}


Submit = Callable[..., object]


class ClusterDispatch:
    """The scheduler's ``dispatch`` in cluster mode: a due fire is claimed at once where this
    replica is its job's preferred one and has a free slot (or no other replica is live), else
    offered for takeover."""

    def __init__(
        self,
        *,
        claims: Claims,
        members: LiveSet,
        limiter: Limiter,
        submit: Submit,
        clock: Clock,
        takeover_after: float,
    ) -> None:
        self._claims = claims
        self.owned = Ownership(claims.node, members)
        self._limiter = limiter
        self._submit = submit
        self._clock = clock
        self._takeover_after = takeover_after
        self._claiming = 0  # claims asked for and not answered yet: slots they will take
        self._later: collections.deque[tuple[float, JobSpec, datetime]] = collections.deque()
        self._offered = asyncio.Event()
        self.takeovers = 0

    def __call__(self, job: JobSpec, fire_at: datetime) -> None:
        # Full, we leave it to another replica; alone, it waits for one of our slots.
        if self.owned.mine(job.name) and (self._free_slots() > 0 or self.owned.alone):
            self._claim(job, fire_at, takeover=False)
        else:
            due_at = self._clock.monotonic() + self._takeover_after
            due_at -= max(0.0, self._clock.time() - fire_at.timestamp())  # already late
            self._later.append((due_at, job, fire_at))
            self._offered.set()

    def _free_slots(self) -> int:
        limiter = self._limiter
        return limiter.capacity - limiter.in_use - limiter.waiting() - self._claiming

    def _claim(self, job: JobSpec, fire_at: datetime, *, takeover: bool) -> None:
        fire_id = scheduled_fire_id(job.name, fire_at)
        request = ClaimRequest(fire_id, 1, job.name, fire_at, takeover=takeover)
        self._claiming += 1
        self._claims.ask(request).add_done_callback(
            lambda won: self._answered(won, job, fire_at, fire_id, takeover)
        )

    def _answered(
        self, won: asyncio.Future[bool], job: JobSpec, fire_at: datetime, fire_id: uuid.UUID,
        takeover: bool,
    ) -> None:  # fmt: skip
        self._claiming -= 1
        if won.cancelled() or not won.result():
            return
        if takeover:
            self.takeovers += 1
            log.info("fire_taken_over", job=job.name, scheduled_at=fire_at.isoformat())
        self._submit(job, fire_at, fire_id=fire_id, claimed=True)

    async def take_over(self) -> None:
        """Claim the fires offered for takeover once their time comes (runs until cancelled)."""
        while True:
            if not self._later:
                self._offered.clear()
                await self._offered.wait()
                continue
            wait = self._later[0][0] - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            now = self._clock.monotonic()
            while self._later and self._later[0][0] <= now:
                _, job, fire_at = self._later.popleft()
                self._claim(job, fire_at, takeover=True)
