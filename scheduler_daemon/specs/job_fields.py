"""A job back in the config file's syntax (`jobs export`): the fields a user writes, no secret.

A config job's value written with ``${VAR}`` comes out as written; any other string has its
``$`` doubled (``$$``), so that reading the output back gives the same value rather than
interpolating it. A credential header written in clear is masked, as everywhere else. An API
job's ``{"env": "NAME"}`` reference is what a config file writes ``${NAME}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from scheduler_daemon.specs.models import (
    ACTION_KEYS,
    COMMAND_ONLY,
    PYTHON_ONLY,
    SCHEDULE_KEYS,
    JobSpec,
)
from scheduler_daemon.specs.redaction import redact

_KEPT = ("timezone",)  # written even at its default: the exported file has no top-level zone


def config_fields(job: JobSpec) -> dict[str, Any]:
    """``job``'s fields as a config file's `jobs:` entry writes them (defaults left out)."""
    data: dict[str, Any] = job.model_dump(
        mode="json", exclude={"name", *ACTION_KEYS, *COMMAND_ONLY, *PYTHON_ONLY}
    )
    action = job.action
    data["action"] = {"kind": action.kind, **action.model_dump(mode="json")}
    # Escaped before the templates are put back: a template is the one string read as written.
    data = escaped(data)
    redact(data, job._templates or {})
    fields = _action_fields(data.pop("action"))
    defaults = _default_job()
    own = {
        key: _changed(value, defaults["retry"]) if key == "retry" else value
        for key, value in data.items()
        if (value is not None if key in SCHEDULE_KEYS else key in _KEPT or value != defaults[key])
    }
    return _ordered({**own, **fields})


def api_fields(definition: Mapping[str, Any]) -> dict[str, Any]:
    """An API job's stored definition in config syntax: its references as ``${NAME}``."""
    data: dict[str, Any] = escaped(dict(definition))
    for place in (("http", "headers"), ("env",)):
        values = _at(definition, place)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(value.get("env"), str):
                _at(data, place)[key] = "${" + value["env"] + "}"
    return _ordered(data)


def _changed(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value != defaults.get(key)}


def escaped(value: Any) -> Any:
    """``value`` with every ``$`` of its strings doubled (keys are never interpolated)."""
    if isinstance(value, str):
        return str(value).replace("$", "$$")
    if isinstance(value, dict):
        return {key: escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [escaped(item) for item in value]
    return value


def _action_fields(action: dict[str, Any]) -> dict[str, Any]:
    kind = action.pop("kind")
    defaults = _default_action(kind)
    required = ("url", "argv", "shell", "target")  # never dropped: the reference's may be equal
    own = {k: val for k, val in action.items() if k in required or val != defaults.get(k, object())}
    if kind == "http":
        return {"http": {("json" if k == "json_body" else k): val for k, val in own.items()}}
    if kind == "python":
        return {"python": own["target"], **({"args": own["args"]} if "args" in own else {})}
    argv, shell = own.pop("argv", None), own.pop("shell", None)
    return {**({"command": argv} if argv is not None else {"shell": shell}), **own}


@cache
def _default_job() -> dict[str, Any]:
    return _reference({"http": {"url": "http://x"}}).model_dump(mode="json")


@cache
def _default_action(kind: str) -> dict[str, Any]:
    fields: dict[str, dict[str, Any]] = {
        "http": {"http": {"url": "http://x"}},
        "python": {"python": "x:y"},
    }
    action = _reference(fields.get(kind, {"command": ["x"]})).action
    return action.model_dump(mode="json")


def _reference(action: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate({"name": "x", "every": 1, **action}, by_name=False)


def _ordered(fields: dict[str, Any]) -> dict[str, Any]:
    """Schedule first, then the action, then the rest as they come."""
    first = [k for k in (*SCHEDULE_KEYS, "offset", *ACTION_KEYS) if k in fields]
    return {key: fields[key] for key in [*first, *(k for k in fields if k not in first)]}


def _at(data: Any, place: tuple[str, ...]) -> Any:
    for key in place:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
