"""The base of every config spec: frozen, unknown keys refused, every problem found in one pass.

pydantic stops at a model's field errors before its cross-field checks run; a spec's rules are
checked on the raw input as well, so a user sees a misspelt key *and* the missing action it
causes at once. Every error leaves a spec with its final wording ("expected X, got Y", "unknown
key 'x'; did you mean 'y'?"), whatever the input format; the YAML loader only adds file and line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from scheduler_daemon.specs.values import got

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]
PROBLEM = "spec_problem"  # the error type of every error a spec raises


class Spec(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The input as the fields take it (a spec may accept a shorthand)."""
        return data

    @classmethod
    def key_rules(cls, data: Mapping[str, Any]) -> list[Problem]:
        """Problems seen in the raw input's keys: checked even when some values are wrong."""
        return []

    def value_rules(self) -> list[Problem]:
        """Problems between validated values."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: Callable[[Any], Self]) -> Self:
        rules: list[Problem] = []
        if isinstance(data, dict):
            data = cls.prepare(data)
            rules = cls.key_rules(data)
        try:
            spec = handler(data)
        except ValidationError as exc:
            worded = [_worded(cls, error) for error in exc.errors()]
            raise problems_error(cls.__name__, [*worded, *rules], data) from None
        rules += spec.value_rules()
        if rules:
            raise problems_error(cls.__name__, rules, data)
        return spec


def problems_error(title: str, problems: Iterable[Problem], data: Any) -> ValidationError:
    """A ValidationError carrying ``problems`` with their wording untouched."""
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError(PROBLEM, message), "loc": loc, "input": data}
        for loc, message in problems
    ]
    return ValidationError.from_exception_data(title, details)


def problems_of(exc: ValidationError) -> list[Problem]:
    return [(tuple(error["loc"]), error["msg"]) for error in exc.errors()]


def _worded(model: type[BaseModel], error: ErrorDetails) -> Problem:
    """pydantic's own errors in the words of the config's other messages."""
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "extra_forbidden" and len(loc) == 1:
        names = [f.alias or name for name, f in model.model_fields.items()]
        close = difflib.get_close_matches(str(loc[0]), names, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        return loc, f"unknown key {loc[0]!r}{suggestion}"
    if kind == "missing" and len(loc) == 1:
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == loc[0]), None)
        hint = f" ({field.description})" if field is not None and field.description else ""
        return (), f"missing `{loc[0]}:`{hint}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return loc, f"expected a mapping, got {got(error['input'])}"
    return loc, error["msg"]
