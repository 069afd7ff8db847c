"""The config specs: each field, its type, default and limits written once.

The fields are what a user writes (YAML or JSON); what the rest of the daemon reads on top of
them — ``JobSpec.action``, ``Config.database_url`` — is derived from them. The daemon's own
settings (admin, cluster, database) are in settings.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from scheduler_daemon.specs import action_values as av
from scheduler_daemon.specs import places
from scheduler_daemon.specs import values as v
from scheduler_daemon.specs.chains import chain_problems
from scheduler_daemon.specs.cron import REBOOT
from scheduler_daemon.specs.redaction import redact
from scheduler_daemon.specs.results import (
    DEFAULT_RESULT_MAX_BYTES,
    ItemsSpec,
    ResultMode,
    RetentionSpec,
)
from scheduler_daemon.specs.settings import AdminSpec, ClusterSpec, DatabaseSpec
from scheduler_daemon.specs.spec import PROBLEM, Problem, Spec, problems_error, problems_of

Overlap = Literal["skip", "allow", "replace"]
Priority = Literal["high", "normal", "low"]
CatchUp = Literal["none", "latest", "all"]
Delivery = Literal["at_least_once", "at_most_once"]
RUNS_MISSED = ("latest", "all")  # the catch_up values that run missed fires

Seconds = Annotated[float, v.Duration()]
PositiveSecondsOrNone = Annotated[float | None, v.Duration(positive=True, optional=True)]
StrMap = Annotated[dict[str, str], av.StrMap()]

SCHEDULE_KEYS = ("cron", "every", "at")
ACTION_KEYS = ("http", "command", "shell", "python")
COMMAND_ONLY = ("env", "inherit_env", "cwd", "kill_grace")
RESULT_ONLY = ("items",)  # needs a result: http and python jobs
PYTHON_ONLY = ("args",)


class RetrySpec(Spec):
    attempts: Annotated[int, v.Integer(1)] = 1  # total attempts, 1 = no retry
    delay: Seconds = 1.0  # before the 2nd attempt
    backoff: Annotated[float, v.Number(1)] = 2.0  # delay multiplier per further attempt
    max_delay: Seconds = 300.0  # cap on one delay
    jitter: Annotated[float, v.Number(0, 1)] = 0.0  # ± fraction of the delay, random


class HttpSpec(Spec):
    kind: ClassVar[Literal["http"]] = "http"
    method: Annotated[str, av.Method()] = "GET"
    url: Annotated[str, av.Url(), Field(description="an http:// or https:// URL")]
    headers: StrMap = Field(default_factory=dict)
    params: StrMap = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: Annotated[str | None, av.Body()] = None
    expect: Annotated[tuple[int, ...], av.Statuses()] = ()  # empty: any 2xx
    # A redirect is an answer like any other unless this is set; followed, a hop to another
    # origin loses the secret headers (a key for one API is no one else's business).
    follow_redirects: Annotated[bool, v.Boolean()] = False

    @field_validator("json_body")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return v.plain(value)  # no Templated strings left in what is sent

    @classmethod
    def key_rules(cls, data: Mapping[str, Any]) -> list[Problem]:
        both = {"json", "body"} <= data.keys()
        return [((), "expected `json` or `body`, got both")] if both else []


class CommandOptions(Spec):
    """What a command or shell job may add; a job writes them beside `command:` / `shell:`."""

    shell: Annotated[str | None, v.Text()] = None  # run by /bin/sh -c
    env: StrMap = Field(default_factory=dict)  # added to the command's environment
    # The command's environment: a minimal one (PATH, HOME, LANG, TZ ...) plus `env`, or, with
    # this, the daemon's whole environment (its admin token and database URL included) plus `env`.
    inherit_env: Annotated[bool, v.Boolean()] = False
    cwd: Annotated[str | None, v.Text()] = None
    kill_grace: Seconds = 5.0  # SIGTERM → SIGKILL delay on timeout or cancel


class CommandSpec(CommandOptions):
    kind: ClassVar[Literal["command"]] = "command"
    argv: Annotated[tuple[str, ...] | None, av.Argv()] = None  # a job's `command:`


class PythonOptions(Spec):
    args: Annotated[dict[str, Any], av.AnyMapping()] = Field(default_factory=dict)  # kwargs


class PythonSpec(PythonOptions):
    kind: ClassVar[Literal["python"]] = "python"
    target: Annotated[str, av.PyTarget()]  # a job's `python:`, "package.module:function"


ActionSpec = HttpSpec | CommandSpec | PythonSpec
PyTarget = Annotated[str | None, av.PyTarget()]


_FIELD_SETS: dict[frozenset[str], set[str]] = {}


class JobSpec(CommandOptions, PythonOptions):
    """One job as a user writes it; ``action`` is the http, command or python part of it."""

    name: Annotated[str, v.JobName()]
    # Exactly one of cron / every / at.
    cron: Annotated[str | None, v.Cron()] = None
    every: Annotated[float | None, v.Duration(positive=True)] = None
    offset: Seconds = 0.0  # shifts an `every` schedule off the epoch grid
    timezone: Annotated[str, v.Zone()] = "UTC"  # resolved: the job's own or the config's
    at: Annotated[datetime | None, v.DateTime()] = None  # aware: naive is in `timezone`
    enabled: Annotated[bool, v.Boolean()] = True
    # Per attempt; null: none. An hour by default, so that a hung job holds its schedule (with
    # `overlap: skip`, every later fire is skipped) for an hour, not until someone notices.
    timeout: PositiveSecondsOrNone = 3600.0
    retry: RetrySpec = RetrySpec()  # frozen: one instance shared by every job without `retry`
    overlap: Annotated[Overlap, v.OneOf()] = "skip"  # a fire while the job still runs
    max_instances: Annotated[int, v.Integer(1)] = 1  # with overlap: allow
    priority: Annotated[Priority, v.OneOf()] = "normal"  # admission order when slots are full
    capture_bytes: Annotated[int, v.Size()] = 65536  # body / output tail kept in `output`
    # After downtime: run none, the latest, or all of the fires missed meanwhile.
    catch_up: Annotated[CatchUp, v.OneOf()] = "latest"
    catch_up_limit: Annotated[int, v.Integer(0)] = 100  # most fires run or recorded as missed
    # at_most_once: after a crash or downtime nothing is run again or late — an abandoned attempt
    # is not retried and every missed fire is only recorded (`catch_up` is not applied).
    delivery: Annotated[Delivery, v.OneOf()] = "at_least_once"
    starting_deadline: PositiveSecondsOrNone = None  # a fire later than this is not run
    # Fire once at every start; cron "@reboot" implies it.
    run_on_start: Annotated[bool, v.Boolean()] = Field(default=False, validate_default=True)
    # What it returned, kept whole in executions.result (README: Results as data).
    result: Annotated[ResultMode, v.OneOf()] = "auto"
    result_max_bytes: Annotated[int, v.Size()] = DEFAULT_RESULT_MAX_BYTES  # larger: not kept
    items: ItemsSpec | None = None  # a list in the result → rows of job_items
    then: Annotated[tuple[str, ...], v.Names(v.JOB_NAME_RE, "job names")] = ()  # on success
    # The action: exactly one of these (`shell:` comes with the command options).
    http: HttpSpec | None = None
    command: Annotated[tuple[str, ...] | None, av.Argv()] = None
    python: PyTarget = None
    # The job's strings as written where they contained ${...}: shown instead of secrets.
    _templates: dict[str, Any] | None = PrivateAttr(default=None)
    _hash: str | None = PrivateAttr(default=None)
    _action: ActionSpec | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        # Which fields a job set: a set of its own was a quarter of a job's memory (100k jobs:
        # 70 MB), and configs hold few distinct ones. Sharing is safe: a frozen model never adds
        # to it, and pydantic's copies copy it first.
        own = self.__pydantic_fields_set__
        object.__setattr__(
            self, "__pydantic_fields_set__", _FIELD_SETS.setdefault(frozenset(own), own)
        )

    @field_validator("at")
    @classmethod
    def _aware(cls, at: datetime | None, info: ValidationInfo) -> datetime | None:
        if at is None or at.tzinfo is not None:
            return at
        return at.replace(tzinfo=ZoneInfo(info.data.get("timezone", "UTC")))

    @field_validator("run_on_start")
    @classmethod
    def _reboot(cls, run_on_start: bool, info: ValidationInfo) -> bool:
        cron = info.data.get("cron")
        return run_on_start or (cron is not None and cron.strip().lower() == REBOOT)

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A job built in code may give its action spec as ``action=`` instead of its keys."""
        action = data.get("action")
        if action is None:
            return data
        fields = {k: val for k, val in data.items() if k != "action"}
        if isinstance(action, HttpSpec):
            return {**fields, "http": action}
        if isinstance(action, PythonSpec):
            return {**fields, "python": action.target, "args": action.args}
        if isinstance(action, CommandSpec):
            own = action.model_dump(exclude_none=True, exclude={"argv"})
            command = {"command": action.argv} if action.argv is not None else {}
            return {**fields, **own, **command}
        return data

    @classmethod
    def key_rules(cls, data: Mapping[str, Any]) -> list[Problem]:
        problems: list[Problem] = []
        schedules = [k for k in SCHEDULE_KEYS if k in data]
        if len(schedules) != 1:
            got = " and ".join(schedules) if schedules else "none"
            problems.append(((), f"expected exactly one of cron, every, at, got {got}"))
        actions = [k for k in ACTION_KEYS if k in data]
        if len(actions) != 1:
            got = " and ".join(actions) if actions else "none"
            problems.append(
                ((), f"expected exactly one action (http, command, shell, python), got {got}")
            )
        if "offset" in data and "every" not in data:
            problems.append((("offset",), "`offset` only applies to `every` schedules"))
        kind = actions[0] if len(actions) == 1 else None
        for key in COMMAND_ONLY:
            if key in data and kind not in ("command", "shell"):
                problems.append(((key,), f"`{key}` only applies to command and shell jobs"))
        for key in PYTHON_ONLY:
            if key in data and kind != "python":
                problems.append(((key,), f"`{key}` only applies to python jobs"))
        if kind in ("command", "shell"):
            problems += _result_rules(data)
        return problems + _delivery_rules(data)

    def __eq__(self, other: object) -> bool:
        # Fields only: the derived action, digest and templates are caches of them.
        return type(other) is type(self) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(self.spec_hash())

    @property
    def action(self) -> ActionSpec:
        """What the job runs; built from its fields on first use."""
        if self._action is None:
            self._action = self._build_action()
        return self._action

    @property
    def kind(self) -> Literal["http", "python", "command"]:
        """The kind of its action, without building the action (100k jobs at a stop)."""
        if self.http is not None:
            return "http"
        return "python" if self.python is not None else "command"

    def _build_action(self) -> ActionSpec:
        if self.http is not None:
            return self.http
        if self.python is not None:
            return PythonSpec.model_construct(target=self.python, args=self.args)
        return CommandSpec.model_construct(
            argv=self.command,
            shell=self.shell,
            env=self.env,
            inherit_env=self.inherit_env,
            cwd=self.cwd,
            kill_grace=self.kill_grace,
        )

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
        copy._hash = None  # the copy may differ: its digest and action are derived afresh
        copy._action = None
        return copy

    def redacted(self) -> dict[str, Any]:
        """The spec as JSON-safe data, with no secret in it (for the database and the API).

        Its action is one mapping (`action: {kind, ...}`) whatever keys the job was written with.
        """
        data: dict[str, Any] = self.model_dump(
            mode="json", exclude={*ACTION_KEYS, *COMMAND_ONLY, *PYTHON_ONLY}
        )
        action = self.action
        data["action"] = {"kind": action.kind, **action.model_dump(mode="json")}
        return redact(data, self._templates or {})

    def with_templates(self, templates: dict[str, Any]) -> None:
        """Remember the job's ${...} strings as written (dotted places in the redacted dump)."""
        self._templates = templates


class Config(Spec):
    """A whole config file; ``path`` is where it was read from (validation context ``path``)."""

    database: DatabaseSpec = DatabaseSpec()
    state_dir: Annotated[Path, places.Directory()] = Field(
        default=Path("var"), validate_default=True
    )
    timezone: Annotated[str, v.Zone()] = "UTC"  # the zone of jobs without their own
    max_concurrency: Annotated[int, v.Integer(1)] = 64  # global running attempts
    shutdown_grace: Seconds = 30.0  # SIGTERM: how long in-flight attempts may finish
    node: Annotated[str, v.Text()] = Field(default_factory=socket.gethostname)  # executions.node
    events: Annotated[bool, v.Boolean()] = True  # NOTIFY each final attempt (~20% of COPY speed)
    # Execution rows waiting for the database, in memory (output and error text plus ~450 bytes
    # a row); past it, or 100,000 rows, they spill to the journal under state_dir.
    record_buffer: Annotated[int, v.Size()] = 64 * 1024 * 1024
    admin: AdminSpec | None = None
    cluster: ClusterSpec = ClusterSpec()
    retention: RetentionSpec = RetentionSpec()  # how long executions, results, items are kept
    # Where python jobs' modules are imported from: put first on sys.path at load (relative to
    # the config file's folder), before PYTHONPATH and the installed packages.
    python_path: Annotated[tuple[Path, ...], places.Directories()] = ()
    # Any job field but its schedule and action; a job's own value wins, mappings key by key.
    defaults: Annotated[dict[str, Any], av.AnyMapping()] = Field(default_factory=dict)
    jobs: tuple[JobSpec, ...]  # written as a mapping: name → job fields
    _path: Path = PrivateAttr(default=Path("config.yaml"))

    def model_post_init(self, context: Any) -> None:
        if isinstance(context, Mapping) and "path" in context:
            self._path = Path(context["path"])

    @field_validator("jobs", mode="wrap")
    @classmethod
    def _jobs_by_name(
        cls, value: Any, handler: Callable[[Any], tuple[JobSpec, ...]], info: ValidationInfo
    ) -> tuple[JobSpec, ...]:
        if isinstance(value, tuple) and all(isinstance(job, JobSpec) for job in value):
            return handler(value)  # jobs built in code (a file or JSON names them: a mapping)
        if not isinstance(value, dict):
            raise PydanticCustomError(PROBLEM, f"expected a mapping of jobs, got {v.got(value)}")
        defaults: dict[str, Any] = info.data.get("defaults", {})
        timezone: str = info.data.get("timezone", "UTC")
        jobs: list[JobSpec] = []
        problems: list[Problem] = []
        for name, body in value.items():
            job, wrong = job_from_file(name, body, defaults, timezone, info.context)
            problems += wrong
            if job is not None:
                jobs.append(job)
        if problems:
            raise problems_error("jobs", problems, value)
        return tuple(jobs)

    @classmethod
    def key_rules(cls, data: Mapping[str, Any]) -> list[Problem]:
        defaults = data.get("defaults")
        if not isinstance(defaults, dict):
            return []
        return [
            (("defaults", key), f"`{key}` cannot be a default: write it on each job")
            for key in (*SCHEDULE_KEYS, *ACTION_KEYS, "then")
            if key in defaults
        ] + [(("defaults", *loc), m) for loc, m in _delivery_rules(defaults)]

    def value_rules(self) -> list[Problem]:
        problems: list[Problem] = []
        if any(map(attrgetter("then"), self.jobs)):  # at C speed: 100k jobs
            graph = {job.name: job.then for job in self.jobs}
            problems += [(("jobs", n, "then"), why) for n, why in chain_problems(graph, graph)]
        if self.cluster.enabled and self.database.url is None:
            problems.append(
                (
                    ("cluster", "enabled"),
                    "cluster mode needs one PostgreSQL shared by every replica: set database.url "
                    "(the embedded PostgreSQL is this daemon's own)",
                )
            )
        return problems

    @property
    def path(self) -> Path:
        return self._path

    @property
    def database_url(self) -> str | None:
        return self.database.url

    def job(self, name: str) -> JobSpec | None:
        return next((job for job in self.jobs if job.name == name), None)


def job_from_file(
    name: Any, body: Any, defaults: Mapping[str, Any], timezone: str, context: Any
) -> tuple[JobSpec | None, list[Problem]]:
    """One job of a config file's `jobs:` mapping, over the config's defaults and zone; or its
    problems (places under `jobs`)."""
    if not isinstance(body, dict):
        return None, [((name,), f"expected a mapping of job fields, got {v.got(body)}")]
    problems: list[Problem] = []
    if "name" in body:
        problems.append(((name, "name"), "unknown key 'name' (a job is named by its key)"))
    fields = {**with_defaults(body, defaults), "name": str(name)}
    fields.setdefault("timezone", timezone)
    try:
        # by_name=False: a user writes `json:`, never the field name behind it.
        return JobSpec.model_validate(fields, context=context, by_name=False), problems
    except ValidationError as exc:
        return None, problems + [((name, *_under_job(loc)), m) for loc, m in problems_of(exc)]


def _under_job(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A bad name is the job's key: reported at the job, not at a `name` field it never wrote."""
    return () if loc == ("name",) else loc


def _result_rules(data: Mapping[str, Any]) -> list[Problem]:
    """A command's output is text (its tail in `output`), never a result."""
    problems: list[Problem] = [
        ((key,), f"`{key}` only applies to http and python jobs (a command has no result)")
        for key in RESULT_ONLY
        if key in data
    ]
    if data.get("result") == "json":
        problems.append((("result",), "`result: json` only applies to http and python jobs"))
    return problems


def _delivery_rules(data: Mapping[str, Any]) -> list[Problem]:
    """Running missed fires contradicts at-most-once delivery when both are written together."""
    if data.get("delivery") != "at_most_once" or data.get("catch_up") not in RUNS_MISSED:
        return []
    return [
        (
            ("catch_up",),
            f"`catch_up: {data['catch_up']}` runs missed fires, which `delivery: at_most_once`"
            " never does: write `catch_up: none` or leave it out",
        )
    ]


def with_defaults(own: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A job's fields over the config's defaults: mappings merged key by key; the schedule, the
    action and the options of another kind of action are never taken from defaults.

    A default `catch_up` is not taken by an at_most_once job: it would not be applied.
    """
    kind = next((k for k in ACTION_KEYS if k in own), None)
    skipped = {*SCHEDULE_KEYS, *ACTION_KEYS, "then"}
    if own.get("delivery", defaults.get("delivery")) == "at_most_once":
        skipped.add("catch_up")
    if kind not in ("command", "shell"):
        skipped.update(COMMAND_ONLY)
    if kind != "python":
        skipped.update(PYTHON_ONLY)
    if kind in ("command", "shell"):
        skipped.update(RESULT_ONLY)
        if defaults.get("result") == "json":
            skipped.add("result")
    merged = {k: val for k, val in defaults.items() if k not in skipped}
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
