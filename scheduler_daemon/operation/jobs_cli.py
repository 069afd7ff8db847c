"""`scheduler-daemon jobs list|show|apply|delete|export`: the jobs as data, straight in PostgreSQL.

The config file's jobs have rows the daemon keeps in sync (``source = 'config'``); the jobs
written here or over the admin API are rows of their own (``source = 'api'``). A write notifies
the running daemon, which applies it within a second; none is needed for the command to work.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from scheduler_daemon.errors import (
    ConfigError,
    ConfigUnreadable,
    DatabaseUnavailable,
    SchedulerDaemonError,
)
from scheduler_daemon.operation import tables
from scheduler_daemon.operation.control import database_pool
from scheduler_daemon.specs import Config
from scheduler_daemon.specs.api_job import ApiJobRules
from scheduler_daemon.specs.job_fields import api_fields, config_fields
from scheduler_daemon.specs.jobs_file import FileJob, read_jobs_file
from scheduler_daemon.storage import dsn as dsn_text
from scheduler_daemon.storage import job_store, queries, store


class JobsError(SchedulerDaemonError):
    """A refused write or an unknown job: nothing was written."""


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    jobs = sub.add_parser("jobs", help="the jobs as data: list, show, apply, delete, export")
    verbs = jobs.add_subparsers(dest="jobs_command", required=True, metavar="JOBS_COMMAND")
    listing = with_config(verbs.add_parser("list", help="every job, the config file's and api"))
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    show = with_config(verbs.add_parser("show", help="one job: api jobs as `apply` takes them"))
    show.add_argument("job", metavar="JOB")
    show.add_argument("--json", action="store_true", help="JSON for scripts")
    apply = with_config(
        verbs.add_parser("apply", help="create or replace the api jobs of a file (YAML or JSON)")
    )
    apply.add_argument("-f", "--file", required=True, help="the file (`jobs:`); - reads stdin")
    apply.add_argument("--prune", action="store_true", help="also delete api jobs not in it")
    delete = with_config(verbs.add_parser("delete", help="delete an api job (prints it)"))
    delete.add_argument("job", metavar="JOB")
    with_config(verbs.add_parser("export", help="every job as a config file's `jobs:`"))


async def run(config: Config, args: argparse.Namespace) -> int:
    jobs: list[FileJob] = []
    if args.jobs_command == "apply":  # the file first: a wrong one needs no database
        text, display = _read(args.file)
        try:
            jobs = read_jobs_file(text, display, ApiJobRules.of(config))
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{len(exc.problems)} error(s) in {display}: nothing written", file=sys.stderr)
            return 1
    async with database_pool(config) as pool:
        try:
            out = await _command(pool, config, args, jobs)
        except store.DB_ERRORS as exc:
            raise DatabaseUnavailable(
                f"cannot finish `jobs {args.jobs_command}`: {dsn_text.why(exc)}"
            ) from None
    print(out, end="")
    return 0


async def _command(
    pool: asyncpg.Pool, config: Config, args: argparse.Namespace, jobs: Sequence[FileJob]
) -> str:
    """What the command prints, once it has done its work."""
    if args.jobs_command == "list":
        rows = [_listed(row) for row in await queries.jobs(pool)]
        return _json(rows) if args.json else tables.job_list(rows) + "\n"
    if args.jobs_command == "show":
        return await _show(pool, config, args.job, as_json=args.json)
    if args.jobs_command == "apply":
        return "".join(f"{line}\n" for line in await apply(pool, config, jobs, prune=args.prune))
    if args.jobs_command == "delete":
        return await _delete(pool, config, args.job)
    if args.jobs_command == "export":
        return await export(pool, config)
    raise AssertionError(args.jobs_command)


def _read(file: str) -> tuple[str, str]:
    if file == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(file).expanduser().read_text(encoding="utf-8"), file
    except OSError as exc:
        raise ConfigUnreadable(f"cannot read {file}: {exc.strerror or exc}") from None


async def apply(
    pool: asyncpg.Pool, config: Config, jobs: Sequence[FileJob], *, prune: bool
) -> list[str]:
    """Create the file's new jobs and replace its changed ones (``prune``: delete the api jobs
    it lacks), all in one transaction; one line per job. Each write is made against the version
    read (``if_version``): a concurrent change fails the whole apply rather than being lost."""
    lines: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        ours = await job_store.config_job_names(conn) | {job.name for job in config.jobs}
        refused = [job.name for job in jobs if job.name in ours]
        if refused:
            names = ", ".join(refused)
            raise JobsError(
                f"defined in the config file {config.path}: {names}; change it there (and "
                "reload): `jobs apply` writes only the jobs kept in the database. Nothing written"
            )
        stored = {job.name: job for job in await job_store.api_jobs(conn)}
        for item in jobs:
            old = stored.get(item.name)
            if old is not None and dict(old.definition) == item.definition:
                lines.append(f"unchanged {item.name}")
                continue
            saved, created = await _write(conn, item, old)
            lines.append(
                f"{'created' if created else 'updated'} {item.name} (version {saved.version})"
            )
        if prune:
            wanted = {job.name for job in jobs}
            for name, old in stored.items():
                if name not in wanted:
                    await job_store.delete_api_job(conn, name, if_version=old.version)
                    lines.append(f"deleted {name}")
    return lines


async def _write(
    conn: Any, item: FileJob, old: job_store.StoredJob | None
) -> tuple[job_store.StoredJob, bool]:
    try:
        return await job_store.write_api_job(
            conn,
            item.name,
            item.definition,
            spec=item.job.redacted(),
            enabled=item.job.enabled,
            if_version=old.version if old is not None else None,
            create_only=old is None,
        )
    except job_store.JobWriteRefused as exc:
        raise JobsError(f"{exc}. Nothing written") from None


async def _show(pool: asyncpg.Pool, config: Config, name: str, *, as_json: bool) -> str:
    stored = await job_store.api_job(pool, name)
    if stored is not None:
        if as_json:
            return _json({**_stored_json(stored), "definition": stored.definition})
        return (
            f"# source: api, version {stored.version}\n"
            f"# created {_time(stored.created_at)}, updated {_time(stored.updated_at)}\n"
            + _jobs_yaml({name: dict(stored.definition)})
        )
    rows = await queries.jobs(pool, name)
    spec = _spec(rows[0]["spec"]) if rows and rows[0]["source"] == "config" else None
    job = config.job(name)
    if spec is None and job is not None:  # not in the database yet: no daemon has run it
        spec = job.redacted()
    if spec is None:
        raise JobsError(f"no job named {name!r}")
    if as_json:
        return _json({"name": name, "source": "config", "config": str(config.path), "spec": spec})
    header = f"# source: config, defined in {config.path} (secrets redacted)\n"
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


async def _delete(pool: asyncpg.Pool, config: Config, name: str) -> str:
    try:
        if config.job(name) is not None:
            raise job_store.DefinedInConfig(name)
        gone = await job_store.delete_api_job(pool, name)
    except job_store.DefinedInConfig:
        raise JobsError(
            f"job {name!r} is defined in the config file {config.path}: remove it there (and "
            "reload); `jobs delete` deletes only the jobs kept in the database"
        ) from None
    except job_store.JobWriteRefused as exc:
        raise JobsError(str(exc)) from None
    header = f"# deleted {name} (was version {gone.version}); `jobs apply -f` this to restore it\n"
    return header + _jobs_yaml({name: dict(gone.definition)})


async def export(pool: asyncpg.Pool, config: Config) -> str:
    """Every job as a config file's `jobs:` mapping, each after a comment naming its source."""
    entries = [("# source: config", job.name, config_fields(job)) for job in config.jobs]
    entries += [
        (f"# source: api, version {job.version}", job.name, api_fields(job.definition))
        for job in await job_store.api_jobs(pool)
    ]
    if not entries:
        return "jobs: {}\n"
    out = ["jobs:\n"]
    for comment, name, fields in sorted(entries, key=lambda entry: entry[1]):
        out.append(f"  {comment}\n")
        out.append(_indented(yaml.safe_dump({name: fields}, sort_keys=False, allow_unicode=True)))
    return "".join(out)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _jobs_yaml(jobs: Mapping[str, Any]) -> str:
    return yaml.safe_dump({"jobs": dict(jobs)}, sort_keys=False, allow_unicode=True)


def _indented(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(True))


def _listed(row: store.Row) -> dict[str, Any]:
    spec = _spec(row["spec"])
    action = spec.get("action") or {}
    kind = (
        "shell" if action.get("kind") == "command" and action.get("shell") else action.get("kind")
    )
    api = row["source"] == "api"
    return {
        "name": row["name"],
        "source": row["source"],
        "kind": kind,
        "enabled": row["enabled"],
        "paused": row["paused_at"] is not None,
        "version": row["version"] if api else None,
        "next_run_at": _iso(row["next_run_at"]),
    }


def _stored_json(job: job_store.StoredJob) -> dict[str, Any]:
    return {
        "name": job.name,
        "source": "api",
        "version": job.version,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
    }


def _spec(value: Any) -> dict[str, Any]:
    spec = json.loads(value) if isinstance(value, str) else value
    return dict(spec) if isinstance(spec, Mapping) else {}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
