"""What a job keeps of its result (`result`, `items`) and how long history is kept (`retention`).

A path is a JMESPath expression (https://jmespath.org), compiled when the config is read: a bad
one is a config error naming the job and the field, never an attempt's failure at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import jmespath
from jmespath import functions
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import PrivateAttr
from pydantic.json_schema import JsonSchemaValue

from scheduler_daemon.specs import values as v
from scheduler_daemon.specs.spec import Spec

# auto: an HTTP response whose content type is JSON, a python job's return value (not None);
# json: the HTTP body as JSON whatever its content type says; none: never kept.
ResultMode = Literal["auto", "json", "none"]
DEFAULT_RESULT_MAX_BYTES = 1024 * 1024


class JmesPath(v.Value):
    """A JMESPath expression, kept as written (compiled by the spec that holds it)."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not value.strip():
            raise v.Invalid(f"expected a JMESPath expression such as data[*], got {v.got(value)}")
        try:
            jmespath.compile(value)
        except JMESPathError as exc:
            reason = str(exc).splitlines()[0]
            raise v.Invalid(f"expected a JMESPath expression, got {value!r}: {reason}") from None
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "minLength": 1, "description": "a JMESPath expression"}


Path = Annotated[str, JmesPath()]


class _Functions(functions.Functions):
    """JMESPath's functions, and `items(obj)` (from the JMESPath Community spec): an object as a
    list of [key, value] pairs, for APIs that key their answer by name ({"BTC": {"USD": 1}})."""

    @functions.signature({"types": ["object"]})
    def _func_items(self, obj: dict[str, Any]) -> list[list[Any]]:
        return [[key, value] for key, value in obj.items()]


SEARCH = jmespath.Options(custom_functions=_Functions())


class ItemsSpec(Spec):
    """One row of `job_items` per element of the list `path` finds in the result."""

    path: Path
    key: Annotated[str | None, JmesPath()] = None  # per element: the row's `key` (text)
    # The path found no list: the attempt fails (and is retried per `retry`) instead of
    # succeeding with the error recorded.
    required: Annotated[bool, v.Boolean()] = False
    _compiled: tuple[ParsedResult, ParsedResult | None] | None = PrivateAttr(default=None)

    def compiled(self) -> tuple[ParsedResult, ParsedResult | None]:
        if self._compiled is None:
            key = jmespath.compile(self.key) if self.key is not None else None
            self._compiled = (jmespath.compile(self.path), key)
        return self._compiled


Age = Annotated[float, v.Duration()]


class RetentionSpec(Spec):
    """How long history is kept, by the instant it finished (0: forever)."""

    executions: Age = 30 * 86400.0  # whole attempt rows
    results: Age = 7 * 86400.0  # `executions.result` (the row itself stays)
    items: Age = 30 * 86400.0  # rows of job_items
    every: Annotated[float, v.Duration(positive=True)] = 600.0  # between two pruning rounds
