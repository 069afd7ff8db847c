"""Paused jobs (name → since when): PostgreSQL is the truth, a file in state_dir its copy.

The copy lets a restart honour pauses before the database answers. It is written atomically
(a temporary file renamed over it); a copy that cannot be read is logged and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import structlog

from scheduler_daemon.operation.oneoff import OneOffRuns, PoolSource
from scheduler_daemon.storage import queries, store
from scheduler_daemon.storage.embedded_home import write_file
from scheduler_daemon.storage.store import Db
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.pauses")

# How often pauses and one-off runs written by others (the CLI, without the API) are re-read.
CONTROL_POLL = 2.0


class Pauses(Mapping[str, datetime]):
    """The paused jobs, read as a mapping: ``name in pauses`` on every fire."""

    def __init__(self, *, cache: Path) -> None:
        self.cache = cache
        self._paused: dict[str, datetime] = {}

    def __getitem__(self, name: str) -> datetime:
        return self._paused[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paused)

    def __len__(self) -> int:
        return len(self._paused)

    def __contains__(self, name: object) -> bool:
        return name in self._paused  # every fire asks: no KeyError round trip

    def load_cache(self) -> None:
        """Start from the copy a previous process left (none, or unreadable: no pauses)."""
        self._paused = self._read_cache()

    def adopt(self, paused: Mapping[str, datetime]) -> None:
        """Take ``paused`` (the database's view) as the state, and copy it to the file."""
        self._paused = dict(paused)
        self._write_cache()

    def refresh(self, paused: Mapping[str, datetime]) -> None:
        """Adopt pauses written by others (the CLI without the API), saying when they differ."""
        if paused != self._paused:
            log.info("paused_jobs_changed", paused=sorted(paused))
            self.adopt(paused)

    async def set(self, db: Db, job: str, paused: bool) -> datetime | None:
        """Persist first (a pause must survive a restart), then apply; since when, or None."""
        since = await queries.set_paused(db, job, paused)
        state = dict(self._paused)
        if since is None:
            state.pop(job, None)
        else:
            state[job] = since
        self.adopt(state)
        log.info("job_paused" if paused else "job_resumed", job=job)
        return since

    def _write_cache(self) -> None:
        try:
            self.cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file(self.cache, json.dumps({k: v.isoformat() for k, v in self._paused.items()}))
        except OSError as exc:
            log.warning("paused_cache_not_written", path=str(self.cache), error=str(exc))

    def _read_cache(self) -> dict[str, datetime]:
        try:
            data = json.loads(self.cache.read_text())
            return {str(k): datetime.fromisoformat(v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("paused_cache_unreadable", path=str(self.cache), error=str(exc))
            return {}


async def watch_controls(
    *,
    clock: Clock,
    database: PoolSource,
    ready: Callable[[], bool],
    pauses: Pauses,
    runs: OneOffRuns,
) -> None:
    """Pick up pauses and one-off runs written to the database by others (the CLI without the
    admin API, another replica); the admin API applies its own at once. ``ready``: the first
    connection's recovery is done (until then the database's view is not ours to adopt)."""
    while True:
        await clock.sleep(CONTROL_POLL)
        pool = database.pool
        if pool is None or not ready():
            continue
        try:
            paused = await queries.paused_jobs(pool)
            pending = await queries.pending_runs(pool)
        except store.DB_ERRORS as exc:
            log.debug("controls_not_read", error=str(exc))
            continue
        pauses.refresh(paused)
        runs.schedule(pending)
