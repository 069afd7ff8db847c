"""The admin API's query strings and the values they take, as pydantic models.

Each endpoint's query string is checked by its query model: a bad value is ``bad_parameter``
with "<name>: <what was expected>", a name the endpoint does not take ``unknown_parameter``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from scheduler_daemon.operation.api_errors import ApiError
from scheduler_daemon.running.records import FireKind, Status
from scheduler_daemon.specs import Invalid, parse_duration

MAX_PAGE = 500
DEFAULT_WINDOW = 24 * 3600.0
MAX_WINDOW = 366 * 86400.0


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


class ItemsQuery(Query):
    since: QueryInstant | None = Field(
        None, description="scheduled at or after (ISO 8601 with offset)"
    )
    limit: PageSize = Field(50, description="page size (50)")
    cursor: str | None = Field(None, description="next_cursor of the previous page")


class RunsQuery(Query):
    pending: Flag = Field(False, description="pending runs only")
    limit: PageSize = Field(100, description="page size (100)")
