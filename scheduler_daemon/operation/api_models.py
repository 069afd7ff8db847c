"""The admin API's bodies and query strings as pydantic models (/openapi.json derives from them).

Handlers build these models and the API serialises them; each endpoint's query string is checked
by its query model. Bad input is an ApiError carrying one of the API's stable codes (README: Admin
API): ``bad_parameter`` with "<name>: <what was expected>", ``unknown_parameter`` for a name the
endpoint does not take.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from scheduler_daemon.running.records import FireKind, Status
from scheduler_daemon.specs import Invalid, Priority, parse_duration
from scheduler_daemon.specs.api_job import JobProblems
from scheduler_daemon.storage import rows
from scheduler_daemon.storage.queries import RunState

MAX_PAGE = 500
DEFAULT_WINDOW = 24 * 3600.0
MAX_WINDOW = 366 * 86400.0


class ApiError(Exception):
    """A refusal with an HTTP status and a stable code; the API answers it as an Error body.
    ``problems``: each thing wrong with a body, at its place in it (a 422)."""

    def __init__(
        self, status: int, code: str, message: str, problems: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.problems = problems


class InvalidJob(ApiError):
    """422: a job body (or a run's options) with problems, every one listed at its path."""

    def __init__(self, exc: JobProblems, code: str = "invalid_job", what: str = "job") -> None:
        count = len(exc.problems)
        message = f"the {what} has {count} problem{'s' * (count != 1)}: {exc}"
        super().__init__(422, code, message, exc.as_list())


# -- value types ---------------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.isoformat()


# An instant as ``datetime.isoformat()`` writes it ("+00:00", the offset kept), as the API always
# answered (pydantic's own JSON would write "Z").
Instant = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Kind = Literal["http", "command", "python"]


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 instant with an offset, in UTC; ValueError says what was expected."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date-time")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected ISO 8601 like 2026-11-25T14:00:00Z, got {value!r}") from None
    if at.tzinfo is None:
        raise ValueError(f"add a UTC offset or Z to {value!r}")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


def _page_size(value: Any) -> int:
    if (
        isinstance(value, str)
        and re.fullmatch(r"[0-9]{1,9}", value)
        and 1 <= int(value) <= MAX_PAGE
    ):
        return int(value)
    raise ValueError(f"expected a number from 1 to {MAX_PAGE}")


def _window(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except Invalid as exc:
        raise ValueError(str(exc)) from None
    if not 0 < seconds <= MAX_WINDOW:
        raise ValueError("expected between 1s and 366d")
    return seconds


def _member_of(enum: type[Status] | type[FireKind]) -> BeforeValidator:
    allowed = [member.value for member in enum]

    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"expected one of {allowed}, got {value!r}")
        return value

    return BeforeValidator(check)


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _uuid(value: Any) -> uuid.UUID:
    # The form the API writes ids in only (uuid.UUID would also take braces, urn:, underscores).
    if isinstance(value, str) and _UUID.fullmatch(value):
        return uuid.UUID(value)
    raise ValueError(f"expected a UUID (8-4-4-4-12 hex digits), got {value!r}")


def _flag(value: Any) -> bool:
    return value in ("1", "true")


QueryInstant = Annotated[
    datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
PageSize = Annotated[
    int,
    BeforeValidator(_page_size),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
]
Window = Annotated[
    float,
    BeforeValidator(_window),
    WithJsonSchema({"type": "string", "example": "24h"}),
]
QueryUuid = Annotated[
    uuid.UUID, BeforeValidator(_uuid), WithJsonSchema({"type": "string", "format": "uuid"})
]
Flag = Annotated[
    bool, BeforeValidator(_flag), WithJsonSchema({"type": "string", "enum": ["1", "true"]})
]


# -- query strings -------------------------------------------------------------------------------


class Query(BaseModel):
    """An endpoint's query parameters; one without any takes this one (and refuses every name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> Self:
        """The query from its (name, value) pairs: the first value of a name counts, an empty
        value is the same as none. Raises ApiError 400 on an unknown name or a bad value."""
        given: dict[str, str] = {}
        for name, value in pairs:
            given.setdefault(name, value)
        for name in given:
            if name not in cls.model_fields:
                takes = ", ".join(cls.model_fields) or "no parameters"
                raise ApiError(
                    400, "unknown_parameter", f"unknown query parameter {name!r}; takes: {takes}"
                )
        try:
            return cls.model_validate({k: v for k, v in given.items() if v != ""})
        except ValidationError as exc:
            raise ApiError(400, "bad_parameter", _first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    return f"{name}: {cause if isinstance(cause, ValueError) else error['msg']}"


class HealthQuery(Query):
    ready: Flag = Field(False, description="503 instead of 200 when degraded (readiness, alerting)")


class WindowQuery(Query):
    window: Window | None = Field(None, description="statistics window (1s to 366d; 24h)")

    def start(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.window or DEFAULT_WINDOW)


class HistoryQuery(Query):
    status: Annotated[Status, _member_of(Status)] | None = Field(
        None, description="only attempts with this status"
    )
    trigger: Annotated[FireKind, _member_of(FireKind)] | None = Field(
        None, description="only fires of this kind"
    )
    since: QueryInstant | None = Field(
        None, description="scheduled at or after (ISO 8601 with offset)"
    )
    until: QueryInstant | None = Field(None, description="scheduled before (ISO 8601 with offset)")
    fire_id: QueryUuid | None = Field(
        None, description="only this fire's attempts (a one-off run's fire_id is the run's id)"
    )
    limit: PageSize = Field(50, description="page size (50)")
    cursor: str | None = Field(None, description="next_cursor of the previous page")


class ExecutionsQuery(HistoryQuery):
    job: Annotated[str, BeforeValidator(_no_nul)] | None = Field(None, description="only this job")


class RunsQuery(Query):
    pending: Flag = Field(False, description="pending runs only")
    limit: PageSize = Field(100, description="page size (100)")


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


class ClusterState(Body):
    node: str = Field(description="this replica's node name")
    live: list[str] = Field(
        description="the replicas heartbeating now (this one included, sorted): those that "
        "share the fires"
    )
    connected: bool = Field(
        description="this replica's heartbeat goes through; false: it claims no fire"
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


def _execution_fields() -> dict[str, Any]:
    """The API's Execution: the database id, then every field of the row (storage/rows.py)."""
    fields: dict[str, Any] = {"id": (int, ...)}
    for name, python_type in rows.FIELD_TYPES.items():
        field_type: Any = Instant if python_type is datetime else python_type
        fields[name] = (field_type | None if name in rows.NULLABLE else field_type, ...)
    return fields


if TYPE_CHECKING:

    class Execution(Body):
        id: int

else:
    Execution = create_model(
        "Execution", __base__=Body, __doc__="One attempt of a fire", **_execution_fields()
    )


class ExecutionPage(Body):
    executions: list[Execution]
    next_cursor: str | None


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
