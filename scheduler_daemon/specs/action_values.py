"""Config values of a job's action: argv, Python targets, URLs, methods, statuses, bodies, maps.

Like every ``Value`` (see ``values``): parsed as written, refused with "expected X, got Y".
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from pydantic.json_schema import JsonSchemaValue

from scheduler_daemon.specs.values import Invalid, Value, from_template, got, plain


class StrMap(Value):
    """Names to strings; numbers and booleans are taken as their text (`limit: 5`)."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> dict[str, str]:
        if not isinstance(value, dict):
            raise Invalid(f"expected a mapping of names to strings, got {got(value)}")
        bad = [k for k, v in value.items() if isinstance(v, dict | list) or v is None]
        if bad:
            raise Invalid(f"expected string values, got {got(value[bad[0]])} for {bad[0]!r}")
        return {str(k): str(v) if isinstance(v, str) else _scalar_text(v) for k, v in value.items()}

    def json_schema(self) -> JsonSchemaValue:
        return {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }


def _scalar_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class AnyMapping(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(f"expected a mapping, got {got(value)}")
        mapping: dict[str, Any] = plain(value)
        return mapping

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "object"}


class Argv(Value):
    """A list of arguments, or one string split like a shell would (no shell runs it)."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> tuple[str, ...] | None:
        if isinstance(value, tuple):  # already an argv (a spec built in code)
            value = list(value)
        if isinstance(value, str):
            try:
                argv = tuple(shlex.split(value))
            except ValueError as exc:
                raise Invalid(f"expected a command line, got {got(value)} ({exc})") from None
        elif isinstance(value, list) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
        ):
            argv = tuple(str(v) for v in value)
        else:
            raise Invalid(
                f'expected a list of arguments such as ["./run.sh", "--all"], got {got(value)}'
            )
        if not argv:
            raise Invalid("expected at least the program to run, got an empty command")
        return argv

    def json_schema(self) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
                {"type": "string", "minLength": 1},
            ]
        }


_PY_TARGET = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class PyTarget(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not _PY_TARGET.fullmatch(value):
            raise Invalid(f'expected "package.module:function", got {got(value)}')
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "pattern": f"^{_PY_TARGET.pattern}$"}


class Url(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
            raise Invalid(f"expected an http:// or https:// URL, got {got(value)}")
        return value

    def json_schema(self) -> JsonSchemaValue:
        # An editor sees `${BASE_URL:-https://...}/path` unexpanded: the loader checks the result.
        return {"type": "string", "pattern": r"^(https?://[^/\s]+|\$\{)"}


class Method(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]+", value):
            raise Invalid(f"expected an HTTP method such as GET or POST, got {got(value)}")
        return value.upper()

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "pattern": "^[A-Za-z]+$"}


class Statuses(Value):
    """HTTP status codes that count as success: one or a list (empty: any 2xx)."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> tuple[int, ...]:
        items = list(value) if isinstance(value, list | tuple) else [value]
        items = [from_template(item, int) for item in items]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
                raise Invalid(f"expected HTTP status codes (100-599), got {got(item)}")
        return tuple(items)

    def json_schema(self) -> JsonSchemaValue:
        code = {"type": "integer", "minimum": 100, "maximum": 599}
        return {"anyOf": [code, {"type": "array", "items": code}]}


class Body(Value):
    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string (use `json:` for structured data), got {got(value)}")
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string"}
