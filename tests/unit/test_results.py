"""A job's result as data: what is kept, what is refused and why, and the items a path finds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler_daemon.running.actions.outcome import Kept
from scheduler_daemon.running.actions.results import (
    NotKept,
    ResultReader,
    extract_items,
    succeeded,
)
from scheduler_daemon.running.records import Items, Status
from scheduler_daemon.specs import HttpSpec, PythonSpec
from scheduler_daemon.specs.results import ItemsSpec
from tests.helpers import make_job

COINS = [{"symbol": "BTCUSDT", "price": "97000.1"}, {"symbol": "ETHUSDT", "price": "3600.5"}]


def _reader(**fields: Any) -> ResultReader:
    fields.setdefault("action", HttpSpec(url="http://127.0.0.1/prices"))
    return ResultReader(make_job("prices", **fields))


async def test_a_json_body_is_kept_as_sent_with_its_items_and_keys() -> None:
    body = json.dumps({"data": COINS}, indent=1).encode()
    kept = await _reader(items=ItemsSpec(path="data", key="symbol")).from_body(body, len(body))
    assert kept.text == body.decode() and kept.size == len(body) and kept.problem is None
    assert kept.value == {"data": COINS}
    assert kept.items == Items(json.dumps(COINS), 2, ("BTCUSDT", "ETHUSDT"))


async def test_a_body_past_the_thread_threshold_is_kept_whole() -> None:
    rows = [{"symbol": f"S{i}", "lastPrice": str(i)} for i in range(8000)]
    body = json.dumps(rows).encode()
    assert len(body) > 256 * 1024
    kept = await _reader(items=ItemsSpec(path="[*]", key="symbol")).from_body(body, len(body))
    assert kept.text is not None and json.loads(kept.text) == rows
    assert kept.items is not None and json.loads(kept.items.array) == rows
    assert kept.items.array is kept.text  # the whole result: its text is not written twice
    assert kept.items.keys == tuple(f"S{i}" for i in range(8000))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"price": NaN}', "NaN is not a JSON number"),
        (b'{"cut": [1, 2', "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        (b'{"name": "a\\u0000b"}', "\\u0000"),
    ],
)
async def test_a_body_postgresql_could_not_keep_is_not_kept_and_says_why(
    body: bytes, why: str
) -> None:
    kept = await _reader().from_body(body, len(body))
    assert kept.text is None and kept.size == len(body)
    assert kept.problem is not None and why in kept.problem
    outcome = succeeded(kept)
    assert outcome.status is Status.SUCCEEDED and outcome.error == kept.problem


async def test_an_empty_body_is_no_result_and_no_error() -> None:
    assert await _reader().from_body(b"", 0) == Kept(size=0)
    kept = await _reader(items=ItemsSpec(path="data")).from_body(b"", 0)
    assert kept.problem == "empty result; no items extracted"


async def test_a_body_over_result_max_bytes_is_not_kept_and_its_size_is() -> None:
    kept = await _reader(result_max_bytes=1000).from_body(b"[" + b"1," * 600, 1_000_000)
    assert kept.text is None and kept.size == 1_000_000
    assert kept.problem == "result not kept: 1,000,000 bytes, over result_max_bytes (1,000)"


async def test_a_path_that_finds_no_list_is_an_error_of_its_own_and_fails_only_if_required() -> (
    None
):
    body = json.dumps({"data": {"BTC": 1}}).encode()
    loose = await _reader(items=ItemsSpec(path="data")).from_body(body, len(body))
    assert loose.text is not None and loose.items is None  # the result is kept anyway
    assert loose.problem == "items not found: `data` found an object, not a list"
    assert succeeded(loose).status is Status.SUCCEEDED
    strict = await _reader(items=ItemsSpec(path="coins", required=True)).from_body(body, len(body))
    assert strict.problem == "items not found: `coins` found nothing, not a list"
    outcome = succeeded(strict)
    assert outcome.status is Status.FAILED and outcome.retryable
    assert outcome.error == strict.problem


@pytest.mark.parametrize(
    ("content_type", "mode", "wanted"),
    [
        ("application/json", "auto", True),
        ("application/json; charset=utf-8", "auto", True),
        ("application/problem+json", "auto", True),
        ("text/plain", "auto", False),
        ("text/plain", "json", True),
        ("application/json", "none", False),
    ],
)
def test_which_bodies_are_results(content_type: str, mode: str, wanted: bool) -> None:
    assert _reader(result=mode).wants_body(content_type) is wanted


def _python(**fields: Any) -> ResultReader:
    return ResultReader(make_job("etl", action=PythonSpec(target="m:f"), **fields))


async def test_a_python_return_value_is_kept_as_json() -> None:
    rows = [{"id": 7, "v": "x"}, {"id": 8}]
    kept = await _python(items=ItemsSpec(path="rows[]", key="id")).from_value({"rows": rows})
    assert kept is not None and kept.text == '{"rows":[{"id":7,"v":"x"},{"id":8}]}'
    assert kept.size == len(kept.text) and kept.items == Items(json.dumps(rows), 2, ("7", "8"))


async def test_a_python_return_value_that_is_not_data_is_said_only_when_asked_for() -> None:
    obj = object()
    quiet = await _python().from_value(obj)
    assert quiet is not None and quiet.text is None and quiet.problem is None
    assert quiet.value is obj  # still passed to chained jobs
    asked = await _python(result="json").from_value(obj)
    assert asked is not None and asked.problem is not None
    assert asked.problem.startswith("result not kept: not JSON")
    assert await _python().from_value(None) is None  # nothing returned, nothing to say


async def test_a_python_return_value_over_the_limit_is_not_kept() -> None:
    kept = await _python(result_max_bytes=10).from_value(list(range(100)))
    assert (
        kept is not None
        and kept.text is None
        and kept.size == len(json.dumps(list(range(100)), separators=(",", ":")))
    )


def test_keys_are_text_whatever_the_element_holds() -> None:
    spec = ItemsSpec(path="[*]", key="k")
    found = extract_items(spec, [{"k": 1}, {"k": None}, {"k": "a\x00b"}, {"k": ["x"]}, {}, 5])
    assert found.keys == ("1", None, "a\ufffdb", '["x"]', None, None)
    nested = extract_items(ItemsSpec(path="[*]", key="a.b"), [{"a": {"b": 2}}, {"a": 1}])
    assert nested.keys == ("2", None)  # any expression, not only a field name
    assert extract_items(ItemsSpec(path="[*]"), [1, 2]) == Items("[1, 2]", 2)


def test_items_of_an_object_keyed_by_name_and_a_guard_against_an_error_reply() -> None:
    spec = ItemsSpec(
        path="Response != 'Error' && items(@)[*].{symbol: [0], usd: [1].USD}", key="symbol"
    )
    found = extract_items(spec, {"BTC": {"USD": 1.5}, "ETH": {"USD": 2}})
    assert found == Items(
        '[{"symbol": "BTC", "usd": 1.5}, {"symbol": "ETH", "usd": 2}]', 2, ("BTC", "ETH")
    )
    with pytest.raises(NotKept, match="found a bool, not a list"):
        extract_items(spec, {"Response": "Error", "Message": "rate limit"})


def test_a_path_written_over_several_lines_is_quoted_on_one() -> None:
    with pytest.raises(NotKept) as refused:
        extract_items(ItemsSpec(path="data\n  .coins"), {})
    assert str(refused.value) == "items not found: `data .coins` found nothing, not a list"
