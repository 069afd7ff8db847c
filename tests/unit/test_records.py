"""The execution record: fire ids, and the row definition derived from it against the schema."""

from __future__ import annotations

import json
import pickle
import random
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest

from scheduler_daemon.running.records import (
    FIRE_NAMESPACE,
    ExecutionRecord,
    FireKind,
    Status,
    scheduled_fire_id,
)
from scheduler_daemon.storage import rows
from scheduler_daemon.storage.schema import reference_sql


def test_a_scheduled_fire_id_is_the_uuid5_of_job_and_instant() -> None:
    # The inlined hash must stay exactly uuid5: ids are compared with rows of earlier versions.
    at = datetime(2026, 3, 29, 1, 30, 0, 250_000, tzinfo=UTC)
    rng = random.Random(5)
    instants = [at, *(at + timedelta(microseconds=rng.randrange(10**13)) for _ in range(300))]
    for name in ("nightly", "jöb-ünïcode", "a" * 200):
        for when in instants:
            expected = uuid.uuid5(FIRE_NAMESPACE, f"{name}@{round(when.timestamp() * 1_000_000)}")
            got = scheduled_fire_id(name, when)
            assert (got, got.int, str(got), got.bytes) == (
                expected,
                expected.int,
                str(expected),
                expected.bytes,
            )
            assert (got.version, got.variant, got.is_safe) == (5, uuid.RFC_4122, expected.is_safe)
            assert hash(got) == hash(expected) and pickle.loads(pickle.dumps(got)) == expected


def test_fire_ids_differ_by_job_and_by_microsecond() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    ids = {
        scheduled_fire_id("a", at),
        scheduled_fire_id("b", at),
        scheduled_fire_id("a", at + timedelta(microseconds=1)),
    }
    assert len(ids) == 3


# -- the row definition against the schema's migrations -------------------------------------------


def _executions_table() -> dict[str, str]:
    """The migrations' `CREATE TABLE executions` columns: name -> the rest of its definition."""
    body = re.search(r"CREATE TABLE IF NOT EXISTS executions \((.*?)\n\);", reference_sql(), re.S)
    assert body is not None
    columns: dict[str, str] = {}
    for item in _top_level_items(re.sub(r"--[^\n]*", "", body.group(1))):
        name, _, rest = item.strip().partition(" ")
        if name and name != "CONSTRAINT":
            columns[name] = " ".join(rest.split())
    # Columns added by later migrations, in order (each with its type and no NOT NULL).
    added = r"ALTER TABLE executions ADD COLUMN IF NOT EXISTS (\w+) ([^;]*);"
    for name, rest in re.findall(added, reference_sql()):
        columns[name] = " ".join(rest.split())
    # Its CHECK lists as the last migration that replaced them wrote them.
    replaced = r"ADD CONSTRAINT executions_(\w+)_check\s+(CHECK \(.*?\)\))"
    for name, check in re.findall(replaced, reference_sql(), re.S):
        columns[name] = f"{columns[name].split(' CHECK')[0]} {' '.join(check.split())}"
    return columns


def _top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [*items, text[start:]]


def _check_list(column: str) -> list[str]:
    definition = _executions_table()[column]
    listed = re.search(rf"CHECK \({column} IN \((.*?)\)\)", definition)
    assert listed is not None, definition
    return re.findall(r"'([a-z_]+)'", listed.group(1))


@pytest.mark.parametrize(("column", "enum"), [("status", Status), ("trigger", FireKind)])
def test_the_schema_check_lists_are_the_enums(column: str, enum: type[StrEnum]) -> None:
    assert _check_list(column) == [e.value for e in enum]


def test_the_executions_table_has_the_row_definitions_columns_types_and_nulls() -> None:
    table = _executions_table()
    # (in any order: a later migration's columns come after recorded_at)
    assert sorted(table) == sorted(["id", *rows.COLUMNS, "recorded_at"])
    for name in rows.COLUMNS:
        definition = table[name]
        assert definition.startswith(rows.SQL_TYPES[name]), (name, definition)
        assert ("NOT NULL" not in definition) == (name in rows.NULLABLE), (name, definition)
    for name, sql_type in rows.DATABASE_COLUMNS.items():
        assert table[name].startswith(sql_type), name


def test_the_staging_table_and_merge_name_every_column() -> None:
    ddl = rows.staging_ddl("stage").replace("(", "( ")
    for name in rows.COLUMNS:
        assert re.search(rf"[(,] {name} {rows.SQL_TYPES[name]}[,)]", ddl), name
    assert set(rows.IDENTITY) | set(rows.OUTCOME) == set(rows.COLUMNS)


_FULL = ExecutionRecord(
    fire_id=uuid.UUID(int=7),
    job_name="nightly",
    scheduled_at=datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    attempt=2,
    trigger=FireKind.CATCHUP,
    status=Status.TIMED_OUT,
    started_at=datetime(2026, 3, 29, 1, 30, 0, 5000, tzinfo=timezone(timedelta(hours=-3))),
    finished_at=None,
    drift_ms=5.0,
    duration_ms=None,
    http_status=504,
    exit_code=None,
    error="slow",
    output="tail\x00",
    node="n1",
)


def test_the_json_form_round_trips_and_keeps_the_journal_format() -> None:
    data = rows.to_json(_FULL)
    assert list(data) == list(rows.COLUMNS)  # no `items` key: the row had none
    assert data["fire_id"] == str(uuid.UUID(int=7)) and data["trigger"] == "catchup"
    assert data["scheduled_at"] == "2026-03-29T01:30:00+00:00"  # isoformat, as journals hold
    assert data["started_at"] == "2026-03-29T01:30:00.005000-03:00"
    back = rows.from_json(json.loads(json.dumps(data)))
    assert back == _FULL and back.scheduled_at.tzinfo is UTC


@pytest.mark.parametrize(
    "damage",
    [
        {"status": "exploded"},
        {"trigger": None},
        {"attempt": "two"},
        {"scheduled_at": None},
        {"fire_id": "not-a-uuid"},
    ],
)
def test_a_damaged_json_row_is_refused(damage: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        rows.from_json({**rows.to_json(_FULL), **damage})


def test_a_json_row_missing_a_field_is_refused() -> None:
    data = rows.to_json(_FULL)
    del data["job_name"]
    with pytest.raises((ValueError, KeyError)):
        rows.from_json(data)
