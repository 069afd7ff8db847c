"""Secrets out of a job's spec before it reaches the database, the API or a log.

A value written with ``${...}`` is shown as written (the variable, not its value); a header whose
name looks like a credential is masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_HEADER = re.compile(r"token|key|secret|password|passwd|auth|cookie|session", re.I)

# A job's user-facing key → its place in the redacted dump (where the action is one mapping).
_DUMP_PLACE = {
    "http": "action",
    "env": "action.env",
    "command": "action.argv",
    "shell": "action.shell",
    "args": "action.args",
    "cwd": "action.cwd",
    "python": "action.target",
}


def is_secret_header(name: str) -> bool:
    return name.lower() in ("authorization", "proxy-authorization", "cookie") or bool(
        _SECRET_HEADER.search(name)
    )


def dump_places(templates: Mapping[tuple[str | int, ...], Any]) -> dict[str, Any]:
    """A job's ${...} strings (an API job's {"env": NAME}) keyed by their path under the job →
    keyed by dotted dump place."""
    out: dict[str, Any] = {}
    for path, text in templates.items():
        rest = [str(p) for p in path]
        head = _DUMP_PLACE.get(rest[0], rest[0])
        if rest[0] == "http" and len(rest) > 1 and rest[1] == "json":
            rest[1] = "json_body"
        out[".".join([head, *rest[1:]])] = text
    return out


def redact(data: dict[str, Any], templates: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a job's dump) with templates put back and credential headers masked, in place."""
    for key, template in templates.items():
        _set_dotted(data, key, template)
    headers = data["action"].get("headers") or {}
    for name in headers:
        if is_secret_header(name) and f"action.headers.{name}" not in templates:
            headers[name] = MASK
    return data


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
