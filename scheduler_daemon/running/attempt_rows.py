"""What an attempt leaves behind once the runner knows how it went: its row for the recorder,
its start-log entry covered by that row, the observer's figures and its `attempt_finished` event.

The runner decides what happened to a fire; this module writes it down, in the same few steps
for an attempt that ran, one still running (its `running` row) and a fire that never started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.fire import Fire, FireObserver, RecordSink
from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.running.attempt_rows")

# Attempts that ended badly: logged at warning (cancelled is an operator's or the daemon's choice).
FAILURES = frozenset({Status.FAILED, Status.TIMED_OUT})


class AttemptRows:
    __slots__ = ("_clock", "_node", "_observer", "_recorder")

    def __init__(
        self, *, clock: Clock, recorder: RecordSink, observer: FireObserver, node: str
    ) -> None:
        self._clock = clock
        self._recorder = recorder
        self._observer = observer
        self._node = node

    def finished(
        self,
        fire: Fire,
        status: Status,
        outcome: Outcome | None,
        started: float,
        started_mono: float,
        due: float,
        error: str | None,
    ) -> None:
        """The attempt begun at ``started`` (for the fire due at ``due``) ended as ``status``."""
        duration_ms = (self._clock.monotonic() - started_mono) * 1000.0
        kept = outcome.kept if outcome else None
        rec = self._row(
            fire,
            status,
            started_at=_dt(started),
            finished_at=_dt(started + duration_ms / 1000.0),
            drift_ms=(started - due) * 1000.0,
            duration_ms=duration_ms,
            http_status=outcome.http_status if outcome else None,
            exit_code=outcome.exit_code if outcome else None,
            error=error if error is not None else (outcome.error if outcome else None),
            output=outcome.output if outcome else None,
        )
        if kept is not None:
            rec.result, rec.result_bytes, rec.items = kept.text, kept.size, kept.items
        self._recorder.record(rec)
        _covered(fire)
        self._observer.attempt_finished(rec)
        # A failure is worth a warning (alerting on the log level sees it); a success is routine,
        # and its event is not even built below `info` (4 µs a fire through the lazy proxy).
        bound = log.bind()  # the configured logger (the same one each time in the daemon)
        if status in FAILURES:
            _log_finished(bound.warning, rec, fire, duration_ms)
        elif bound.is_enabled_for(logging.INFO):
            _log_finished(bound.info, rec, fire, duration_ms)

    def running(self, fire: Fire) -> None:
        """The `running` row of the attempt in flight (crash recovery marks it `abandoned`)."""
        self._recorder.record(
            self._row(
                fire,
                Status.RUNNING,
                started_at=_dt(fire.started),
                drift_ms=(fire.started - fire.due) * 1000.0,
            )
        )
        _covered(fire)

    def unstarted(self, fire: Fire, status: Status, reason: str) -> None:
        """The fire ended before an attempt began (skipped, cancelled), for ``reason``."""
        rec = self._row(fire, status, finished_at=_dt(self._clock.time()), error=reason)
        self._recorder.record(rec)
        _covered(fire)
        self._observer.attempt_finished(rec)
        self._observer.fire_ended(rec.job_name, status)

    def _row(
        self,
        fire: Fire,
        status: Status,
        *,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        drift_ms: float | None = None,
        duration_ms: float | None = None,
        http_status: int | None = None,
        exit_code: int | None = None,
        error: str | None = None,
        output: str | None = None,
    ) -> ExecutionRecord:
        """The row of ``fire``'s current attempt (explicit arguments: this is the hot path)."""
        return ExecutionRecord(
            fire.fire_id,
            fire.job.name,
            fire.scheduled_at,
            fire.attempt,
            fire.trigger,
            status,
            started_at,
            finished_at,
            drift_ms,
            duration_ms,
            http_status,
            exit_code,
            error,
            output,
            self._node,
            None,
            None,
            fire.parent_fire_id,
        )


def _covered(fire: Fire) -> None:
    """A row of the attempt was just recorded: its start entry is no longer the only trace."""
    if fire.start is not None:
        fire.start.recorded()
        fire.start = None


def _log_finished(
    emit: Callable[..., Any], rec: ExecutionRecord, fire: Fire, duration_ms: float
) -> None:
    emit(
        "attempt_finished",
        job=rec.job_name,
        attempt=rec.attempt,
        status=str(rec.status),
        drift_ms=round(rec.drift_ms or 0.0, 3),
        duration_ms=round(duration_ms, 3),
        error=rec.error,
        trigger=str(fire.trigger),
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
