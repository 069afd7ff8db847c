"""An append-only file of execution records that could not reach PostgreSQL yet.

When the database is down for long, the recorder's memory buffer spills here (fsynced per batch);
when it is back, or at the next start, the journal is replayed — writes are idempotent on
(fire_id, attempt), so a replay cut short and done again writes nothing twice — then removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog

from scheduler_daemon.running.records import ExecutionRecord
from scheduler_daemon.storage import rows

log = structlog.get_logger("scheduler_daemon.storage.journal")


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, records: Sequence[ExecutionRecord]) -> None:
        """Append and fsync (blocking: call it from a worker thread)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(
            json.dumps(rows.to_json(r), separators=(",", ":")) + "\n" for r in records
        )
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
                    batch.append(rows.from_json(json.loads(line)))
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
