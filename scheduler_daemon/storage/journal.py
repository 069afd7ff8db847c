"""An append-only file of execution records that could not reach PostgreSQL yet.

When the database is down for long, the recorder's memory buffer spills here (fsynced per batch);
when it is back, or at the next start, the journal is replayed — writes are idempotent on
(fire_id, attempt), so a replay cut short and done again writes nothing twice — then removed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status

log = structlog.get_logger("scheduler_daemon.storage.journal")

_DATES = ("scheduled_at", "started_at", "finished_at")


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, records: Sequence[ExecutionRecord]) -> None:
        """Append and fsync (blocking: call it from a worker thread)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(_to_json(r), separators=(",", ":")) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())

    def read(self, batch_size: int) -> Iterator[list[ExecutionRecord]]:
        """The journal's records in batches; a torn last line (a crash mid-write) is skipped."""
        batch: list[ExecutionRecord] = []
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    batch.append(_from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning(
                        "journal_line_skipped", path=str(self.path), line=number, error=str(exc)
                    )
                    continue
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _to_json(rec: ExecutionRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fire_id": str(rec.fire_id),
        "job_name": rec.job_name,
        "attempt": rec.attempt,
        "trigger": str(rec.trigger),
        "status": str(rec.status),
        "drift_ms": rec.drift_ms,
        "duration_ms": rec.duration_ms,
        "http_status": rec.http_status,
        "exit_code": rec.exit_code,
        "error": rec.error,
        "output": rec.output,
        "node": rec.node,
    }
    for name in _DATES:
        value = getattr(rec, name)
        data[name] = value.isoformat() if value is not None else None
    return data


def _from_json(data: dict[str, Any]) -> ExecutionRecord:
    dates = {n: datetime.fromisoformat(data[n]) if data[n] else None for n in _DATES}
    scheduled = dates.pop("scheduled_at")
    assert scheduled is not None
    return ExecutionRecord(
        fire_id=uuid.UUID(data["fire_id"]),
        job_name=data["job_name"],
        scheduled_at=scheduled,
        attempt=data["attempt"],
        trigger=FireKind(data["trigger"]),
        status=Status(data["status"]),
        started_at=dates["started_at"],
        finished_at=dates["finished_at"],
        drift_ms=data["drift_ms"],
        duration_ms=data["duration_ms"],
        http_status=data["http_status"],
        exit_code=data["exit_code"],
        error=data["error"],
        output=data["output"],
        node=data["node"],
    )
