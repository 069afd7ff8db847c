"""Jobs kept in the database (`jobs.source = 'api'`): read, create, replace, delete.

Every write takes the job's row lock, checks the version the writer saw (If-Match), bumps it, and
publishes the name on ``JOBS_CHANNEL`` in the same transaction: every daemon on the database
(this one, another replica) re-reads the job when the change commits. The config file's jobs
have rows too (``source = 'config'``): a write to one of those names is refused here, so the
admin API and the CLI writing straight to PostgreSQL obey the same rule.

A deleted job keeps its row, marked ``removed_at`` (its executions stay): its version keeps
counting, so a write made against the deleted job's version fails even after a re-create.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler_daemon.storage.store import Conn, Db, Row, transaction

JOBS_CHANNEL = "scheduler_jobs"  # payload: the name of the job that changed
_LIVE = "removed_at IS NULL"
_COLUMNS = "name, definition, version, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class StoredJob:
    name: str
    definition: Mapping[str, Any]  # the job as written, without its name
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> StoredJob:
        definition = row["definition"]
        return cls(
            name=row["name"],
            definition=json.loads(definition) if isinstance(definition, str) else definition,
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


class JobWriteRefused(Exception):
    """A write that cannot be made as asked; ``code`` names why (the API's error code)."""

    code = "refused"


class DefinedInConfig(JobWriteRefused):
    code = "defined_in_config"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"job {name!r} is defined in the config file: change it there (and reload); "
            "the API changes only the jobs created through it"
        )


class AlreadyExists(JobWriteRefused):
    code = "already_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"a job named {name!r} exists already: PUT or PATCH /jobs/{name}")


class UnknownJob(JobWriteRefused):
    code = "unknown_job"

    def __init__(self, name: str) -> None:
        super().__init__(f"no job named {name!r}")


class VersionMismatch(JobWriteRefused):
    code = "version_mismatch"

    def __init__(self, name: str, expected: int, current: int | None) -> None:
        self.current = current
        now = f"is at version {current}" if current is not None else "does not exist"
        super().__init__(
            f"job {name!r} {now}, not {expected}: someone changed it meanwhile; "
            "read it again and retry"
        )


async def api_jobs(db: Db, names: Collection[str] | None = None) -> list[StoredJob]:
    """The live API jobs; of ``names`` only, when given (a lookup by key: the whole table is
    read by a scan, 30 ms at 100k jobs)."""
    if names is None:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM jobs WHERE source = 'api' AND {_LIVE} ORDER BY name"
        )
    else:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM jobs WHERE name = ANY($1::text[]) AND source = 'api' "
            f"AND {_LIVE} ORDER BY name",
            list(names),
        )
    return [StoredJob.from_row(row) for row in rows]


async def api_job(db: Db, name: str) -> StoredJob | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM jobs WHERE name = $1 AND source = 'api' AND {_LIVE}", name
    )
    return StoredJob.from_row(row) if row is not None else None


async def write_api_job(
    db: Db,
    name: str,
    definition: Mapping[str, Any],
    *,
    spec: Mapping[str, Any],
    enabled: bool,
    if_version: int | None = None,
    create_only: bool = False,
) -> tuple[StoredJob, bool]:
    """Create or replace an API job; (the stored job, whether it was created).

    ``spec`` and ``enabled`` are the job's redacted spec and state (what `jobs` shows of every
    job); ``if_version``: refuse unless the job is at that version (VersionMismatch)."""
    async with transaction(db) as conn:
        row = await conn.fetchrow(
            "SELECT source, version, removed_at IS NULL AS live FROM jobs WHERE name = $1 "
            "FOR UPDATE",
            name,
        )
        live = row is not None and row["live"]
        if row is not None and live and row["source"] == "config":
            raise DefinedInConfig(name)
        if live and create_only:
            raise AlreadyExists(name)
        current = row["version"] if row is not None and live else None
        if if_version is not None and current != if_version:
            raise VersionMismatch(name, if_version, current)
        values = (name, json.dumps(dict(definition)), json.dumps(dict(spec)), enabled)
        if live:
            saved = await conn.fetchrow(
                f"""UPDATE jobs SET definition = $2::jsonb, spec = $3::jsonb, enabled = $4,
                        version = version + 1, updated_at = now()
                    WHERE name = $1 RETURNING {_COLUMNS}""",
                *values,
            )
        else:
            # A new job, or one over a removed job's row: it starts afresh (no pause, nothing
            # missed to catch up on), its version counting on from the removed one's.
            saved = await conn.fetchrow(
                f"""INSERT INTO jobs (name, definition, spec, enabled, source, version,
                                      created_at, updated_at)
                    VALUES ($1, $2::jsonb, $3::jsonb, $4, 'api', 1, now(), now())
                    ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition,
                        spec = EXCLUDED.spec, enabled = EXCLUDED.enabled, source = 'api',
                        version = jobs.version + 1, created_at = now(), updated_at = now(),
                        removed_at = NULL, paused_at = NULL, last_scheduled_at = NULL,
                        next_run_at = NULL
                    RETURNING {_COLUMNS}""",
                *values,
            )
        await _announce(conn, name)
    assert saved is not None
    return StoredJob.from_row(saved), not live


async def delete_api_job(db: Db, name: str, *, if_version: int | None = None) -> StoredJob:
    """Mark an API job removed (its row and executions stay); the job as it was."""
    async with transaction(db) as conn:
        row = await conn.fetchrow(
            f"SELECT source, {_COLUMNS} FROM jobs WHERE name = $1 AND {_LIVE} FOR UPDATE", name
        )
        if row is None:
            raise UnknownJob(name)
        if row["source"] == "config":
            raise DefinedInConfig(name)
        if if_version is not None and row["version"] != if_version:
            raise VersionMismatch(name, if_version, row["version"])
        await conn.execute(
            """UPDATE jobs SET removed_at = now(), next_run_at = NULL, version = version + 1,
                   updated_at = now()
               WHERE name = $1""",
            name,
        )
        await _announce(conn, name)
    return StoredJob.from_row(row)


async def config_job_names(db: Db) -> set[str]:
    """The names the config file holds, as last synced by a daemon."""
    rows = await db.fetch(f"SELECT name FROM jobs WHERE source = 'config' AND {_LIVE}")
    return {row["name"] for row in rows}


async def _announce(conn: Conn, name: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", JOBS_CHANNEL, name)
