"""The ``executions`` row, derived from ExecutionRecord: columns, SQL types, JSON form, size.

ExecutionRecord's fields are the one definition of the row. The column list, the COPY staging
table, the journal's encoding and the API's Execution body are all computed from them here, so a
field added to the record reaches every one of them (and the schema test says if the migrations
disagree: a new column needs one).
"""

from __future__ import annotations

import dataclasses
import operator
import types
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter

from scheduler_daemon.running.records import ExecutionRecord, Items

# Written beside the row, not in it (to job_items: store.py).
ATTACHED = frozenset({"items"})
# The Python type of each field (``X | None`` unwrapped) and whether it may be NULL.
FIELD_TYPES: dict[str, type] = {}
NULLABLE: frozenset[str]
_nullable: set[str] = set()
for _name, _hint in get_type_hints(ExecutionRecord).items():
    if _name in ATTACHED:
        continue
    _args = get_args(_hint) if get_origin(_hint) in (Union, types.UnionType) else (_hint,)
    FIELD_TYPES[_name] = next(a for a in _args if a is not type(None))
    if type(None) in _args:
        _nullable.add(_name)
NULLABLE = frozenset(_nullable)

COLUMNS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ExecutionRecord) if f.name not in ATTACHED
)
# Columns the database adds to each row (storage/migrations/): never written by the daemon.
DATABASE_COLUMNS = {"id": "bigint", "recorded_at": "timestamptz"}
# What identifies an attempt and never changes once written; the rest is the attempt's outcome.
IDENTITY = ("fire_id", "job_name", "scheduled_at", "attempt", "trigger")
OUTCOME = tuple(c for c in COLUMNS if c not in IDENTITY)

_SQL_TYPES: dict[type, str] = {
    uuid.UUID: "uuid",
    str: "text",
    datetime: "timestamptz",
    int: "integer",
    float: "double precision",
}


def sql_type(python_type: type) -> str:
    # A StrEnum (Status, FireKind) is text constrained by a CHECK list in the migrations.
    return _SQL_TYPES[str if issubclass(python_type, StrEnum) else python_type]


# Text the database keeps as something else than text.
_COLUMN_TYPES = {"result": "jsonb"}
SQL_TYPES: dict[str, str] = {
    name: _COLUMN_TYPES.get(name) or sql_type(t) for name, t in FIELD_TYPES.items()
}


def staging_ddl(table: str) -> str:
    """A temporary table shaped like the row (no constraints: the merge into executions checks)."""
    columns = ", ".join(f"{name} {SQL_TYPES[name]}" for name in COLUMNS)
    return f"CREATE TEMP TABLE IF NOT EXISTS {table} ({columns}) ON COMMIT DELETE ROWS"


# The row's values in column order: attrgetter builds the tuple in C (one per attempt written).
values: Callable[[ExecutionRecord], tuple[Any, ...]] = operator.attrgetter(*COLUMNS)

# JSON (journal lines): uuids and instants as ISO strings, enums as their values. pydantic
# validates a line back into a record, so a damaged line is refused rather than half-read.
_ADAPTER: TypeAdapter[ExecutionRecord] = TypeAdapter(ExecutionRecord)
_ISO = frozenset(name for name, t in FIELD_TYPES.items() if t is datetime)


def to_json(rec: ExecutionRecord) -> dict[str, Any]:
    data: dict[str, Any] = _ADAPTER.dump_python(rec, mode="json")
    for name in _ISO:  # datetime.isoformat(), as the journal always had (pydantic writes "Z")
        value = getattr(rec, name)
        data[name] = value.isoformat() if value is not None else None
    for name in ATTACHED:  # written only when there is something: most rows have none
        if data[name] is None:
            del data[name]
    return data


def from_json(data: Mapping[str, Any]) -> ExecutionRecord:
    """A record from its JSON form; raises ValueError (pydantic's ValidationError) when it is not
    one: a missing or unknown field, a wrong type, a status this version does not know."""
    # Instants parsed by the standard library, as the record's other producers make them
    # (pydantic would attach its own tzinfo class).
    instants = {n: datetime.fromisoformat(data[n]) if data[n] else None for n in _ISO if n in data}
    return _ADAPTER.validate_python({**data, **instants})


# What a buffered row costs besides its output and error text: the record, its uuid, instants and
# numbers, its deque slot (~450 bytes measured with tracemalloc on CPython 3.11), so that a flood
# of small rows counts too.
ROW_OVERHEAD = 450
KEY_OVERHEAD = 60  # an item's key: a short str and its slot


def row_size(rec: ExecutionRecord) -> int:
    """A buffered row's approximate memory in bytes: a str's ``__sizeof__`` counts 1, 2 or 4 bytes
    a character as CPython stores it (8x cheaper than ``sys.getsizeof``: this is on the fire
    path)."""
    output, error, result, items = rec.output, rec.error, rec.result, rec.items
    return (
        ROW_OVERHEAD
        + (0 if output is None else output.__sizeof__())
        + (0 if error is None else error.__sizeof__())
        + (0 if result is None else result.__sizeof__())
        + (0 if items is None else _items_size(items))
    )


def _items_size(items: Items) -> int:
    keys = items.keys
    return items.array.__sizeof__() + (0 if keys is None else KEY_OVERHEAD * len(keys))
