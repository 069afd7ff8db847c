"""The admin API's bodies as pydantic models (/openapi.json derives from them).

Handlers build these models and the API serialises them. The query strings' models are in
api_queries.py, the refusals in api_errors.py (both importable from here too).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
)

from scheduler_daemon.operation.api_errors import ApiError as ApiError
from scheduler_daemon.operation.api_errors import InvalidJob as InvalidJob
from scheduler_daemon.operation.api_queries import ExecutionsQuery as ExecutionsQuery
from scheduler_daemon.operation.api_queries import HealthQuery as HealthQuery
from scheduler_daemon.operation.api_queries import HistoryQuery as HistoryQuery
from scheduler_daemon.operation.api_queries import Instant, Kind
from scheduler_daemon.operation.api_queries import ItemsQuery as ItemsQuery
from scheduler_daemon.operation.api_queries import Query as Query
from scheduler_daemon.operation.api_queries import RunsQuery as RunsQuery
from scheduler_daemon.operation.api_queries import WindowQuery as WindowQuery
from scheduler_daemon.operation.api_queries import parse_instant as parse_instant
from scheduler_daemon.running.records import FireKind, Status
from scheduler_daemon.specs import Priority
from scheduler_daemon.storage import queries, rows
from scheduler_daemon.storage.queries import RunState

# -- response bodies -------------------------------------------------------------------------------


class Body(BaseModel):
    # Not extra="forbid": the document would close every body, and adding a field is compatible.
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class Problem(Body):
    path: str = Field(description="where in the body, dotted (http.url, retry.attempts); '' is "
                      "the body as a whole")  # fmt: skip
    message: str


class Error(Body):
    error: str = Field(description="a stable code, e.g. unknown_job or bad_parameter")
    message: str = Field(description="for humans")
    problems: list[Problem] | None = Field(
        default=None,
        description="an invalid body (422 invalid_job, invalid_options): every problem in it",
    )


class ConfigState(Body):
    path: str
    jobs: int
    last_reload: Literal["ok", "failed"]
    reload_error: str | None


class ReplicaClaims(Body):
    won: int
    lost: int
    takeovers: int


class ClusterState(Body):
    node: str = Field(description="this replica's node name")
    live: list[str] = Field(
        description="the replicas heartbeating now (this one included, sorted): those that "
        "share the fires"
    )
    connected: bool = Field(
        description="this replica's heartbeat goes through; false: it claims no fire"
    )
    claims: dict[str, int] = Field(
        default_factory=dict,
        description="this replica's claims since it started, by result: won, lost, unreachable",
    )
    takeovers: int = Field(
        default=0, description="fires this replica ran for a replica that had not claimed them"
    )
    replicas: dict[str, ReplicaClaims] = Field(
        default_factory=dict,
        description="each live replica's claims since it started, as its last heartbeat said",
    )


class Health(Body):
    status: Literal["ok", "degraded"]
    problems: list[str]
    database: Literal["connected", "buffering"]
    pending_rows: int
    config: ConfigState
    started_at: Instant
    uptime_s: float
    cluster: ClusterState | None = Field(
        default=None, description="cluster mode's view; null: this daemon runs alone"
    )


class JobStats(Body):
    """A job's attempts in the window (running attempts left out; skipped fires are not runs)."""

    job_name: str
    runs: int
    succeeded: int
    failed: int
    skipped: int
    success_rate: float | None
    avg_duration_ms: float | None
    p95_duration_ms: float | None
    avg_drift_ms: float | None
    p95_drift_ms: float | None
    max_drift_ms: float | None
    max_catchup_delay_ms: float | None
    last_status: Status | None
    last_finished_at: Instant | None


Source = Literal["config", "api"]


class Job(Body):
    name: str
    source: Source = Field(description="config: the config file's; api: kept in the database")
    version: int | None = Field(description="an API job's version (its ETag); null: config")
    kind: Kind
    schedule: str | None
    schedule_in_words: str
    enabled: bool
    paused: bool
    paused_at: Instant | None
    next_fires: list[Instant]
    running: int
    stats: JobStats | None


class JobList(Body):
    since: Instant
    jobs: list[Job]


# Left out of pages of attempts (up to result_max_bytes each): GET /executions/{id} has it.
DETAIL_ONLY = queries.DETAIL_ONLY


def _execution_fields() -> dict[str, Any]:
    """The API's Execution: the database id, then every field of the row (storage/rows.py) but
    those only one attempt's body carries."""
    fields: dict[str, Any] = {"id": (int, ...)}
    for name, python_type in rows.FIELD_TYPES.items():
        if name in DETAIL_ONLY:
            continue
        field_type: Any = Instant if python_type is datetime else python_type
        fields[name] = (field_type | None if name in rows.NULLABLE else field_type, ...)
    return fields


_RESULT = Field(
    description="the JSON document the attempt returned (an HTTP job's JSON response, a "
    "Python job's return value), whole; null: none kept (not JSON, over result_max_bytes — "
    "result_bytes and error say — or a failed attempt)"
)
if TYPE_CHECKING:

    class Execution(Body):
        id: int

    class ExecutionDetail(Execution):
        result: Any

else:
    Execution = create_model(
        "Execution",
        __base__=Body,
        __doc__="One attempt of a fire (its result: GET /executions/{id})",
        **_execution_fields(),
    )
    ExecutionDetail = create_model(
        "ExecutionDetail",
        __base__=Execution,
        __doc__="One attempt of a fire, with its result",
        result=(Any, _RESULT),
    )


class ExecutionPage(Body):
    executions: list[Execution]
    next_cursor: str | None


class JobItem(Body):
    """One element of the list a job's `items.path` found in an attempt's result."""

    fire_id: uuid.UUID
    attempt: int
    scheduled_at: Instant
    idx: int = Field(description="its place in the list, from 0")
    key: str | None = Field(description="its `items.key`, as text; null: no key configured")
    item: Any = Field(description="the element, as JSON")


class ItemPage(Body):
    items: list[JobItem]
    next_cursor: str | None


class HistorySize(Body):
    """What the history takes in the database: tables, TOAST and indexes (partitions summed)."""

    executions_bytes: int
    job_items_bytes: int
    total_bytes: int


class RunningFire(Body):
    fire_id: uuid.UUID
    scheduled_at: Instant
    state: str
    attempt: int


class JobDetail(Job):
    spec: dict[str, Any] = Field(description="the job as configured, secrets redacted")
    definition: dict[str, Any] | None = Field(
        default=None,
        description='an API job as written (what PUT takes; secrets as {"env": NAME}); null: '
        "config",
    )
    created_at: Instant | None = None
    updated_at: Instant | None = None
    since: Instant
    last_attempts: list[Execution] | None
    running_fires: list[RunningFire]


class Totals(Body):
    runs: int
    succeeded: int
    failed: int
    skipped: int
    success_rate: float | None


class JobStatsOfKind(JobStats):
    kind: Kind | None = Field(description="null: no longer configured")


class ResponseTimes(Body):
    job_name: str
    avg_duration_ms: float | None
    p95_duration_ms: float | None
    runs: int


class Minute(Body):
    minute: Instant
    attempts: int
    failed: int


class StatsReport(Body):
    since: Instant
    totals: Totals
    jobs: list[JobStatsOfKind]
    http_response_times: list[ResponseTimes]
    per_minute: list[Minute]


class Triggered(Body):
    fire_id: uuid.UUID
    job: str
    trigger: Literal[FireKind.MANUAL]
    scheduled_at: Instant
    executions: str = Field(description="where its attempts appear")


class PauseState(Body):
    job: str
    paused: bool
    paused_at: Instant | None


class Run(Body):
    id: uuid.UUID
    job: str = Field(description="its job's name (an ad-hoc run's: its body's, or adhoc-<id>)")
    run_at: Instant
    overrides: dict[str, Any] | None
    spec: dict[str, Any] | None = Field(
        description="an ad-hoc run's job, secrets redacted (null: a configured job's run, or an "
        "ad-hoc job that the daemon's rules no longer allow)"
    )
    options: dict[str, Any] | None = Field(description="its own priority and retry, as given")
    state: RunState
    created_at: Instant | None
    started_at: Instant | None
    cancelled_at: Instant | None
    executions: str


class RunOutcome(Body):
    """How a started run went: its attempts so far, the last one's result."""

    status: Status = Field(
        description="the last attempt's; running while the fire is in flight (an attempt runs "
        "or a retry waits)"
    )
    attempts: int
    started_at: Instant | None = Field(description="the first attempt's start")
    finished_at: Instant | None = Field(description="the last attempt's end")
    duration_ms: float | None
    error: str | None
    http_status: int | None
    exit_code: int | None


class RunDetail(Run):
    outcome: RunOutcome | None = Field(
        description="null while pending or cancelled, and until its first attempt is recorded"
    )


class RunList(Body):
    runs: list[Run]


# -- request bodies --------------------------------------------------------------------------------
# What the document says a client may send; the values are checked against the job's kind by
# operation/overrides.py, which answers `bad_overrides`.


class Overrides(Body):
    """Per-run arguments: `args` (python jobs: keyword arguments merged over the configured
    ones) or `params` / `json` (HTTP jobs)."""

    model_config = ConfigDict(extra="forbid")

    args: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, str | float] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")


class StoredJob(Body):
    """An API job as stored, after a write."""

    name: str
    source: Source
    version: int
    created_at: Instant
    updated_at: Instant
    definition: dict[str, Any] = Field(description='as written; secrets as {"env": NAME}')
    spec: dict[str, Any] = Field(description="the job with every default, secrets redacted")
    next_fires: list[Instant]


class Deleted(Body):
    name: str
    deleted: bool
    version: int = Field(description="the version the deletion made")


class JobPatch(BaseModel):
    """A JSON merge patch (RFC 7396) over the job as written: a member replaces the field (a
    mapping merges into it), null removes it."""

    model_config = ConfigDict(extra="allow")


class RunRequest(Overrides):
    """A one-off run at ``at`` (default: now) of a configured job (its name), or of an ad-hoc
    job (a job's fields, as in the config file, without a schedule; `name` optional)."""

    job: str | dict[str, Any] = Field(
        description="a configured job's name, or an ad-hoc job's body (refused with 422 "
        "invalid_job, every problem listed, when it does not hold)"
    )
    at: Instant | None = None
    priority: Priority | None = Field(None, description="this run's (default: the job's)")
    retry: dict[str, Any] | None = Field(
        None, description="this run's retry policy, as a job's `retry:` (default: the job's)"
    )
