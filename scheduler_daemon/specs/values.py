"""Config values: how each kind is parsed and how the JSON Schema describes it, in one place.

Each kind is a ``Value`` used as ``Annotated`` metadata on a spec field: it replaces pydantic's own
(lax) parsing, so a value is accepted only as today's converters accepted it, and a refusal reads
"expected X, got Y" whether the value came from YAML or JSON.
"""

from __future__ import annotations

import abc
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from scheduler_daemon.specs.cron import validate_cron


class Invalid(Exception):
    """A value does not convert; the message reads "expected X, got Y"."""


class Templated(str):
    """A string that came from ``${...}``: typed only by its field, never shown in a message.

    A field that is not a string (an integer, a boolean ...) parses it; ``got()`` names it by
    its template ("the value of ${N}"), so a secret never reaches a message or a log.
    """

    template: str

    def __new__(cls, value: str, template: str) -> Templated:
        self = super().__new__(cls, value)
        self.template = template
        return self

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return str, (str(self),)  # copies are plain strings


def got(value: Any) -> str:
    if isinstance(value, Templated):
        return f"the value of {value.template}"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value) if isinstance(value, str) else f"{value!r}"


# Longer waits and periods are no schedule this daemon is for (use `cron:` or `at:`); the bound also
# keeps every sum of a time and a duration far from datetime's year 9999.
MAX_DURATION = 366 * 86400.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Each part ends in its unit, so the pattern cannot backtrack badly (editors run it as you type).
DURATION_TEXT = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$|^\s*\d+(\.\d+)?\s*$"


def parse_duration(value: Any) -> float:
    """`500ms`, `10s`, `5m`, `1h30m`, `2d` or a number of seconds → seconds (≥ 0)."""
    expected = "expected a duration like 10s, 5m, 1h30m or a number of seconds"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{expected}, got {got(value)}")
    seconds = float(value) if isinstance(value, int | float) else _duration_text(value)
    if seconds is None:
        raise Invalid(f"{expected}, got {got(value)}")
    if seconds < 0 or seconds != seconds:
        raise Invalid(f"expected a duration ≥ 0, got {got(value)}")
    return seconds


@functools.lru_cache(maxsize=4096)
def _duration_text(value: str) -> float | None:
    """Seconds in ``value`` (None: not a duration); cached: 100k jobs share a few texts."""
    text = value.strip().replace(" ", "")
    parts = _DURATION_PART.findall(text)
    if text and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        return float(text)
    except ValueError:
        return None


class Value(abc.ABC):
    """A kind of config value, used as ``Annotated`` metadata: its parser and its JSON Schema."""

    @abc.abstractmethod
    def convert(self, value: Any, context: Mapping[str, Any]) -> Any:
        """The value as the spec keeps it; raise Invalid ("expected X, got Y") if it is none."""

    @abc.abstractmethod
    def json_schema(self) -> JsonSchemaValue: ...

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_info_plain_validator_function(self._validate)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return self.json_schema()

    def _validate(self, value: Any, info: ValidationInfo) -> Any:
        try:
            result = self.convert(value, info.context or {})
        except Invalid as exc:
            raise PydanticCustomError("invalid_value", str(exc)) from None
        return str(result) if isinstance(result, Templated) else result


_DURATION_SCHEMA: JsonSchemaValue = {
    "anyOf": [
        {"type": "string", "pattern": DURATION_TEXT},
        {"type": "number", "minimum": 0},
    ],
    "description": "500ms, 10s, 5m, 1h30m, 2d or a number of seconds",
}


@dataclass(frozen=True)
class Duration(Value):
    """Seconds; ``positive``: at least a millisecond; ``optional``: null means none."""

    positive: bool = False
    optional: bool = False

    def convert(self, value: Any, context: Mapping[str, Any]) -> float | None:
        if value is None and self.optional:
            return None
        seconds = parse_duration(value)
        if seconds > MAX_DURATION:  # also infinity
            raise Invalid(f"expected a duration of at most 366d, got {got(value)}")
        if self.positive and seconds <= 0:
            raise Invalid(f"expected a duration > 0, got {got(value)}")
        if self.positive and seconds < 0.001:  # a period of 0.1 µs cannot be scheduled
            raise Invalid(f"expected a duration of at least 1ms, got {got(value)}")
        return seconds

    def json_schema(self) -> JsonSchemaValue:
        if self.optional:
            return {"anyOf": [*_DURATION_SCHEMA["anyOf"], {"type": "null"}]}
        return dict(_DURATION_SCHEMA)


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


class Size(Value):
    """Bytes: 65536, 64KiB, 1MiB, 1MB."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if not match:
            raise Invalid(
                f"expected a size in bytes such as 65536, 64KiB or 1MiB, got {got(value)}"
            )
        return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]

    def json_schema(self) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+\s*([KMG]i?B|B)?\s*$"},
            ]
        }


def from_template(value: Any, kind: type[int] | type[float]) -> Any:
    """A number written as ``${N}``: its text parsed as the field's kind (else left as it is)."""
    if not isinstance(value, Templated):
        return value
    try:
        return kind(value.strip())
    except ValueError:
        return value


@dataclass(frozen=True)
class Integer(Value):
    minimum: int

    def convert(self, value: Any, context: Mapping[str, Any]) -> int:
        number = from_template(value, int)
        if isinstance(number, bool) or not isinstance(number, int) or number < self.minimum:
            raise Invalid(f"expected an integer ≥ {self.minimum}, got {got(value)}")
        return number

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "integer", "minimum": self.minimum}


@dataclass(frozen=True)
class Number(Value):
    minimum: float
    maximum: float | None = None

    def convert(self, value: Any, context: Mapping[str, Any]) -> float:
        bounds = (
            f"between {self.minimum:g} and {self.maximum:g}"
            if self.maximum is not None
            else f"≥ {self.minimum:g}"
        )
        number = from_template(value, float)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise Invalid(f"expected a number {bounds}, got {got(value)}")
        too_big = self.maximum is not None and number > self.maximum
        if not math.isfinite(number) or number < self.minimum or too_big:
            shown = got(value) if isinstance(value, Templated) else f"{number:g}"
            raise Invalid(f"expected a number {bounds}, got {shown}")
        return float(number)

    def json_schema(self) -> JsonSchemaValue:
        schema: JsonSchemaValue = {"type": "number", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


@dataclass(frozen=True)
class Text(Value):
    """A non-empty string; ``optional``: null means none."""

    optional: bool = False

    def convert(self, value: Any, context: Mapping[str, Any]) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected a non-empty string, got {got(value)}")
        return value

    def json_schema(self) -> JsonSchemaValue:
        text = {"type": "string", "minLength": 1}
        return {"anyOf": [text, {"type": "null"}]} if self.optional else text


class Boolean(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> bool:
        if isinstance(value, Templated) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {got(value)}")
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "boolean"}


@dataclass(frozen=True)
class OneOf(Value):
    """One of the options of the field's ``Literal`` type (written only there)."""

    options: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        options = get_args(source)
        return core_schema.with_info_plain_validator_function(
            OneOf(options)._validate,
            json_schema_input_schema=core_schema.literal_schema(list(options)),
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(schema)  # the Literal's: this annotation instance has no options yet

    def json_schema(self) -> JsonSchemaValue:
        return {"enum": list(self.options)}

    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if value not in self.options:
            raise Invalid(f"expected one of {', '.join(self.options)}, got {got(value)}")
        return str(value)


class Zone(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected an IANA time zone such as Europe/Berlin, got {got(value)}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(
                f"expected an IANA time zone such as Europe/Berlin, got {got(value)}"
            ) from None
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "description": "an IANA time zone such as Europe/Berlin"}


class Cron(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a cron expression string, got {got(value)}")
        try:
            validate_cron(value)
        except ValueError as exc:
            if isinstance(value, Templated):  # the reason would quote the expression
                raise Invalid(f"expected a cron expression, got {got(value)}") from None
            raise Invalid(str(exc)) from None
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {
            "type": "string",
            "description": "5 fields (minute first), 6 fields (seconds first) or an @alias",
        }


MIN_YEAR, MAX_YEAR = 1000, 9000


class DateTime(Value):
    """ISO 8601; a naive value is made aware in the job's zone by the job.

    Years 1000 to 8999 only: near datetime's limits a time zone or a duration added to the
    instant overflows (year 9999 with a negative offset is in year 10000 in UTC).
    """

    def convert(self, value: Any, context: Mapping[str, Any]) -> datetime:
        if isinstance(value, datetime):
            at = value
        elif isinstance(value, str):
            try:
                at = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                at = None
        else:
            at = None
        if at is None:
            raise Invalid(
                f"expected an ISO 8601 date-time such as 2026-12-01T02:00:00Z, got {got(value)}"
            )
        if not MIN_YEAR <= at.year < MAX_YEAR:
            raise Invalid(
                f"expected a date-time in the years {MIN_YEAR} to {MAX_YEAR - 1}, got {got(value)}"
            )
        return at

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "description": "ISO 8601 date-time such as 2026-12-01T02:00:00Z"}


def plain(value: Any) -> Any:
    """``value`` with every Templated string inside it a plain string again."""
    if isinstance(value, Templated):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


_JOB_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class JobName(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not _JOB_NAME.fullmatch(value):
            raise Invalid(
                f"expected a job name of letters, digits, '_', '.', '-', got {got(value)}"
            )
        if value in (".", ".."):  # a URL path (/jobs/..) cannot name it
            raise Invalid(f"expected a job name other than '.' and '..', got {value!r}")
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "pattern": JOB_NAME_PATTERN}


JOB_NAME_PATTERN = rf"^(?!\.\.?$){_JOB_NAME.pattern}$"
JOB_NAME_RE = _JOB_NAME.pattern


@dataclass(frozen=True)
class Names(Value):
    """A list of names matching ``pattern`` (an environment variable's, a job kind's ...)."""

    pattern: str = r"[A-Za-z_][A-Za-z0-9_]*"
    what: str = "names"

    def convert(self, value: Any, context: Mapping[str, Any]) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) and re.fullmatch(self.pattern, item) for item in value
        ):
            raise Invalid(f"expected a list of {self.what}, got {got(value)}")
        return tuple(value)

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "array", "items": {"type": "string", "pattern": f"^{self.pattern}$"}}
