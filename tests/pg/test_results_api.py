"""Results and items as data, read back: the admin API and the CLI over real rows in PostgreSQL.

Rows are written as the recorder writes them (store.write_executions); the API is a daemon running
in this process, the CLI its main() — over the API and straight to the database.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from scheduler_daemon.operation.cli import main
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Items, Status
from scheduler_daemon.storage import history, store
from tests.helpers import ENV, Running, T, rec, write_config


async def _write(dsn: str, records: list[ExecutionRecord]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await store.write_executions(conn, records)
    finally:
        await conn.close()


def _document(size: int) -> dict[str, Any]:
    """A price API's answer of about ``size`` bytes, with what JSON text has to escape."""
    coins = []
    while len(json.dumps(coins)) < size:
        n = len(coins)
        coins.append({
            "id": f"coin-{n}", "name": f"Cöin ₿ {n} \"quoted\" \\ back\nslash", "price": n * 0.25,
            "volume": 2**53 + n, "tags": ["a", None, True, False], "nested": {"depth": [[n]]},
        })  # fmt: skip
    return {"source": "replayed", "coins": coins, "empty": {}, "nothing": None}


def _with_result(record: ExecutionRecord, document: Any) -> ExecutionRecord:
    text = json.dumps(document)
    record.result, record.result_bytes = text, len(text.encode())
    return record


# -- GET /executions/{id} -------------------------------------------------------------------------


async def test_one_attempt_has_its_result_whole_and_pages_carry_only_its_size(
    api: Running, database_url: str
) -> None:
    document = _document(400_000)
    parent = uuid.uuid4()
    chained = rec("greet", 0, trigger=FireKind.CHAIN, parent_fire_id=parent)
    failed = rec("greet", 1, status=Status.FAILED, error="boom")
    await _write(database_url, [_with_result(chained, document), failed])

    status, page = await api.call("GET", "/jobs/greet/executions")
    assert status == 200 and len(json.dumps(page)) < 5_000  # no 400 KB in a page
    listed = {row["scheduled_at"]: row for row in page["executions"]}
    kept, other = listed[T.isoformat()], listed[(T + timedelta(seconds=1)).isoformat()]
    assert kept["result_bytes"] == len(json.dumps(document).encode())
    assert kept["parent_fire_id"] == str(parent) and kept["trigger"] == "chain"
    assert other["result_bytes"] is None and other["parent_fire_id"] is None
    _, everyone = await api.call("GET", "/executions?job=greet")
    _, job = await api.call("GET", "/jobs/greet")
    for rows in (page["executions"], everyone["executions"], job["last_attempts"]):
        assert rows and all("result" not in row and "result_bytes" in row for row in rows)

    status, one = await api.call("GET", f"/executions/{kept['id']}")
    assert status == 200
    assert one["result"] == document  # a JSON document, not a string; every character kept
    assert {k: v for k, v in one.items() if k != "result"} == kept
    status, none = await api.call("GET", f"/executions/{other['id']}")
    assert status == 200 and none["result"] is None and none["error"] == "boom"
    status, body = await api.call("GET", f"/executions/{kept['id'] + other['id']}")
    assert (status, body["error"]) == (404, "unknown_execution")


# -- GET /jobs/{name}/items -----------------------------------------------------------------------


def _items(fire: int, count: int) -> Items:
    elements = [{"coin": f"coin-{n}", "fire": fire, "price": n + fire / 4} for n in range(count)]
    return Items(json.dumps(elements), len(elements), tuple(e["coin"] for e in elements))


def _walk(api: Running, query: str) -> Callable[[], Any]:
    async def pages() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            status, page = await api.call("GET", query + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, page
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    return pages


async def test_items_page_oldest_first_with_no_gap_or_double_and_since_filters(
    api: Running, database_url: str
) -> None:
    late = [rec("greet", 10 * f, items=_items(f, 4)) for f in (3, 4)]
    # Written after the later fires (ids out of time order): pages go by scheduled_at.
    early = [rec("greet", 10 * f, items=_items(f, 4)) for f in (0, 1)]
    retried = [
        rec("greet", 20, attempt=1, status=Status.FAILED, items=_items(2, 2)),
        rec("greet", 20, attempt=2, items=_items(2, 3)),
    ]
    others = [rec("shell", 10 * f, items=_items(f, 2)) for f in range(5)]
    await _write(database_url, late + others)
    await _write(database_url, early + retried)

    seen = await _walk(api, "/jobs/greet/items?limit=3")()
    places = [(i["scheduled_at"], i["attempt"], i["idx"]) for i in seen]
    expected = [
        ((T + timedelta(seconds=10 * f)).isoformat(), attempt, idx)
        for f, attempt, count in ((0, 1, 4), (1, 1, 4), (2, 1, 2), (2, 2, 3), (3, 1, 4), (4, 1, 4))
        for idx in range(count)
    ]
    assert places == expected  # all of them, each once, oldest first; an attempt's in order
    first = seen[0]
    assert first["key"] == "coin-0" and first["item"] == {"coin": "coin-0", "fire": 0, "price": 0}
    assert first["fire_id"] == str(early[0].fire_id)

    since = (T + timedelta(seconds=20)).isoformat()
    recent = await _walk(api, f"/jobs/greet/items?limit=2&since={since.replace('+', '%2B')}")()
    assert [(i["scheduled_at"], i["attempt"], i["idx"]) for i in recent] == expected[8:]

    _, whole = await api.call("GET", f"/jobs/greet/items?limit={len(expected)}")
    assert len(whole["items"]) == len(expected) and whole["next_cursor"] is None
    _, nobody = await api.call("GET", "/jobs/nobody/items")
    assert nobody == {"items": [], "next_cursor": None}  # as /jobs/{name}/executions answers


# -- the room the history takes ----------------------------------------------------------------


async def test_the_storage_endpoint_says_what_the_history_takes(
    api: Running, database_url: str
) -> None:
    with_items = rec("greet", 0, items=_items(0, 50))
    await _write(database_url, [_with_result(with_items, _document(9000))])
    status, body = await api.call("GET", "/storage")
    assert status == 200
    conn = await asyncpg.connect(database_url)
    try:
        sizes = {t: await conn.fetchval("SELECT pg_total_relation_size($1)", t)
                 for t in ("executions", "job_items")}  # fmt: skip
    finally:
        await conn.close()
    assert body == {
        "executions_bytes": sizes["executions"],
        "job_items_bytes": sizes["job_items"],
        "total_bytes": sizes["executions"] + sizes["job_items"],
    }
    assert sizes["job_items"] > 0


async def test_a_partitioned_history_table_counts_its_partitions(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """CREATE SCHEMA parted;
               CREATE TABLE parted.executions (at timestamptz, x text) PARTITION BY RANGE (at);
               CREATE TABLE parted.e1 PARTITION OF parted.executions
                   FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
               CREATE TABLE parted.e2 PARTITION OF parted.executions
                   FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
               INSERT INTO parted.executions
                   SELECT '2026-01-01'::timestamptz + n * interval '1 hour', repeat('x', 100)
                   FROM generate_series(0, 1000) n;
               CREATE TABLE parted.job_items (x text);
               SET search_path = parted"""
        )
        parts, plain = await conn.fetchrow(
            "SELECT pg_total_relation_size('parted.e1') + pg_total_relation_size('parted.e2'),"
            " pg_total_relation_size('parted.job_items')"
        )
        sizes = await history.history_size(conn)
    finally:
        await conn.close()
    assert parts > 0 and sizes == {"executions": parts, "job_items": plain}


# -- the CLI: `history JOB --result`, `status` ----------------------------------------------------


@pytest.fixture
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_DATABASE_URL", raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def _documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (as `jq` reads them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


async def _check_cli(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    documents = [_document(2000), {"price": 1.5, "coin": "ünï"}]
    await _write(database_url, [
        _with_result(rec("greet", 0), documents[0]),
        rec("greet", 1, status=Status.FAILED, error="boom"),
        _with_result(rec("greet", 2, items=_items(2, 3)), documents[1]),
    ])  # fmt: skip
    capsys.readouterr()

    async def cli(*command: str) -> str:
        code = await run(*command)
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    latest = await cli("history", "greet", "--result")
    assert json.loads(latest) == documents[1]  # its keys in jsonb's order, not the job's
    assert latest == json.dumps(json.loads(latest), indent=2, ensure_ascii=False) + "\n"
    assert _documents(await cli("history", "greet", "--result", "-n", "5")) == [
        documents[1], None, documents[0],
    ]  # fmt: skip
    rows = json.loads(await cli("history", "greet", "--result", "--json", "-n", "2"))
    assert [(r["status"], r["result"]) for r in rows] == [("succeeded", documents[1]),
                                                         ("failed", None)]  # fmt: skip
    plain = json.loads(await cli("history", "greet", "--json"))
    assert len(plain) == 3 and all("result" not in r and "result_bytes" in r for r in plain)
    status = await cli("status")
    [line] = [line for line in status.splitlines() if line.startswith("history: ")]
    assert " in the database (executions " in line and ", job_items " in line


@pytest.mark.usefixtures("_environment")
async def test_history_result_and_status_size_straight_from_the_database(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, database_url, "http://127.0.0.1:9", listen=None)

    async def run(*command: str) -> int:
        return await asyncio.to_thread(main, [*command, "-c", str(path)])

    await _check_cli(run, capsys, database_url)


@pytest.mark.usefixtures("_environment")
async def test_history_result_and_status_size_through_the_api(
    api: Running, config: tuple[Path, str], database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async def run(*command: str) -> int:
        return await asyncio.to_thread(main, [*command, "-c", str(config[0])])

    await _check_cli(run, capsys, database_url)
