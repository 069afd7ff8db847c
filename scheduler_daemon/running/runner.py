"""One fire of one job: overlap policy, attempts, timeouts, retries with backoff.

Every attempt that starts ends in exactly one ExecutionRecord handed to the recorder, come what may;
a fire that never gets to start (skipped by the overlap policy, cancelled while waiting for a slot)
is recorded too, so nothing scheduled disappears silently. With a start log, an attempt's start is
on disk before its action begins, so that a crash cannot hide an attempt that began.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.attempt_rows import AttemptRows
from scheduler_daemon.running.chains import Chains
from scheduler_daemon.running.fire import (
    ActionFor,
    Claims,
    Fire,
    FireObserver,
    NoObserver,
    RecordSink,
    StartSink,
    backoff_delay,
)
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import FireKind, Status, chained_fire_id
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.running.runner")

# How often attempts in flight get their `running` row (see README: crash recovery window).
RUNNING_ROWS_EVERY = 0.2


class Runner:
    def __init__(
        self,
        *,
        clock: Clock,
        limiter: Limiter,
        recorder: RecordSink,
        action_for: ActionFor,
        node: str,
        rng: random.Random | None = None,
        observer: FireObserver | None = None,
        starts: StartSink | None = None,
        claims: Claims | None = None,
        chains: Chains | None = None,
    ) -> None:
        """``starts``: where attempts' starts are made durable first (None: they are not);
        ``claims``: cluster mode, each attempt is claimed before it starts."""
        self._clock = clock
        self._starts = starts
        self._claims = claims
        self._chains = chains
        self._observer: FireObserver = observer or NoObserver()
        self._limiter = limiter
        self._rows = AttemptRows(clock=clock, recorder=recorder, observer=self._observer, node=node)
        self._action_for = action_for
        self._node = node
        self._rng = rng or random.Random()
        self._active: dict[str, list[Fire]] = {}
        self._accepting = True
        self.attempts_started = 0  # tells background work whether fires are starting now

    # -- submission (synchronous: called from the scheduler loop) ------------------------------

    def submit(
        self,
        job: JobSpec,
        scheduled_at: datetime,
        *,
        trigger: FireKind = FireKind.SCHEDULE,
        overrides: Mapping[str, Any] | None = None,
        fire_id: uuid.UUID | None = None,
        attempt: int = 1,
        claimed: bool = False,
        parent: Fire | None = None,
    ) -> Fire | None:
        """Start a fire of ``job`` unless its overlap policy says no; never blocks.

        ``fire_id`` and ``attempt`` resume a fire whose earlier attempt was abandoned;
        ``claimed``: cluster mode, this replica has won ``attempt`` already; ``parent``: the
        fire whose success started this one (trigger `chain`).
        """
        if fire_id is None and trigger is FireKind.MANUAL:
            fire_id = uuid.uuid4()
        fire = Fire(job, scheduled_at, trigger, overrides, fire_id, attempt=attempt)
        if parent is not None:
            fire.given_id = chained_fire_id(job.name, parent.fire_id)
            fire.parent_fire_id = parent.fire_id
            fire.chain = (*parent.chain, parent.job.name)
        fire.claimed = attempt if claimed else 0
        if not self._admit(fire):
            return None
        self._begin(fire)
        return fire

    def _admit(self, fire: Fire) -> bool:
        """Whether ``fire`` may start (the daemon is not stopping, its job's overlap policy lets
        it); a fire refused is recorded."""
        job = fire.job
        if not self._accepting:
            self._rows.unstarted(fire, Status.CANCELLED, "daemon is shutting down")
            return False
        running = self._active.get(job.name)
        if running and not self._admit_overlap(job, running):
            self._rows.unstarted(fire, Status.SKIPPED, _skip_reason(job, len(running)))
            log.info(
                "fire_skipped",
                job=job.name,
                scheduled_at=fire.scheduled_at.isoformat(),
                running=len(running),
                overlap=job.overlap,
            )
            return False
        return True

    def _begin(self, fire: Fire) -> None:
        """Make ``fire`` active and start it: its start logged at once when it can take a slot
        now (the burst path), else in a task of its own that waits for a slot and a claim."""
        fires = self._active.get(fire.job.name)  # again: replacing may have just emptied it
        if fires is None:
            self._active[fire.job.name] = [fire]
        else:
            fires.append(fire)
        starts = self._starts
        if (
            starts is not None
            and (self._claims is None or fire.claimed >= fire.attempt)
            and self._limiter.try_acquire()
        ):
            try:
                self._log_start_now(starts, fire)
            except Exception:
                # A bug of ours (as in a task: see _run_fire), never the scheduler loop's problem.
                log.exception("fire_crashed", job=fire.job.name, fire_id=str(fire.fire_id))
                fire.pending = False
                self._limiter.release()
                self._forget(fire)
        else:
            fire.task = asyncio.create_task(self._run_fire(fire))  # unnamed: naming costs 10%

    def _log_start_now(self, starts: StartSink, fire: Fire) -> None:
        """The burst path (a slot is free, nothing to claim): log the start here and create the
        fire's task only once it is durable (``_started``), so that a burst's fires wait for
        their group commit without a suspended task, a future and a wake-up each. Until then
        the fire is ``pending``: ``_cancel`` records it `cancelled` itself."""
        fire.state, fire.pending = "starting", True
        fire.due = fire.scheduled_at.timestamp()
        self._start_line(starts, fire, fire.due, self._started)

    def _started(self, fire: Fire) -> None:
        """``fire``'s start is on disk (or failed to get there): its attempt begins."""
        if fire.pending and fire.task is None:
            fire.task = asyncio.create_task(self._run_fire(fire, started=True))
        _wake_waiter(fire)

    async def finished(self, fire: Fire) -> None:
        """Until ``fire`` has ended (each attempt recorded), whatever its path."""
        if fire.task is None and fire.pending:
            fire.task_ready = asyncio.get_running_loop().create_future()
            await fire.task_ready
        if fire.task is not None:
            await asyncio.wait((fire.task,))

    def _admit_overlap(self, job: JobSpec, running: list[Fire]) -> bool:
        if job.overlap == "allow":
            return len(running) < job.max_instances
        if job.overlap == "replace":
            for old in list(running):  # a fire cancelled before it ran leaves it at once
                self._cancel(old, "replaced by a newer fire (overlap: replace)")
            return True
        return False

    # -- one fire ------------------------------------------------------------------------------

    async def _run_fire(self, fire: Fire, started: bool = False) -> None:
        """``started``: the first attempt holds its slot and its start is durable already
        (``_log_start_now``)."""
        job = fire.job
        if started:
            fire.pending = False
            due = fire.due
        else:
            due = fire.scheduled_at.timestamp()
        try:
            while True:
                if not started:
                    fire.state = "waiting"
                    await self._limiter.acquire(job.priority)
                try:
                    if started:
                        started = False
                    elif not await self._prepare(fire, due):
                        return  # another replica runs it (or none could be sure: none)
                    fire.state = "running"
                    outcome_status, outcome = await self._attempt(fire, due)
                finally:
                    self._limiter.release()
                if not self._should_retry(fire, outcome_status, outcome):
                    self._observer.fire_ended(job.name, outcome_status)
                    if outcome_status is Status.SUCCEEDED and self._chains is not None:
                        self._chains.succeeded(fire, outcome, self.submit)
                    return
                delay = backoff_delay(job.retry, fire.attempt, self._rng)
                if outcome is not None and outcome.retry_after is not None:
                    delay = max(delay, outcome.retry_after)
                log.info(
                    "retry_scheduled",
                    job=job.name,
                    attempt=fire.attempt + 1,
                    delay_s=round(delay, 3),
                    fire_id=str(fire.fire_id),
                )
                fire.state = "backoff"
                due = self._clock.time() + delay
                await self._clock.sleep(delay)
                fire.attempt += 1
        except asyncio.CancelledError:
            if fire.state in ("waiting", "starting"):
                self._rows.unstarted(fire, Status.CANCELLED, fire.cancel_reason)
            else:
                # running: _attempt recorded it; backoff: the last attempt is already recorded.
                self._observer.fire_ended(job.name, Status.CANCELLED)
        except Exception:
            # A bug of ours, not the job's: keep the daemon alive and say so loudly.
            log.exception("fire_crashed", job=job.name, fire_id=str(fire.fire_id))
        finally:
            self._forget(fire)

    def _should_retry(self, fire: Fire, status: Status, outcome: Outcome | None) -> bool:
        if status is Status.SUCCEEDED or fire.attempt >= fire.job.retry.attempts:
            return False
        if not self._accepting:
            return False
        if status is Status.TIMED_OUT:
            return True
        return outcome is not None and outcome.retryable

    async def _prepare(self, fire: Fire, due: float) -> bool:
        """Claim the attempt (cluster mode) and log its start; whether this replica runs it."""
        if self._claims is not None and fire.claimed < fire.attempt:
            if not await self._claims.claim(fire):
                log.info("attempt_not_claimed", job=fire.job.name, attempt=fire.attempt,
                         fire_id=str(fire.fire_id))  # fmt: skip
                return False
            fire.claimed = fire.attempt
        if self._starts is not None:
            fire.state = "starting"
            await self._log_start(self._starts, fire, due)
        return True

    async def _log_start(self, starts: StartSink, fire: Fire, due: float) -> None:
        """Return once the attempt's start is on disk: after a crash it is found (`abandoned`)
        and its instant is not run again by the catch-up."""
        self._start_line(starts, fire, due)
        await starts.durable()

    def _start_line(
        self, starts: StartSink, fire: Fire, due: float, then: Callable[[Fire], None] | None = None
    ) -> None:
        """Queue the start line of ``fire``'s attempt, begun now (``then``: see log_fire)."""
        now = self._clock.time()
        fire.start = starts.log_fire(fire, now, (now - due) * 1000.0, self._node, then)

    async def _attempt(self, fire: Fire, due: float) -> tuple[Status, Outcome | None]:
        """Run one attempt with its timeout and record it, whatever happens."""
        job = fire.job
        started = self._clock.time()
        started_mono = self._clock.monotonic()
        outcome: Outcome | None = None
        error: str | None = None
        fire.started, fire.due, fire.announced = started, due, False
        self.attempts_started += 1
        self._observer.attempt_started(fire)
        try:
            # The action runs inside this task: no extra task or waiter per attempt.
            if job.timeout is None:
                outcome = await self._action_for(job).run(fire.overrides)
            else:
                async with self._clock.timeout(job.timeout):
                    outcome = await self._action_for(job).run(fire.overrides)
            status = outcome.status
        except TimeoutError:
            status, error = Status.TIMED_OUT, f"timed out after {job.timeout:g}s"
        except asyncio.CancelledError:
            self._rows.finished(
                fire, Status.CANCELLED, None, started, started_mono, due, fire.cancel_reason
            )
            raise
        except Exception as exc:  # noqa: BLE001 - actions report failures; one that raised fails
            status, error = Status.FAILED, f"internal error: {exc!r}"
        self._rows.finished(fire, status, outcome, started, started_mono, due, error)
        return status, outcome

    def announce_running(self) -> int:
        """Record a `running` row for each attempt in flight that has none yet.

        Called every few hundred ms (not per attempt): an attempt that ends before the next call
        never needs one, and a crash leaves a row for every attempt older than that to mark
        `abandoned` at the next start.
        """
        announced = 0
        for fire in self.active():
            if fire.state == "running" and not fire.announced:
                fire.announced = True
                self._rows.running(fire)
                announced += 1
        return announced

    async def announce_running_every(self, period: float = RUNNING_ROWS_EVERY) -> None:
        """``announce_running`` every ``period`` seconds until cancelled: attempt starts become
        durable in batches, and ``period`` is the crash-recovery window (README)."""
        while True:
            await self._clock.sleep(period)
            self.announce_running()

    # -- lifecycle -----------------------------------------------------------------------------

    def active(self, job_name: str | None = None) -> list[Fire]:
        if job_name is not None:
            return list(self._active.get(job_name, ()))
        return [f for fires in self._active.values() for f in fires]

    def cancel_job(self, job_name: str, reason: str) -> None:
        for fire in self.active(job_name):
            self._cancel(fire, reason)

    async def drain(self, grace: float) -> None:
        """Stop starting attempts; give running ones ``grace`` seconds, then cancel the rest."""
        self._accepting = False
        for fire in self.active():
            if fire.state != "running":
                self._cancel(fire, "daemon is shutting down")
        tasks = [f.task for f in self.active() if f.task is not None]
        if tasks:
            log.info("drain_started", running=len(tasks), grace_s=grace)
            timer = asyncio.ensure_future(self._clock.sleep(grace))
            try:
                await asyncio.wait({*tasks, timer}, return_when=asyncio.FIRST_COMPLETED)
                while not timer.done() and any(not t.done() for t in tasks):
                    await asyncio.wait(
                        {*(t for t in tasks if not t.done()), timer},
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            finally:
                timer.cancel()
        for fire in self.active():
            self._cancel(fire, f"shutdown grace of {grace:g}s expired")
        leftover = [f.task for f in self.active() if f.task is not None]
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)

    def _cancel(self, fire: Fire, reason: str) -> None:
        if fire.pending or _not_begun(fire.task):
            # No step of its task has run (a task cancelled before its first step never runs
            # its coroutine, whose except branch would record it): recorded here.
            fire.cancel_reason = reason
            if fire.pending:
                fire.pending = False
                self._limiter.release()  # taken by submit
            if fire.task is not None:
                fire.task.cancel()
            self._rows.unstarted(fire, Status.CANCELLED, reason)
            self._forget(fire)
            _wake_waiter(fire)
            return
        if fire.task is not None and not fire.task.done():
            fire.cancel_reason = reason
            fire.task.cancel()

    def _forget(self, fire: Fire) -> None:
        fires = self._active.get(fire.job.name)
        if fires is None:
            return
        try:  # noqa: SIM105 - not contextlib.suppress: this is every fire's way out
            fires.remove(fire)
        except ValueError:
            pass
        if not fires:
            del self._active[fire.job.name]


def _wake_waiter(fire: Fire) -> None:
    """``finished(fire)`` waits no more for a task: it has one now, or never will."""
    if fire.task_ready is not None and not fire.task_ready.done():
        fire.task_ready.set_result(None)


def _not_begun(task: asyncio.Task[None] | None) -> bool:
    if task is None or task.done():
        return False
    return inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED  # type: ignore[arg-type]


def _skip_reason(job: JobSpec, running: int) -> str:
    if job.overlap == "allow":
        return (
            f"{running} instances already running"
            f" (overlap: allow, max_instances: {job.max_instances})"
        )
    return "previous fire still running (overlap: skip)"
