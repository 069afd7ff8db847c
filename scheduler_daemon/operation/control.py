"""Operator commands — status, history, trigger, pause, resume — over the admin API or PostgreSQL.

With `admin:` configured and able to answer it (a token, or reads open) the CLI asks the running
daemon (the same answers the API gives); otherwise it reads PostgreSQL directly and writes what the
daemon then picks up: pauses and one-off runs are rows the daemon re-reads every few seconds
(``CONTROL_POLL`` in pauses.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp
import asyncpg

from scheduler_daemon.errors import SchedulerDaemonError
from scheduler_daemon.operation.membership import live_within
from scheduler_daemon.operation.overrides import BadOverrides, runner_overrides
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems, build_api_job
from scheduler_daemon.storage import history, job_store, nodes, queries, schema, store
from scheduler_daemon.storage.database import open_database
from scheduler_daemon.storage.nodes import Counts
from scheduler_daemon.timing.schedule_text import schedule_in_words
from scheduler_daemon.timing.schedules import build_schedule

WINDOW = timedelta(hours=24)


class ControlError(SchedulerDaemonError):
    """The daemon or the database refused, or could not be reached."""


class Backend(Protocol):
    async def jobs(self) -> list[dict[str, Any]]: ...

    async def history(
        self, job: str, limit: int, status: str | None, *, results: bool = False
    ) -> list[dict[str, Any]]:
        """The job's latest attempts, newest first; ``results``: each with its `result` (JSON)."""

    async def history_size(self) -> dict[str, int]:
        """The bytes the history takes in the database, by table (executions, job_items)."""

    async def trigger(self, job: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]: ...

    async def set_paused(self, job: str, paused: bool) -> dict[str, Any]: ...

    async def cluster(self) -> dict[str, Counts] | None:
        """The live replicas (sorted) in cluster mode, with the claims each last reported; None:
        the daemon runs alone."""


@asynccontextmanager
async def connect(config: Config) -> AsyncIterator[Backend]:
    admin = config.admin
    # Without a token, a TCP listener answers reads only with open_reads: ask the database then.
    if admin is not None and (admin.token is not None or admin.reads_open):
        async with ApiBackend.open(config) as api:
            yield api
        return
    async with DbBackend.open(config) as db:
        yield db


class ApiBackend:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self._session, self._base = session, base
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[ApiBackend]:
        admin = config.admin
        assert admin is not None
        connector: aiohttp.BaseConnector | None = None
        if admin.unix_socket is not None:
            connector = aiohttp.UnixConnector(path=str(admin.unix_socket))
            base = "http://admin"
        else:
            host = "127.0.0.1" if admin.host in ("0.0.0.0", "") else admin.host
            host = f"[{host}]" if host and ":" in host else host
            base = f"http://{host}:{admin.port}"
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield cls(session, base, admin.token)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self._session.request(
                method, self._base + path, headers=self._headers, **kwargs
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise ControlError(refusal(resp.status, body, sent_token=bool(self._headers)))
                return body
        except aiohttp.ClientConnectionError as exc:
            raise ControlError(
                f"cannot reach the daemon's admin API at {self._base}: {exc}"
            ) from None

    async def jobs(self) -> list[dict[str, Any]]:
        body = await self._call("GET", "/jobs")
        return [_api_job(job) for job in body["jobs"]]

    async def history(
        self, job: str, limit: int, status: str | None, *, results: bool = False
    ) -> list[dict[str, Any]]:
        params = {"limit": str(limit), **({"status": status} if status else {})}
        body = await self._call("GET", f"/jobs/{job}/executions", params=params)
        rows = list(body["executions"])
        if not results:
            return rows
        # A page leaves results out (up to 1 MiB each): one attempt's body has its own.
        return [await self._call("GET", f"/executions/{row['id']}") for row in rows]

    async def history_size(self) -> dict[str, int]:
        body = await self._call("GET", "/storage")
        return {"executions": body["executions_bytes"], "job_items": body["job_items_bytes"]}

    async def trigger(self, job: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/jobs/{job}/trigger", json=overrides or {}
        )
        return result

    async def set_paused(self, job: str, paused: bool) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/jobs/{job}/{'pause' if paused else 'resume'}"
        )
        return result

    async def cluster(self) -> dict[str, Counts] | None:
        cluster = (await self._call("GET", "/healthz")).get("cluster")
        if cluster is None:
            return None
        counts = cluster.get("replicas") or {}
        return {node: Counts(**counts.get(node, {})) for node in cluster["live"]}


def _api_job(job: Mapping[str, Any]) -> dict[str, Any]:
    stats = job.get("stats") or {}
    return {
        "name": job["name"],
        "state": _state(job["enabled"], job["paused"], job["running"]),
        "schedule": job["schedule_in_words"],
        "next_fire": (job["next_fires"] or [None])[0],
        "last_status": stats.get("last_status"),
        "last_finished_at": stats.get("last_finished_at"),
        "success_rate": stats.get("success_rate"),
        "p95_drift_ms": stats.get("p95_drift_ms"),
    }


def _state(enabled: bool, paused: bool, running: int) -> str:
    if not enabled:
        return "disabled"
    if paused:
        return "paused"
    return "running" if running else "idle"


@asynccontextmanager
async def database_pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    """A small pool straight to the config's PostgreSQL, for an operator command."""
    async with AsyncExitStack() as stack:
        # The embedded server: borrowed from the running daemon, or started for this. The
        # schema must be this version's: upgrading it is for the daemon and `db upgrade`.
        database = open_database(config, max_size=2, on_connect=[schema.require_current])
        try:
            await stack.enter_async_context(database)
            pool = await database.connect()
        except store.DB_ERRORS as exc:
            raise database.unreachable(exc) from None
        yield pool


async def with_stored_jobs(config: Config, pool: asyncpg.Pool) -> Config:
    """``config`` with the jobs kept in the database after the file's, as a daemon runs them
    (their secrets left unresolved: this process only shows and queues them)."""
    rules = ApiJobRules.of(config)
    built: dict[str, JobSpec] = {}
    for stored in await job_store.api_jobs(pool):
        with suppress(JobProblems):  # the daemon does not run it either
            built[stored.name], _ = build_api_job(
                stored.name, stored.definition, rules, environ=None
            )
    return config.model_copy(update={"jobs": (*config.jobs, *(built[n] for n in sorted(built)))})


class DbBackend:
    """Straight to PostgreSQL: the schedule is computed from the config, like the daemon does."""

    def __init__(self, config: Config, pool: asyncpg.Pool) -> None:
        self._config, self._pool = config, pool

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[DbBackend]:
        async with database_pool(config) as pool:
            yield cls(await with_stored_jobs(config, pool), pool)

    async def jobs(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = {r["name"]: r for r in await queries.jobs(self._pool)}
        stats = {r["job_name"]: r for r in await queries.job_stats(self._pool, now - WINDOW)}
        out = []
        for job in self._config.jobs:
            row, st = rows.get(job.name), stats.get(job.name)
            nxt = build_schedule(job).next_after(now) if job.enabled else None
            out.append(
                {
                    "name": job.name,
                    "state": _state(job.enabled, bool(row and row["paused_at"]), 0),
                    "schedule": schedule_in_words(job),
                    "next_fire": nxt.isoformat() if nxt else None,
                    "last_status": st["last_status"] if st else None,
                    "last_finished_at": _iso(st["last_finished_at"]) if st else None,
                    "success_rate": st["success_rate"] if st else None,
                    "p95_drift_ms": st["p95_drift_ms"] if st else None,
                }
            )
        return out

    async def history(
        self, job: str, limit: int, status: str | None, *, results: bool = False
    ) -> list[dict[str, Any]]:
        where = queries.ExecutionFilter(job=job, status=status)
        rows, _ = await queries.executions(self._pool, where, limit=limit, with_result=results)
        out = queries.rows_json(rows)
        for row in out if results else ():
            row["result"] = json.loads(row["result"]) if row["result"] is not None else None
        return out

    async def history_size(self) -> dict[str, int]:
        return await history.history_size(self._pool)

    async def trigger(self, job: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        spec = self._job(job)
        try:
            arguments = runner_overrides(spec, overrides)
        except BadOverrides as exc:
            raise ControlError(str(exc)) from None
        try:
            run = await queries.create_run(self._pool, spec.name, datetime.now(UTC), arguments)
        except queries.TooManyRuns as exc:
            raise ControlError(str(exc)) from None
        return {"run_id": str(run.id), "job": spec.name, "queued": True}

    async def set_paused(self, job: str, paused: bool) -> dict[str, Any]:
        self._job(job)
        try:
            since = await queries.set_paused(self._pool, job, paused)
        except LookupError:
            raise ControlError(
                f"job {job!r} is not in the database yet: start the daemon"
            ) from None
        return {"job": job, "paused": since is not None, "paused_at": _iso(since)}

    async def cluster(self) -> dict[str, Counts] | None:
        if not self._config.cluster.enabled:
            return None
        return await nodes.live_counts(self._pool, within=live_within(self._config.cluster))

    def _job(self, name: str) -> JobSpec:
        job = self._config.job(name)
        if job is None:
            known = ", ".join(j.name for j in self._config.jobs)
            raise ControlError(f"no job named {name!r} in {self._config.path}; known: {known}")
        return job


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def overrides_body(**options: str | None) -> dict[str, Any] | None:
    """The API's body from --args / --params / --json (each a JSON text, or None)."""
    body: dict[str, Any] = {}
    for key, text in options.items():
        if text is None:
            continue
        try:
            body[key] = json.loads(text)
        except ValueError as exc:
            raise ControlError(f"--{key}: not valid JSON: {exc}") from None
    return body or None


def refusal(status: int, body: Mapping[str, Any], *, sent_token: bool) -> str:
    """The API's refusal, saying which side lacks the token when that is why."""
    code = body.get("error")
    said = f"{body.get('message')} ({status} {code})"
    if code == "no_token_configured":
        return f"{said}: the daemon runs without admin.token; give it one and restart it"
    if code == "unauthorized" and not sent_token:
        return f"{said}: this config has no admin.token; set the daemon's token in it"
    if code == "unauthorized":
        return f"{said}: the daemon runs with another token than this config's admin.token"
    return said
