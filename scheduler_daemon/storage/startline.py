"""One line of the start log: an attempt's `running` record, compact and checked on the way back.

Instants are integer µs since the epoch: exact, and 4x cheaper to write than ISO text (a line is
written on every attempt's path). A scheduled fire's line leaves its id out: it is a pure function
of the job and the instant (``scheduled_fire_id``), derived when the line is read back rather than
hashed on the way to the action; lines that hold it (other fires, earlier versions) read as before.
A line read back is refused with a ValueError saying why, never quoting it (lines are moved to the
quarantine as they are), like the journal's.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any

from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.records import (
    ExecutionRecord,
    FireKind,
    Status,
    scheduled_fire_id,
)
from scheduler_daemon.storage.journal import check, load_object

# An attempt's `running` record (and every line of the versions before the one below).
_LINE = (
    '{"fire_id":"%s","job":%s,"scheduled_us":%d,"attempt":%d,"trigger":"%s",'
    '"started_us":%d,"drift_ms":%s,"node":%s}\n'
)
_FIELDS = frozenset(
    ("fire_id", "job", "scheduled_us", "attempt", "trigger", "started_us", "drift_ms", "node")
)
# A fire's line, written straight from the Fire (no record, no datetime, no float text: the
# drift in integer µs); a scheduled fire's leaves its id out, for the reader to derive.
_FIRE_LINE = (
    '{"job":%s,"scheduled_us":%d,"attempt":%d,"trigger":"%s",'
    '"started_us":%d,"drift_us":%d,"node":%s}\n'
)
_FIRE_LINE_ID = '{"fire_id":"%s",' + _FIRE_LINE[1:]
_FIRE_FIELDS = frozenset(
    ("job", "scheduled_us", "attempt", "trigger", "started_us", "drift_us", "node")
)
_FIRE_FIELDS_ID = _FIRE_FIELDS | {"fire_id"}
_TRIGGER_TEXT = {kind: kind.value for kind in FireKind}  # str(a StrEnum) runs Python code
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRIGGERS = frozenset(FireKind)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_quote = encode_basestring_ascii  # ASCII out: any name is one valid line


def encode_start(rec: ExecutionRecord) -> str:
    """The line of an attempt's `running` record."""
    assert rec.started_at is not None
    drift = "null" if rec.drift_ms is None else repr(rec.drift_ms)
    return _LINE % (
        rec.fire_id.hex,
        _quote(rec.job_name),
        (rec.scheduled_at - _EPOCH) // _MICRO,
        rec.attempt,
        rec.trigger,
        (rec.started_at - _EPOCH) // _MICRO,
        drift,
        _quote(rec.node),
    )


def encode_fire(fire: Fire, started: float, drift_ms: float, node: str) -> str:
    """The line of ``fire``'s current attempt, begun at ``started`` (epoch seconds): the record
    ``encode_start`` writes of its `running` row (the drift to the µs), for a fraction of the
    cost."""
    fields = (
        _quote(fire.job.name),
        (fire.scheduled_at - _EPOCH) // _MICRO,
        fire.attempt,
        _TRIGGER_TEXT[fire.trigger],
        round(started * 1_000_000),
        round(drift_ms * 1000),
        _quote(node),
    )
    if fire.given_id is None:  # a scheduled fire: the reader derives the id
        return _FIRE_LINE % fields
    return _FIRE_LINE_ID % (fire.given_id.hex, *fields)


def decode_start(line: bytes) -> ExecutionRecord:
    """The `running` record a start line holds; ValueError saying why when it holds none."""
    data = load_object(line)
    keys = data.keys()
    if keys != _FIELDS and keys != _FIRE_FIELDS and keys != _FIRE_FIELDS_ID:
        expected = _FIRE_FIELDS if "drift_us" in keys else _FIELDS
        missing, unknown = sorted(expected - keys), len(keys - expected - {"fire_id"})
        raise ValueError(f"expected a start entry, got {missing} missing, {unknown} unknown")
    fire_id = _typed(data, "fire_id", str) if "fire_id" in keys else None
    trigger = _typed(data, "trigger", str)
    if fire_id is not None and not _HEX32.fullmatch(fire_id):
        raise ValueError("expected fire_id as 32 hexadecimal digits, got other text")
    if trigger not in _TRIGGERS:
        raise ValueError(f"expected trigger in {sorted(_TRIGGERS)}, got another value")
    try:
        job, scheduled_at = _typed(data, "job", str), _instant(data, "scheduled_us")
        rec = ExecutionRecord(
            fire_id=(
                scheduled_fire_id(job, scheduled_at) if fire_id is None else uuid.UUID(hex=fire_id)
            ),
            job_name=job,
            scheduled_at=scheduled_at,
            attempt=_typed(data, "attempt", int),
            trigger=FireKind(trigger),
            status=Status.RUNNING,
            started_at=_instant(data, "started_us"),
            finished_at=None,
            drift_ms=_drift_ms(data),
            duration_ms=None,
            node=_typed(data, "node", str),
        )
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"expected a start entry, got {exc}") from None
    check(rec)
    return rec


def _drift_ms(data: dict[str, Any]) -> float | None:
    if "drift_us" in data:
        return float(_typed(data, "drift_us", int)) / 1000.0
    return None if data["drift_ms"] is None else float(_typed(data, "drift_ms", float))


def _typed(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data[name]
    kinds = (int, float) if kind is float else kind  # JSON writes 2.0 as 2
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise ValueError(f"expected {name} as {kind.__name__}, got {type(value).__name__}")
    return value


def _instant(data: dict[str, Any], name: str) -> datetime:
    micros: int = _typed(data, name, int)
    return _EPOCH + micros * _MICRO
