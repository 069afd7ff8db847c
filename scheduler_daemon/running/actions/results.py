"""What an attempt returned, kept as data: its JSON result and the items a path finds in it.

An HTTP body is kept as the server sent it (PostgreSQL parses it into jsonb), a python job's return
value as ``json.dumps`` writes it. Either is checked here first, so that what reaches the recorder
is a document PostgreSQL accepts: never a cut or broken one. A result over ``result_max_bytes`` is
not kept (the attempt's ``error`` says so); its size is recorded either way.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from scheduler_daemon.running.actions.outcome import Kept, Outcome
from scheduler_daemon.running.records import Items, Status
from scheduler_daemon.specs import JobSpec
from scheduler_daemon.specs.results import SEARCH, ItemsSpec

# Bodies past this size are parsed (and their items written out) in a worker thread: ~3 ms of
# CPU per 256 KiB would hold every other fire up.
THREAD_BYTES = 256 * 1024
_JSON_TYPES = ("application/json", "text/json")


class NotKept(Exception):
    """Why a result is not kept (the message is the attempt's error)."""


class ResultReader:
    """A job's rules for its result: built once per action."""

    __slots__ = ("_items", "_max", "_mode")

    def __init__(self, job: JobSpec) -> None:
        self._mode = job.result
        self._max = job.result_max_bytes
        self._items: ItemsSpec | None = job.items

    @property
    def max_bytes(self) -> int:
        return self._max

    def wants_body(self, content_type: str) -> bool:
        """Whether an HTTP body of this type is read as the result."""
        if self._mode == "json":
            return True
        if self._mode == "none":
            return False
        kind = content_type.partition(";")[0].strip().lower()
        return kind in _JSON_TYPES or kind.endswith("+json")

    async def from_body(self, body: bytes | bytearray, total: int) -> Kept:
        """The result of an HTTP body (``body`` holds it all unless ``total`` is larger)."""
        if total > self._max:
            return self._not_kept(total, _too_big(total, self._max))
        if total == 0:  # a 204, say: nothing to keep, nothing wrong
            return Kept(size=0) if self._items is None else self._not_kept(0, "empty result")
        if len(body) > THREAD_BYTES:
            return await asyncio.to_thread(self._from_body, body)
        return self._from_body(body)

    async def from_value(self, value: Any) -> Kept | None:
        """The result of a python job's return value; None when there is nothing to keep."""
        if self._mode == "none" or (value is None and self._items is None):
            return None
        return self._from_value(value)

    def _from_body(self, body: bytes | bytearray) -> Kept:
        try:
            text = body.decode(json.detect_encoding(body))
            value = json.loads(text, parse_constant=_refuse_constant)
            _check_text(text)
        except (ValueError, NotKept) as exc:  # UnicodeDecodeError and JSONDecodeError included
            return self._not_kept(len(body), f"result not kept: not JSON ({_reason(exc)})")
        return self._kept(text, len(body), value)

    def _from_value(self, value: Any) -> Kept:
        try:
            # ASCII only: a lone surrogate in a string is written as an escape, never sent raw.
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
            _check_text(text)
        except (TypeError, ValueError, RecursionError, NotKept) as exc:
            if self._mode == "auto" and self._items is None:
                return Kept(value=value)  # an object, not data: nothing said
            return self._not_kept(None, f"result not kept: not JSON ({_reason(exc)})")
        size = len(text)  # ASCII: characters are bytes
        if size > self._max:
            return self._not_kept(size, _too_big(size, self._max))
        return self._kept(text, size, value)

    def _kept(self, text: str, size: int, value: Any) -> Kept:
        kept = Kept(text=text, size=size, value=value)
        if self._items is not None:
            try:
                kept.items = extract_items(self._items, value, text)
            except NotKept as exc:
                kept.problem = str(exc)
                kept.items_failed = self._items.required
        return kept

    def _not_kept(self, size: int | None, problem: str) -> Kept:
        required = self._items is not None and self._items.required
        if self._items is not None:
            problem += "; no items extracted"
        return Kept(size=size, problem=problem, items_failed=required)


def succeeded(kept: Kept | None, **fields: Any) -> Outcome:
    """A successful attempt's outcome with its result; failed when required items are missing
    (retried per the job's `retry`), else any problem with the result is its error."""
    if kept is not None and kept.items_failed:
        return Outcome(Status.FAILED, retryable=True, error=kept.problem, kept=kept, **fields)
    error = kept.problem if kept is not None else None
    return Outcome(Status.SUCCEEDED, retryable=False, error=error, kept=kept, **fields)


def extract_items(spec: ItemsSpec, value: Any, text: str | None = None) -> Items:
    """One item per element of the list ``spec.path`` finds; NotKept when it finds no list.

    ``text``: ``value`` as JSON, reused when the list is the whole result (`[*]` of a list: a
    Binance ticker list, say), which saves writing out 400 KB again."""
    path, key = spec.compiled()
    try:
        found = path.search(value, SEARCH)
        if not isinstance(found, list):
            raise NotKept(
                f"items not found: `{_oneline(spec.path)}` found {_what(found)}, not a list"
            )
        keys = None if key is None else tuple(map(_key_text, _keys(key, found)))
    except JMESPathError as exc:  # a function given the wrong type of value, say
        raise NotKept(f"items not extracted: {_reason(exc)}") from None
    whole = text is not None and _same_list(found, value)
    return Items(text if whole and text is not None else json.dumps(found), len(found), keys)


def _same_list(found: list[Any], value: Any) -> bool:
    return found is value or (
        isinstance(value, list)
        and len(found) == len(value)
        and all(a is b for a, b in zip(found, value, strict=True))
    )


def _keys(key: ParsedResult, elements: list[Any]) -> list[Any]:
    parsed = key.parsed
    if parsed["type"] == "field":  # `key: symbol`, the usual one: 20x faster than a search
        name = parsed["value"]
        return [e.get(name) if isinstance(e, dict) else None for e in elements]
    return [key.search(e, SEARCH) for e in elements]


def _oneline(path: str) -> str:
    """A path as one line, however the YAML wrapped it (`>-` keeps newlines in a flow)."""
    return " ".join(path.split())


def _key_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    # A text column holds neither NUL nor a lone surrogate: replaced, never refused.
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()


def _check_text(text: str) -> None:
    # PostgreSQL's jsonb refuses \u0000 in a string (it has no NUL in text).
    if "\\u0000" in text:
        raise NotKept("a string holds \\u0000, which PostgreSQL's jsonb cannot store")


def _refuse_constant(name: str) -> Any:
    raise NotKept(f"{name} is not a JSON number")


def _too_big(size: int, limit: int) -> str:
    return f"result not kept: {size:,} bytes, over result_max_bytes ({limit:,})"


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _what(found: Any) -> str:
    if found is None:
        return "nothing"
    if isinstance(found, dict):
        return "an object"
    return f"a {type(found).__name__}"
