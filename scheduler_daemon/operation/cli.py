"""Command line: argparse subcommands; wiring only."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias
from zoneinfo import ZoneInfo

import structlog

from scheduler_daemon import __version__
from scheduler_daemon.errors import (
    ConfigError,
    ConfigUnreadable,
    SchedulerDaemonError,
    StateDirUnusable,
)
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.operation import jobs_cli, tables
from scheduler_daemon.operation.reload import load_checked
from scheduler_daemon.running.actions.python import unfinished_job_calls
from scheduler_daemon.specs import Config, JobSpec
from scheduler_daemon.specs.schema import config_schema
from scheduler_daemon.timing.schedule_text import schedule_in_words
from scheduler_daemon.timing.schedules import build_schedule

EX_CONFIG = 78  # sysexits.h: a configuration error (systemd shows it as status=78/CONFIG)

if TYPE_CHECKING:  # imported when used: `check` and `next` need no database driver
    import asyncpg

    from scheduler_daemon.operation.control import Backend
    from scheduler_daemon.storage.schema import SchemaState


def _default_config() -> str:
    return os.environ.get("SCHEDULER_CONFIG", "config.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scheduler-daemon",
        description="Run recurring jobs from a YAML file and record every execution in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _with_config(
        sub.add_parser("run", help="run in the foreground until SIGTERM/SIGINT; SIGHUP reloads")
    )
    _with_config(sub.add_parser("check", help="validate the config; exit 1 listing every error"))
    _add_job_commands(sub)
    sub.add_parser(
        "schema", help="print the config's JSON Schema (for editors: yaml-language-server)"
    )
    _add_db_commands(sub)
    jobs_cli.add_parser(sub, _with_config)
    return parser


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "-c",
        "--config",
        default=_default_config(),
        help="config file (default: $SCHEDULER_CONFIG, then ./config.yaml)",
    )
    return p


def _add_job_commands(sub: Subparsers) -> None:
    """What an operator asks of the jobs: next, status, history, trigger, pause, resume."""
    nxt = _with_config(sub.add_parser("next", help="print the next fire times of each job"))
    nxt.add_argument("-n", type=int, default=5, help="fire times per job (default 5)")
    nxt.add_argument("--after", help="count from this ISO 8601 time (default: now; naive = UTC)")
    nxt.add_argument("jobs", nargs="*", metavar="JOB", help="only these jobs")
    status = _with_config(sub.add_parser("status", help="one line per job: state, next, last"))
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    history = _with_config(sub.add_parser("history", help="a job's latest attempts"))
    history.add_argument("job", metavar="JOB")
    history.add_argument("-n", type=int, help="attempts to show (default 20; with --result, 1)")
    history.add_argument("--status", help="only attempts with this status (e.g. failed)")
    history.add_argument("--json", action="store_true", help="JSON for scripts")
    history.add_argument(
        "--result",
        action="store_true",
        help="print the JSON result of each attempt, newest first (null: none kept)",
    )
    trigger = _with_config(sub.add_parser("trigger", help="run a job now (trigger = manual)"))
    trigger.add_argument("job", metavar="JOB")
    trigger.add_argument(
        "--args", help='python jobs: keyword arguments, e.g. \'{"day": "2026-11-25"}\''
    )
    trigger.add_argument("--params", help="HTTP jobs: query parameters (JSON object)")
    trigger.add_argument("--json", dest="json_body", metavar="JSON", help="HTTP jobs: JSON body")
    for verb in ("pause", "resume"):
        p = _with_config(sub.add_parser(verb, help=f"{verb} a job (kept across restarts)"))
        p.add_argument("job", metavar="JOB")


def _add_db_commands(sub: Subparsers) -> None:
    db = sub.add_parser("db", help="the database schema: status, upgrade")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    _with_config(
        db_sub.add_parser(
            "status", help="the schema's version, one line per migration; exit 3 if some pending"
        )
    )
    _with_config(db_sub.add_parser("upgrade", help="apply the pending migrations (run does too)"))
    _with_config(db_sub.add_parser("init", help="the same as upgrade"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Commands other than `run` print results on stdout (tables, JSON for scripts): their own
    # progress logs (e.g. borrowing the embedded PostgreSQL) would get in the way.
    quiet = "info" if args.command == "run" else "warning"
    configure_logging(
        level="debug" if args.debug else os.environ.get("SCHEDULER_LOG_LEVEL", quiet),
        cache=args.command == "run",
    )
    code = _run_command(args)
    if args.command == "run":
        _leave_hung_jobs(code)
    return code


def _leave_hung_jobs(code: int) -> None:
    """Exit with ``code`` now if a plain-function job has not returned: the interpreter would
    wait for its thread at exit, and a stopped daemon would stay alive as long as the job hangs
    (under systemd, until the stop times out and it is killed)."""
    left = unfinished_job_calls()
    if left:
        structlog.get_logger("scheduler_daemon.operation.cli").warning(
            "job_threads_abandoned", running=left
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run_command(args: argparse.Namespace) -> int:
    # `run` cannot start until someone fixes the config or state_dir: exit EX_CONFIG, which the
    # systemd unit does not restart on (RestartPreventExitStatus=78), instead of 1 every 2 s.
    fix_me = EX_CONFIG if args.command == "run" else 1
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except ConfigUnreadable as exc:
        hint = " (give one with -c PATH or $SCHEDULER_CONFIG)" if exc.missing else ""
        print(f"error: {exc.problems[0]}{hint}", file=sys.stderr)
        return fix_me
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} error(s) in {args.config}", file=sys.stderr)
        return fix_me
    except StateDirUnusable as exc:
        _print_error(exc, debug=args.debug)
        return fix_me
    except SchedulerDaemonError as exc:
        _print_error(exc, debug=args.debug)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `status --json | head`: the reader has gone; say nothing more (Python would, at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "schema":
        print(json.dumps(config_schema(), indent=2))
        return 0
    if args.command == "run":
        from scheduler_daemon.operation.daemon import run_daemon

        return run_daemon(Path(args.config))
    # Only `check` imports python targets (the daemon does too): the operator commands read the
    # file for the database or the admin API and have no business running the jobs' code.
    config = load_checked(args.config, import_targets=args.command == "check")
    if args.command == "check":
        return _check(config)
    if args.command == "next":
        return _next(config, count=args.n, after=args.after, names=args.jobs)
    if args.command == "db":
        return asyncio.run(_db(config, args.db_command))
    if args.command == "jobs":
        return asyncio.run(jobs_cli.run(config, args))
    return asyncio.run(_operate(config, args))


async def _operate(config: Config, args: argparse.Namespace) -> int:
    from scheduler_daemon.operation import control

    async with control.connect(config) as backend:
        if args.command == "status":
            jobs = await backend.jobs()
            print(json.dumps(jobs, indent=2) if args.json else tables.status(jobs))
            if not args.json:
                await _print_history_size(backend)
            live = None if args.json else await backend.cluster()
            if live is not None:
                print(tables.cluster(live))
        elif args.command == "history":
            await _history(config, backend, args)
        elif args.command == "trigger":
            body = control.overrides_body(args=args.args, params=args.params, json=args.json_body)
            result = await backend.trigger(args.job, body)
            print(json.dumps(result))
        elif args.command in ("pause", "resume"):
            result = await backend.set_paused(args.job, args.command == "pause")
            print(json.dumps(result))
        else:
            raise AssertionError(args.command)
    return 0


async def _history(config: Config, backend: Backend, args: argparse.Namespace) -> None:
    from scheduler_daemon.operation.control import ControlError

    count = args.n if args.n is not None else 1 if args.result else 20
    rows = await backend.history(args.job, count, args.status, results=args.result)
    if not rows and config.job(args.job) is None:
        known = ", ".join(job.name for job in config.jobs)
        raise ControlError(f"no job named {args.job!r}; known: {known}")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif args.result:
        # One document after another, newest first: what `jq` reads as a stream.
        for row in rows:
            print(json.dumps(row["result"], indent=2, ensure_ascii=False))
    else:
        print(tables.history(rows))


async def _print_history_size(backend: Backend) -> None:
    from scheduler_daemon.operation.control import ControlError

    try:
        sizes = await backend.history_size()
    except ControlError as exc:  # the jobs were answered: the size is a detail
        print(f"history: size unknown ({exc})")
        return
    print(tables.history_size(sizes))


def _check(config: Config) -> int:
    now = datetime.now(UTC)
    rows = []
    for job in config.jobs:
        nxt = build_schedule(job).next_after(now) if job.enabled else None
        when = _local(nxt, job).isoformat() if nxt else _no_next(job)
        rows.append([job.name, job.kind, schedule_in_words(job), when])
    if rows:
        print(tables.render(["JOB", "KIND", "SCHEDULE", "NEXT"], rows))
    print(f"{config.path}: OK, {len(config.jobs)} job(s)")
    return 0


def _no_next(job: JobSpec) -> str:
    if not job.enabled:
        return "disabled"
    return "at the next start" if job.run_on_start else "never"


def _next(config: Config, *, count: int, after: str | None, names: Sequence[str]) -> int:
    start = _parse_after(after)
    known = {job.name: job for job in config.jobs}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown job(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    for job in (known[n] for n in names) if names else config.jobs:
        trigger = build_schedule(job)
        t: datetime | None = start
        for _ in range(count):
            t = trigger.next_after(t) if t is not None else None
            if t is None:
                break
            print(f"{job.name} {_local(t, job).isoformat()}")
    return 0


def _parse_after(after: str | None) -> datetime:
    if after is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(after)
    except ValueError:
        raise ConfigError([f"--after: expected an ISO 8601 date-time, got {after!r}"]) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _local(t: datetime, job: JobSpec) -> datetime:
    return t.astimezone(ZoneInfo(job.timezone))


async def _db(config: Config, command: str) -> int:
    from scheduler_daemon.storage import store
    from scheduler_daemon.storage.database import open_database

    async with open_database(config) as database, database.connection() as conn:
        try:
            if command == "status":
                return await _db_status(conn)
            return await _db_upgrade(conn)
        except store.DB_ERRORS as exc:
            raise database.unreachable(exc, f"finish `db {command}` on") from None


async def _db_status(conn: asyncpg.Connection) -> int:
    from scheduler_daemon.storage import schema

    state = await schema.read_state(conn)
    lines = [
        (a.label, f"applied {a.applied_at:%Y-%m-%d %H:%M:%S}Z", _status_note(a.version, state))
        for a in state.applied
    ] + [(m.label, "pending", "") for m in state.pending]
    width = max((len(label) for label, _, _ in lines), default=0)
    for label, what, note in sorted(lines):
        print(f"{label:<{width}}  {what}{note}")
    state.refuse_if_newer()
    if state.changed:
        print("a migration applied differs from this version's file: see README, Database")
    if state.legacy:
        print("tables from before versioned migrations: 0001 adopts them, rows kept")
    count = len(state.pending)
    if count:
        print(f"schema version {state.version} of {state.latest}: {count} pending "
              "(`scheduler-daemon db upgrade` applies them)")  # fmt: skip
        return 3
    print(f"schema version {state.version}: up to date")
    return 0


def _status_note(version: int, state: SchemaState) -> str:
    if version > state.latest:
        return f" (unknown to scheduler-daemon {__version__})"
    return " (changed since applied)" if version in {a.version for a in state.changed} else ""


async def _db_upgrade(conn: asyncpg.Connection) -> int:
    from scheduler_daemon.storage import schema

    def applied(migration: schema.Migration, seconds: float, over_legacy: bool) -> None:
        over = " over the tables made before versioned migrations" if over_legacy else ""
        print(f"applied {migration.label}{over} ({seconds * 1000:.0f} ms)", flush=True)

    done = await schema.upgrade(conn, on_applied=applied)
    state = await schema.read_state(conn)
    print(f"schema version {state.version}: up to date" + ("" if done else ", nothing to apply"))
    return 0


def _print_error(exc: BaseException, *, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
        return
    chain: list[str] = []
    cur: BaseException | None = exc
    while cur is not None:
        chain.append(f"{type(cur).__name__}: {cur}" if cur is not exc else str(cur))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    print("error: " + "\n  caused by: ".join(chain), file=sys.stderr)
