"""The jobs kept in the database (created over the admin API or by `jobs apply`), in the daemon.

PostgreSQL is the truth: the daemon reads them before its first fire, again on each connection,
when a write anywhere publishes a name on ``JOBS_CHANNEL`` (another process's change is applied
within a second), and every ``RESYNC_EVERY`` as a fallback for a lost notification. A file under
state_dir keeps a copy (definitions only: a secret is a reference there too), so a start while
the database is away still runs them.

A stored job is built like an API write builds it, under this daemon's rules (the kinds and
variables its admin section allows): one that fails (a kind no longer allowed, a variable not
set here, a name the config file has taken) is not run, and the reason is logged and kept in
``refused``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems, build_api_job
from scheduler_daemon.specs.chains import chain_problems
from scheduler_daemon.specs.spec import Problem
from scheduler_daemon.storage import job_store, store
from scheduler_daemon.storage.embedded_home import write_file
from scheduler_daemon.storage.job_store import StoredJob
from scheduler_daemon.storage.store import Db
from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.api_jobs")

RESYNC_EVERY = 30.0  # re-read even without a notification
RECONNECT_EVERY = 2.0  # the listening connection, while the database is away


class ApiJobs:
    """The stored jobs and the specs built from them, by name."""

    def __init__(
        self,
        *,
        rules: ApiJobRules,
        cache: Path,
        taken: Callable[[], Collection[str]],
        on_change: Callable[[], Awaitable[None]],
        environ: Mapping[str, str] | None = None,
        chained: Callable[[], Mapping[str, Sequence[str]]] = dict,
    ) -> None:
        self.rules = rules
        self.cache = cache
        self._taken = taken  # the config file's job names, now
        self._chained = chained  # the config file's jobs' non-empty `then:` lists, now
        self._on_change = on_change  # schedule ``specs`` as they are now
        self._environ = os.environ if environ is None else environ
        self.stored: dict[str, StoredJob] = {}
        self.specs: dict[str, JobSpec] = {}  # the ones that run
        self.refused: dict[str, str] = {}  # the ones that do not, and why
        # A write and a re-read take turns: a read that began before a write must not put the
        # job's older version back.
        self._turns = asyncio.Lock()

    def source(self, name: str) -> str:
        return "api" if name in self.stored else "config"

    # -- reading -------------------------------------------------------------------------------

    async def start(self, db: Db | None, config_path: Path) -> None:
        """Before the first fire: the database's jobs, or the copy when it is away. A stored
        job the config file also defines refuses the start (a reload adding one is refused)."""
        stored = None
        if db is not None:
            try:
                stored = await job_store.api_jobs(db)
            except store.DB_ERRORS as exc:
                log.warning("api_jobs_from_cache", error=str(exc))
        if stored is None:
            stored = self.load_cache()
        clashes = sorted({job.name for job in stored} & set(self._taken()))
        if clashes:
            raise ConfigError(
                [
                    f"{config_path}: {name_taken(name, 'created through the API')}"
                    for name in clashes
                ]
            )
        self.adopt(stored, taken=())

    async def reread(self, db: Db, names: Collection[str] | None = None) -> None:
        """Adopt the database's view, of every job or of ``names`` (the jobs a notification
        named); schedule the difference."""
        async with self._turns:
            stored = await job_store.api_jobs(db, names)
            if names is not None:
                others = (job for name, job in self.stored.items() if name not in names)
                stored = [*others, *stored]
            if self.adopt(stored, taken=self._taken()):
                await self._on_change()

    async def retake(self) -> None:
        """After a reload: a stored job the file held and no longer holds may run now."""
        if self.adopt(list(self.stored.values()), taken=self._taken()):
            await self._on_change()

    # -- writing (the admin API) -----------------------------------------------------------------

    async def write(
        self,
        db: Db,
        name: str,
        fields: Mapping[str, Any],
        *,
        if_version: int | None = None,
        create_only: bool = False,
    ) -> tuple[StoredJob, JobSpec, bool]:
        """Create or replace a job: checked (JobProblems), stored (job_store's refusals), then
        scheduled at once; (the stored job, its spec, whether it was created)."""
        if name in self._taken():
            raise job_store.DefinedInConfig(name)
        spec, definition = await asyncio.to_thread(
            build_api_job, name, fields, self.rules, environ=self._environ, check_target=True
        )
        problems = self._chain_problems(spec)
        if problems:
            raise JobProblems(problems)
        async with self._turns:
            job, created = await job_store.write_api_job(
                db,
                name,
                definition,
                spec=spec.redacted(),
                enabled=spec.enabled,
                if_version=if_version,
                create_only=create_only,
            )
            self.put(job, spec)
            await self._on_change()
        log.info("api_job_created" if created else "api_job_changed", job=name, version=job.version)
        return job, spec, created

    def _chain_problems(self, job: JobSpec) -> list[Problem]:
        """Its `then:` names jobs that exist, and no chain through it comes back to it (the
        others' chains were checked when they were written or loaded)."""
        if not job.then:
            return []  # no chain starts here (the first write otherwise walked 100k jobs: 40 ms)
        graph = {
            **self._chained(),
            **{n: s.then for n, s in self.specs.items()},
            job.name: job.then,
        }
        return [(("then",), why) for _, why in chain_problems(graph, [job.name], self._taken())]

    async def delete(self, db: Db, name: str, *, if_version: int | None = None) -> StoredJob:
        if name in self._taken():
            raise job_store.DefinedInConfig(name)
        async with self._turns:
            job = await job_store.delete_api_job(db, name, if_version=if_version)
            self.drop(name)
            await self._on_change()
        log.info("api_job_deleted", job=name, version=job.version + 1)
        return job

    def adopt(self, stored: Iterable[StoredJob], *, taken: Collection[str] = ()) -> bool:
        """Make ``stored`` the jobs (the database's view); whether the ones that run changed.

        A job whose version is the one already built keeps its spec object (its scheduled
        entry stays as it is); ``taken``: the config file's names, which win."""
        by_name = {job.name: job for job in stored}
        specs: dict[str, JobSpec] = {}
        refused: dict[str, str] = {}
        for name, job in by_name.items():
            before = self.stored.get(name)
            if name in taken:
                refused[name] = "the config file defines a job of this name: the file's job runs"
            elif before is not None and before.version == job.version and name in self.specs:
                specs[name] = self.specs[name]
            else:
                try:
                    specs[name] = self.build(job)
                except JobProblems as exc:
                    refused[name] = str(exc)
        for name, why in refused.items():
            if self.refused.get(name) != why:
                log.error("api_job_not_run", job=name, why=why)
        changed = specs.keys() != self.specs.keys() or any(
            spec is not self.specs[name] for name, spec in specs.items()
        )
        if by_name != self.stored:
            self.stored = by_name
            self._write_cache()
        self.specs, self.refused = specs, refused
        return changed

    def build(self, job: StoredJob) -> JobSpec:
        spec, _ = build_api_job(job.name, job.definition, self.rules, environ=self._environ)
        return spec

    def put(self, job: StoredJob, spec: JobSpec) -> None:
        """A write of this process's own API, applied at once (its notification then finds the
        same version and changes nothing)."""
        self.stored[job.name] = job
        self.specs[job.name] = spec
        self.refused.pop(job.name, None)
        self._write_cache()

    def drop(self, name: str) -> None:
        self.stored.pop(name, None)
        self.specs.pop(name, None)
        self.refused.pop(name, None)
        self._write_cache()

    # -- the copy under state_dir --------------------------------------------------------------

    def load_cache(self) -> list[StoredJob]:
        try:
            data = json.loads(self.cache.read_text())
            return [
                StoredJob(
                    name=item["name"],
                    definition=item["definition"],
                    version=int(item["version"]),
                    created_at=datetime.fromisoformat(item["created_at"]),
                    updated_at=datetime.fromisoformat(item["updated_at"]),
                )
                for item in data
            ]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("api_jobs_cache_unreadable", path=str(self.cache), error=str(exc))
            return []

    def _write_cache(self) -> None:
        items = [
            {
                "name": job.name,
                "definition": job.definition,
                "version": job.version,
                "created_at": job.created_at.isoformat(),
                "updated_at": job.updated_at.isoformat(),
            }
            for job in self.stored.values()
        ]
        try:
            self.cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file(self.cache, json.dumps(items))
        except OSError as exc:
            log.warning("api_jobs_cache_not_written", path=str(self.cache), error=str(exc))


def name_taken(name: str, by: str) -> str:
    return (
        f"jobs.{name}: the name is taken by a job {by}: rename one of them, or delete the API "
        f"job first (`scheduler-daemon jobs delete {name}`)"
    )


async def follow_changes(
    *,
    clock: Clock,
    dsn: Callable[[], str],
    ready: Callable[[], bool],
    reread: Callable[[Collection[str] | None], Awaitable[None]],
) -> None:
    """Re-read the stored jobs a notification names when a process changes one (NOTIFY on a
    connection of its own), and all of them on each new listening connection and every
    RESYNC_EVERY. ``ready``: the daemon's first connection is settled."""
    changed = asyncio.Event()
    listener: asyncpg.Connection | None = None
    named: set[str] = set()  # since the last re-read
    everything = True  # re-read every job: nobody listened for a while

    def notified(_conn: object, _pid: int, _channel: str, name: str) -> None:
        named.add(name)
        changed.set()

    try:
        while True:
            if listener is None or listener.is_closed():
                listener = await _listen(dsn, notified)
                everything = True  # changes made while no one listened
            if listener is None or not everything:
                wait = RESYNC_EVERY if listener is not None else RECONNECT_EVERY
                try:
                    async with clock.timeout(wait):
                        await changed.wait()
                except TimeoutError:
                    everything = True
            changed.clear()
            names = None if everything else frozenset(named)
            named.clear()
            try:
                if ready():
                    await reread(names)
                    everything = False
                    continue
            except store.DB_ERRORS as exc:
                log.debug("api_jobs_not_read", error=str(exc))
            # Not read (the first connection is not settled yet, or the database is away): every
            # job, a little later.
            everything = True
            await clock.sleep(RECONNECT_EVERY)
    finally:
        if listener is not None and not listener.is_closed():
            await listener.close(timeout=1)


async def _listen(
    dsn: Callable[[], str], notified: Callable[..., None]
) -> asyncpg.Connection | None:
    try:
        conn = await asyncpg.connect(
            dsn(), timeout=store.CONNECT_TIMEOUT, server_settings=store.SERVER_SETTINGS
        )
    except (*store.DB_ERRORS, RuntimeError) as exc:  # RuntimeError: no server started yet
        log.debug("api_jobs_not_listening", error=str(exc))
        return None
    try:
        await conn.add_listener(job_store.JOBS_CHANNEL, notified)
    except store.DB_ERRORS as exc:
        log.debug("api_jobs_not_listening", error=str(exc))
        await conn.close(timeout=1)
        return None
    return conn
