"""The migration files: their naming and order, schema.sql generated from them, and what a
database's list of applied migrations means against this version's (no database here)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler_daemon import __version__
from scheduler_daemon.storage import schema
from scheduler_daemon.storage.schema import Applied, Migration, SchemaBehind, SchemaState
from tests.helpers import REPO

AT = datetime(2026, 11, 25, 16, 42, tzinfo=UTC)


def test_schema_sql_is_generated_from_the_migrations() -> None:
    on_disk = (REPO / "schema.sql").read_text(encoding="utf-8")
    assert on_disk == schema.reference_sql(), (
        "schema.sql is stale: python -m scheduler_daemon.storage.schema > schema.sql"
    )


def test_the_migrations_are_numbered_from_one_and_the_first_is_the_initial_schema() -> None:
    known = schema.migrations()
    assert [m.version for m in known] == list(range(1, len(known) + 1))
    assert known[0].label == "0001_initial"
    assert "CREATE TABLE IF NOT EXISTS executions" in known[0].sql


@pytest.mark.parametrize(
    ("files", "error"),
    [
        (["0001_a.sql", "0003_c.sql"], r"without a gap: \[1, 3\]"),
        (["0002_b.sql"], r"without a gap: \[2\]"),
        ([], r"without a gap: \[\]"),
        (["0001_a.sql", "1_b.sql"], "1_b.sql: a migration is named NNNN_name.sql"),
        (["0001_Initial.sql"], "0001_Initial.sql: a migration is named"),
    ],
)
def test_misnumbered_or_misnamed_migrations_are_refused(
    tmp_path: Path, files: list[str], error: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;\n")
    (tmp_path / "README.md").write_text("not a migration")  # other files are left alone
    with pytest.raises(ValueError, match=error):
        schema.load(tmp_path)


def test_a_checksum_ignores_line_endings_only() -> None:
    unix = Migration(1, "a", "SELECT 1;\nSELECT 2;\n")
    assert Migration(1, "a", "SELECT 1;\r\nSELECT 2;\r\n").checksum == unix.checksum
    assert Migration(1, "a", "SELECT 1;\nSELECT 3;\n").checksum != unix.checksum


KNOWN = (Migration(1, "initial", "A"), Migration(2, "more", "B"))


def state(*versions: int, checksum: str | None = None) -> SchemaState:
    applied = tuple(
        Applied(v, f"m{v}", checksum or (KNOWN[v - 1].checksum if v <= 2 else "?"), AT)
        for v in versions
    )
    return SchemaState(known=KNOWN, applied=applied, bookkept=bool(versions), legacy=False)


def test_pending_unknown_and_changed_migrations() -> None:
    assert [m.label for m in state().pending] == ["0001_initial", "0002_more"]
    assert (state().version, state(1).version, state(1, 2).version) == (0, 1, 2)
    assert [m.label for m in state(1).pending] == ["0002_more"]
    assert state(1, 2).pending == [] and state(1, 2).unknown == []
    assert [a.version for a in state(1, 2, 3).unknown] == [3]
    assert [a.version for a in state(1, checksum="edited").changed] == [1]


def test_a_database_behind_or_ahead_is_not_current() -> None:
    state(1, 2).require_current()
    with pytest.raises(SchemaBehind) as behind:
        state(1).require_current()
    assert str(behind.value) == (
        "the database's schema is at version 1, this scheduler-daemon needs 2 (missing: "
        "0002_more): run `scheduler-daemon db upgrade`, or start the daemon"
    )
    with pytest.raises(schema.SchemaTooNew) as ahead:
        state(1, 2, 3).require_current()
    assert str(ahead.value) == (
        "the database's schema is at version 3 (0003_m3, applied 2026-11-25 16:42Z), newer than "
        f"this scheduler-daemon {__version__} knows (up to 2): run a version that knows it; going "
        "back to an older schema is not supported"
    )
