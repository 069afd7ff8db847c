"""YAML → validated, frozen Config; every error names the file, line, job and field.

The models below are the contract the rest of the daemon uses; ``load_config`` reads a file into
them. Validation is declarative (a converter per field), collects every problem in one pass, and
reports each as ``file:line: path: expected X, got Y``.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import hashlib
import ipaddress
import json
import os
import re
import shlex
import socket
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.specs import yamlsource
from scheduler_daemon.specs.cron import validate_cron

Overlap = Literal["skip", "allow", "replace"]
Priority = Literal["high", "normal", "low"]
CatchUp = Literal["none", "latest", "all"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    attempts: int = Field(default=1, ge=1)  # total attempts, 1 = no retry
    delay: float = Field(default=1.0, ge=0)  # seconds before the 2nd attempt
    backoff: float = Field(default=2.0, ge=1)  # delay multiplier per further attempt
    max_delay: float = Field(default=300.0, ge=0)  # cap on one delay, seconds
    jitter: float = Field(default=0.0, ge=0, le=1)  # ± fraction of the delay, random


class HttpSpec(_Frozen):
    kind: Literal["http"] = "http"
    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    json_body: Any = None  # YAML key `json`
    body: str | None = None
    expect: tuple[int, ...] = ()  # empty: any 2xx


class CommandSpec(_Frozen):
    kind: Literal["command"] = "command"
    argv: tuple[str, ...] | None = None  # YAML `command: [...]`
    shell: str | None = None  # YAML `shell: "..."`, run by /bin/sh -c
    env: dict[str, str] = Field(default_factory=dict)  # added to the daemon's environment
    cwd: str | None = None
    kill_grace: float = 5.0  # SIGTERM → SIGKILL delay on timeout/cancel, seconds


class PythonSpec(_Frozen):
    kind: Literal["python"] = "python"
    target: str  # "package.module:function"
    args: dict[str, Any] = Field(default_factory=dict)  # passed as keyword arguments


ActionSpec = HttpSpec | CommandSpec | PythonSpec


class JobSpec(_Frozen):
    name: str
    # Exactly one of cron / every / at is set.
    cron: str | None = None
    every: float | None = None  # seconds
    offset: float = 0.0  # seconds, shifts an `every` schedule off the epoch grid
    at: datetime | None = None  # aware
    timezone: str = "UTC"  # resolved: the job's own or the config's default
    enabled: bool = True
    timeout: float | None = None  # seconds per attempt; None = no timeout
    retry: RetryPolicy = Field(default_factory=RetryPolicy)  # a factory: no deepcopy per job
    overlap: Overlap = "skip"
    max_instances: int = Field(default=1, ge=1)  # with overlap: allow
    priority: Priority = "normal"
    capture_bytes: int = Field(default=65536, ge=0)  # body / output tail kept in `output`
    # After downtime: run none, the latest, or all of the fires missed meanwhile.
    catch_up: CatchUp = "latest"
    catch_up_limit: int = Field(default=100, ge=0)  # most fires run or recorded as missed
    starting_deadline: float | None = None  # a fire later than this (seconds) is not run
    run_on_start: bool = False  # fire once at every start (cron "@reboot" implies it)
    action: ActionSpec = Field(discriminator="kind")
    # The job's strings as written where they contained ${...}: shown instead of secrets.
    _templates: dict[str, str] = PrivateAttr(default_factory=dict)
    _hash: str | None = PrivateAttr(default=None)

    def spec_hash(self) -> str:
        """Stable digest of the resolved spec: equal hashes mean the job is unchanged.

        Computed once per (immutable) spec: a reload compares every job of two configs.
        """
        if self._hash is None:
            payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, default=str)
            self._hash = hashlib.sha256(payload.encode()).hexdigest()
        return self._hash

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> JobSpec:
        copy = super().model_copy(update=update, deep=deep)
        copy._hash = None  # the copy may differ: its digest is computed afresh
        return copy

    def redacted(self) -> dict[str, Any]:
        """The spec as JSON-safe data, with no secret in it (for the database and the API)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        action = data["action"]
        for key, template in self._templates.items():
            _set_dotted(data, key, template)
        headers = action.get("headers") or {}
        for name in headers:
            if _is_secret_header(name) and f"action.headers.{name}" not in self._templates:
                headers[name] = "***"
        return data


class AdminSettings(_Frozen):
    """The admin HTTP server (`admin:`): off when the section is absent."""

    host: str | None = None  # TCP: host and port ...
    port: int | None = None
    unix_socket: Path | None = None  # ... or a unix socket path
    token: str | None = Field(default=None, repr=False)  # Bearer token; a secret
    allow_remote: bool = False  # binding beyond loopback needs this

    @property
    def address(self) -> str:
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


class Config(_Frozen):
    path: Path  # the file it came from (absolute)
    database_url: str | None = None  # None: embedded PostgreSQL under state_dir
    state_dir: Path  # absolute
    timezone: str = "UTC"
    max_concurrency: int = Field(default=64, ge=1)
    shutdown_grace: float = Field(default=30.0, ge=0)
    node: str = ""  # written to executions.node; default: the host name
    events: bool = True  # NOTIFY each final attempt on `scheduler_executions` (~20% of COPY speed)
    jobs: tuple[JobSpec, ...] = ()
    admin: AdminSettings | None = None

    def job(self, name: str) -> JobSpec | None:
        return next((job for job in self.jobs if job.name == name), None)


# ---------------------------------------------------------------------------------------------
# Loading


class Invalid(Exception):
    """A value does not convert; the message reads "expected X, got Y"."""


def got(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value) if isinstance(value, str) else f"{value!r}"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_JOB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PY_TARGET = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_SECRET_HEADER = re.compile(r"token|key|secret|password|passwd|auth|cookie|session", re.I)


def parse_duration(value: Any) -> float:
    """`500ms`, `10s`, `5m`, `1h30m`, `2d` or a number of seconds → seconds (≥ 0)."""
    expected = "expected a duration like 10s, 5m, 1h30m or a number of seconds"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{expected}, got {got(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            try:
                seconds = float(text)
            except ValueError:
                raise Invalid(f"{expected}, got {got(value)}") from None
        else:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0 or seconds != seconds:
        raise Invalid(f"expected a duration ≥ 0, got {got(value)}")
    return seconds


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise Invalid(f"expected a duration > 0, got {got(value)}")
    return seconds


def _optional_timeout(value: Any) -> float | None:
    return None if value is None else _positive_duration(value)


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise Invalid(f"expected a size in bytes such as 65536, 64KiB or 1MiB, got {got(value)}")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer ≥ {minimum}, got {got(value)}")
        if value < minimum:
            raise Invalid(f"expected an integer ≥ {minimum}, got {value}")
        return value

    return convert


def _number(minimum: float, maximum: float | None = None) -> Callable[[Any], float]:
    bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"≥ {minimum:g}"

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number {bounds}, got {got(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            raise Invalid(f"expected a number {bounds}, got {value:g}")
        return float(value)

    return convert


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a non-empty string, got {got(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {got(value)}")
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise Invalid(f"expected one of {', '.join(options)}, got {got(value)}")
        return str(value)

    return convert


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected an IANA time zone such as Europe/Berlin, got {got(value)}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"expected an IANA time zone such as Europe/Berlin, got {value!r}") from None
    return value


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a cron expression string, got {got(value)}")
    try:
        validate_cron(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return value


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise Invalid(f"expected an ISO 8601 date-time such as 2026-12-01T02:00:00Z, got {got(value)}")


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of names to strings, got {got(value)}")
    bad = [k for k, v in value.items() if isinstance(v, dict | list) or v is None]
    if bad:
        raise Invalid(f"expected string values, got {got(value[bad[0]])} for {bad[0]!r}")
    return {str(k): v if isinstance(v, str) else _scalar_text(v) for k, v in value.items()}


def _scalar_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping, got {got(value)}")
    return value


def _argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as exc:
            raise Invalid(f"expected a command line, got {value!r} ({exc})") from None
    elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        argv = tuple(str(v) for v in value)
    else:
        raise Invalid(
            f'expected a list of arguments such as ["./run.sh", "--all"], got {got(value)}'
        )
    if not argv:
        raise Invalid("expected at least the program to run, got an empty command")
    return argv


def _py_target(value: Any) -> str:
    if not isinstance(value, str) or not _PY_TARGET.fullmatch(value):
        raise Invalid(f'expected "package.module:function", got {got(value)}')
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
        raise Invalid(f"expected an http:// or https:// URL, got {got(value)}")
    return value


def _statuses(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise Invalid(f"expected HTTP status codes (100-599), got {got(item)}")
    return tuple(items)


def _method(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]+", value):
        raise Invalid(f"expected an HTTP method such as GET or POST, got {got(value)}")
    return value.upper()


def _any(value: Any) -> Any:
    return value


def _body(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string (use `json:` for structured data), got {got(value)}")
    return value


Converter = Callable[[Any], Any]

RETRY_FIELDS: dict[str, Converter] = {
    "attempts": _integer(1),
    "delay": parse_duration,
    "backoff": _number(1),
    "max_delay": parse_duration,
    "jitter": _number(0, 1),
}
HTTP_FIELDS: dict[str, Converter] = {
    "method": _method,
    "url": _url,
    "headers": _str_map,
    "params": _str_map,
    "json": _any,
    "body": _body,
    "expect": _statuses,
}
SCHEDULE_KEYS = ("cron", "every", "at")
ACTION_KEYS = ("http", "command", "shell", "python")
COMMAND_ONLY = ("env", "cwd", "kill_grace")
PYTHON_ONLY = ("args",)
JOB_FIELDS: dict[str, Converter] = {
    "cron": _cron,
    "every": _positive_duration,
    "at": _datetime,
    "offset": parse_duration,
    "timezone": _timezone,
    "enabled": _boolean,
    "timeout": _optional_timeout,
    "retry": _mapping,
    "overlap": _choice("skip", "allow", "replace"),
    "max_instances": _integer(1),
    "priority": _choice("high", "normal", "low"),
    "capture_bytes": _size,
    "http": _mapping,
    "command": _argv,
    "shell": _string,
    "env": _str_map,
    "cwd": _string,
    "kill_grace": parse_duration,
    "python": _py_target,
    "args": _mapping,
    "catch_up": _choice("none", "latest", "all"),
    "catch_up_limit": _integer(0),
    "starting_deadline": _optional_timeout,
    "run_on_start": _boolean,
}
TOP_FIELDS: dict[str, Converter] = {
    "database": _mapping,
    "state_dir": _string,
    "timezone": _timezone,
    "max_concurrency": _integer(1),
    "shutdown_grace": parse_duration,
    "node": _string,
    "events": _boolean,
    "defaults": _mapping,
    "jobs": _mapping,
    "admin": _mapping,
}
ENV_OVERRIDES: dict[str, tuple[str, Converter]] = {
    "SCHEDULER_MAX_CONCURRENCY": ("max_concurrency", lambda v: _integer(1)(_env_int(v))),
    "SCHEDULER_TIMEZONE": ("timezone", _timezone),
}


def _env_int(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


class _Problems:
    """Collects ``file:line: path: message`` lines."""

    def __init__(self, display: str, source: yamlsource.Source) -> None:
        self.display = display
        self.source = source
        self.items: list[tuple[int, str]] = []

    def add(self, path: yamlsource.Path, message: str, line: int | None = None) -> None:
        where = ".".join(str(p) for p in path)
        at = line if line is not None else self.source.line(path)
        self.items.append(
            (
                at,
                f"{self.display}:{at}: {where}: {message}"
                if where
                else f"{self.display}:{at}: {message}",
            )
        )

    def convert(
        self,
        fields: Mapping[str, Converter],
        data: Mapping[str, Any],
        path: yamlsource.Path,
        *,
        origin: Callable[[str], yamlsource.Path] | None = None,
    ) -> dict[str, Any]:
        """Convert every known key of ``data``; unknown keys are problems (with a suggestion)."""
        out: dict[str, Any] = {}
        for key, value in data.items():
            where = origin(key) if origin else (*path, key)
            if key not in fields:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                self.add((*path, key), f"unknown key {key!r}{suggestion}", self.source.line(where))
                continue
            try:
                out[key] = fields[key](value)
            except Invalid as exc:
                self.add((*path, key), str(exc), self.source.line(where))
        return out


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a large config allocates millions of objects and no garbage cycles; without this,
    repeated full collections over the growing heap made 100k jobs take twice as long."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    display = str(path)
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read config file: {exc.strerror or exc}"]) from None
    try:
        with _gc_paused():
            source = yamlsource.parse(text, environ)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{display}:{line}: invalid YAML: {problem}"]) from None
    problems = _Problems(display, source)
    for p_path, p_line, message in source.problems:
        problems.add(p_path, message, p_line)
    with _gc_paused():
        config = _build_config(source, file.resolve(), environ, problems)
    if problems.items:
        raise ConfigError([message for _, message in sorted(problems.items, key=lambda x: x[0])])
    assert config is not None
    return config


def _build_config(
    source: yamlsource.Source, file: Path, environ: Mapping[str, str], problems: _Problems
) -> Config | None:
    data = source.data
    if data is None:
        problems.add((), "the file is empty: expected a mapping with a `jobs:` section")
        return None
    if not isinstance(data, dict):
        problems.add((), f"expected a mapping at the top level, got {got(data)}")
        return None
    top = problems.convert(TOP_FIELDS, data, ())
    database = top.get("database", {})
    db_url = _database_url(database, problems)
    if environ.get("SCHEDULER_DATABASE_URL"):
        db_url = environ["SCHEDULER_DATABASE_URL"]
    for var, (key, convert) in ENV_OVERRIDES.items():
        if var in environ and environ[var] != "":
            try:
                top[key] = convert(environ[var])
            except Invalid as exc:
                problems.items.append((0, f"{problems.display}: environment {var}: {exc}"))
    timezone = top.get("timezone", "UTC")
    defaults = top.get("defaults", {})
    jobs_data = top.get("jobs", {})
    if "jobs" not in data:
        problems.add((), "expected a `jobs:` mapping, found none")
    jobs = [
        job
        for name, spec in jobs_data.items()
        if (job := _build_job(str(name), spec, defaults, timezone, source, problems)) is not None
    ]
    admin = _admin(top["admin"], file.parent, problems) if "admin" in top else None
    state_dir = top.get("state_dir") or environ.get("STATE_DIRECTORY") or "./var"
    state_path = Path(str(state_dir).split(":")[0]).expanduser()
    if not state_path.is_absolute():
        state_path = file.parent / state_path
    try:
        return Config(
            path=file,
            database_url=db_url,
            state_dir=state_path.resolve(),
            timezone=timezone,
            max_concurrency=top.get("max_concurrency", 64),
            shutdown_grace=top.get("shutdown_grace", 30.0),
            node=top.get("node") or socket.gethostname(),
            events=top.get("events", True),
            jobs=tuple(jobs),
            admin=admin,
        )
    except Exception as exc:  # noqa: BLE001 - reported as a problem, never a traceback
        problems.add((), f"invalid configuration: {exc}")
        return None


ADMIN_KEYS = ("listen", "token", "allow_remote")


def _admin(data: Mapping[str, Any], base: Path, problems: _Problems) -> AdminSettings | None:
    """`admin: {listen: 127.0.0.1:8089 | /path/to.sock, token: ..., allow_remote: false}`."""
    ok = True
    for key in data:
        if key not in ADMIN_KEYS:
            problems.add(("admin", key), f"unknown key {key!r}; expected one of {list(ADMIN_KEYS)}")
            ok = False
    allow_remote = data.get("allow_remote", False)
    if not isinstance(allow_remote, bool):
        problems.add(("admin", "allow_remote"), f"expected true or false, got {got(allow_remote)}")
        return None
    token = data.get("token")
    if token is not None and not isinstance(token, str):
        problems.add(("admin", "token"), f"expected a string, got {got(token)}")
        return None
    listen = data.get("listen")
    if "listen" not in data:
        problems.add(
            ("admin",), "missing `listen:` (host:port like 127.0.0.1:8089, or a unix socket path)"
        )
        return None
    if not isinstance(listen, str) or not listen.strip():
        problems.add(
            ("admin", "listen"),
            f"expected host:port (127.0.0.1:8089) or a unix socket path, got {got(listen)}",
        )
        return None
    try:
        where = _listen_address(listen.strip(), base, allow_remote)
    except Invalid as exc:
        problems.add(("admin", "listen"), str(exc))
        return None
    if allow_remote and not token:
        problems.add(
            ("admin", "allow_remote"),
            "reachable beyond this machine without a token: set admin.token as well",
        )
        return None
    if not ok:
        return None
    return AdminSettings(**where, token=token or None, allow_remote=allow_remote)


def _listen_address(listen: str, base: Path, allow_remote: bool) -> dict[str, Any]:
    if listen.startswith(("unix:", "/", "./", "../")):
        path = Path(listen.removeprefix("unix:")).expanduser()
        return {"unix_socket": path if path.is_absolute() else (base / path).resolve()}
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Invalid(f"expected host:port (127.0.0.1:8089) or a unix socket path, got {listen!r}")
    if not allow_remote and not _is_loopback(host):
        raise Invalid(
            f"{listen!r} is reachable beyond this machine; listen on 127.0.0.1 or a unix "
            "socket, or set `allow_remote: true` (with a token) if that is what you want"
        )
    return {"host": host or "0.0.0.0", "port": int(port_text)}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _database_url(database: Mapping[str, Any], problems: _Problems) -> str | None:
    for key in database:
        if key != "url":
            problems.add(("database", key), f"unknown key {key!r}; expected only 'url'")
    url = database.get("url")
    if url in (None, ""):
        return None
    if not isinstance(url, str) or not re.match(r"postgres(ql)?://", url):
        problems.add(
            ("database", "url"),
            f"expected a postgresql:// URL or nothing (embedded PostgreSQL), got {got(url)}",
        )
        return None
    return url


def _merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _build_job(
    name: str,
    spec: Any,
    defaults: Mapping[str, Any],
    timezone: str,
    source: yamlsource.Source,
    problems: _Problems,
) -> JobSpec | None:
    path: yamlsource.Path = ("jobs", name)
    if not _JOB_NAME.fullmatch(name):
        problems.add(path, f"expected a job name of letters, digits, '_', '.', '-', got {name!r}")
    if not isinstance(spec, dict):
        problems.add(path, f"expected a mapping of job fields, got {got(spec)}")
        return None
    # Schedule and action choice belong to each job, never to defaults.
    merged = _merge(
        {k: v for k, v in defaults.items() if k not in SCHEDULE_KEYS + ACTION_KEYS}, spec
    )

    def origin(key: str) -> yamlsource.Path:
        return (*path, key) if key in spec else ("defaults", key)

    before = len(problems.items)
    fields = problems.convert(JOB_FIELDS, merged, path, origin=origin)
    schedules = [k for k in SCHEDULE_KEYS if k in merged]
    actions = [k for k in ACTION_KEYS if k in merged]
    if len(schedules) != 1:
        problems.add(
            path,
            "expected exactly one of cron, every, at, got "
            + (" and ".join(schedules) if schedules else "none"),
        )
    if len(actions) != 1:
        problems.add(
            path,
            "expected exactly one action (http, command, shell, python), got "
            + (" and ".join(actions) if actions else "none"),
        )
    if "offset" in merged and "every" not in merged:
        problems.add((*path, "offset"), "`offset` only applies to `every` schedules")
    kind = actions[0] if len(actions) == 1 else None
    for key in COMMAND_ONLY:
        if key in spec and kind not in ("command", "shell"):
            problems.add((*path, key), f"`{key}` only applies to command and shell jobs")
    for key in PYTHON_ONLY:
        if key in spec and kind != "python":
            problems.add((*path, key), f"`{key}` only applies to python jobs")
    retry = _retry(fields.get("retry"), path, origin, problems)
    action = _action(kind, fields, merged, path, origin, problems) if kind else None
    if len(problems.items) > before or action is None or retry is None:
        return None
    job = JobSpec(
        name=name,
        cron=fields.get("cron"),
        every=fields.get("every"),
        offset=fields.get("offset", 0.0),
        at=_aware(fields.get("at"), fields.get("timezone", timezone)),
        timezone=fields.get("timezone", timezone),
        enabled=fields.get("enabled", True),
        timeout=fields.get("timeout"),
        retry=retry,
        overlap=fields.get("overlap", "skip"),
        max_instances=fields.get("max_instances", 1),
        priority=fields.get("priority", "normal"),
        capture_bytes=fields.get("capture_bytes", 65536),
        catch_up=fields.get("catch_up", "latest"),
        catch_up_limit=fields.get("catch_up_limit", 100),
        starting_deadline=fields.get("starting_deadline"),
        run_on_start=fields.get("run_on_start", False) or _is_reboot(fields.get("cron")),
        action=action,
    )
    job._templates.update(_job_templates(source, path, kind))
    return job


_NO_RETRY = RetryPolicy()  # frozen: one instance shared by every job without `retry`


def _is_reboot(cron: str | None) -> bool:
    return cron is not None and cron.strip().lower() == "@reboot"


def _aware(at: datetime | None, timezone: str) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(timezone))


def _retry(
    data: Mapping[str, Any] | None,
    path: yamlsource.Path,
    origin: Callable[[str], yamlsource.Path],
    problems: _Problems,
) -> RetryPolicy | None:
    if data is None:
        return _NO_RETRY
    where = origin("retry")
    fields = problems.convert(
        RETRY_FIELDS, data, (*path, "retry"), origin=lambda key: (*where, key)
    )
    return RetryPolicy(**fields) if len(fields) == len(data) else None


def _action(
    kind: str,
    fields: Mapping[str, Any],
    merged: Mapping[str, Any],
    path: yamlsource.Path,
    origin: Callable[[str], yamlsource.Path],
    problems: _Problems,
) -> ActionSpec | None:
    if kind == "http":
        http = fields.get("http")
        if http is None:
            return None
        where = origin("http")
        conv = problems.convert(
            HTTP_FIELDS, http, (*path, "http"), origin=lambda key: (*where, key)
        )
        if "url" not in http:
            problems.add((*path, "http"), "expected a `url`, found none")
        if "json" in http and "body" in http:
            problems.add((*path, "http"), "expected `json` or `body`, got both")
        if len(conv) != len(http) or "url" not in conv or ("json" in http and "body" in http):
            return None
        json_body = conv.pop("json", None)
        return HttpSpec(json_body=json_body, **conv)
    if kind in ("command", "shell"):
        if kind not in fields:
            return None
        return CommandSpec(
            argv=fields.get("command"),
            shell=fields.get("shell"),
            env=fields.get("env", {}),
            cwd=fields.get("cwd"),
            kill_grace=fields.get("kill_grace", 5.0),
        )
    if "python" not in fields:
        return None
    return PythonSpec(target=fields["python"], args=fields.get("args", {}))


def _job_templates(
    source: yamlsource.Source, path: yamlsource.Path, kind: str | None
) -> dict[str, str]:
    """Map the job's ${...} strings to their dotted place in the model dump."""
    renames = {
        "http": "action",
        "env": "action.env",
        "command": "action.argv",
        "shell": "action.shell",
        "args": "action.args",
        "cwd": "action.cwd",
        "python": "action.target",
    }
    out: dict[str, str] = {}
    for t_path, text in source.templates.items():
        if t_path[: len(path)] != path or len(t_path) <= len(path):
            continue
        rest = [str(p) for p in t_path[len(path) :]]
        head = renames.get(rest[0], rest[0])
        if rest[0] == "http" and len(rest) > 1 and rest[1] == "json":
            rest[1] = "json_body"
        out[".".join([head, *rest[1:]])] = text
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return
        if node is None:
            return
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        node[last] = value
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value


def _is_secret_header(name: str) -> bool:
    return name.lower() in ("authorization", "proxy-authorization", "cookie") or bool(
        _SECRET_HEADER.search(name)
    )
