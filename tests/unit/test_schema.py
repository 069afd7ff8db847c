"""The config's JSON Schema (`scheduler-daemon schema`): what an editor checks config.yaml with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from scheduler_daemon.operation.cli import main
from scheduler_daemon.specs.schema import DRAFT, config_schema
from tests.helpers import REPO

SHIPPED = [
    REPO / "config.yaml",
    REPO / "systemd" / "config.yaml",
    *sorted((REPO / "examples").glob("*.yaml")),
]


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = config_schema()
    assert schema["$schema"] == DRAFT
    return jsonschema_rs.Draft202012Validator(schema)


def as_json(path: Path) -> Any:
    """The file as a YAML language server sees it: plain JSON values, ${...} unexpanded."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_the_schema_accepts_every_shipped_config(validator: Any, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(as_json(path))]
    assert errors == []


JOB = {"every": "10s", "command": ["true"]}


@pytest.mark.parametrize(
    "config",
    [
        {"jobs": {"a": {**JOB, "bogus": 1}}},  # unknown job key
        {"jobs": {"a": JOB}, "bogus": 1},  # unknown top-level key
        {"jobs": {"a": {**JOB, "http": {"url": "http://x", "header": {}}}}},
        {"jobs": {"a": {**JOB, "retry": {"atempts": 2}}}},
        {"jobs": {"a": {**JOB, "name": "a"}}},  # a job is named by its key
        {"jobs": {"bad name": JOB}},
        {"jobs": {"a": {**JOB, "overlap": "sometimes"}}},
        {"jobs": {"a": {**JOB, "delivery": "exactly_once"}}},
        {"jobs": {"a": {**JOB, "max_instances": "5"}}},
        {"jobs": {"a": {**JOB, "every": "soon"}}},
        {"jobs": {"a": {**JOB, "timeout": -1}}},
        {"jobs": {"a": JOB}, "defaults": {"every": "1s"}},  # no schedule from defaults
        {"jobs": {"a": JOB}, "admin": {"token": "x"}},  # listen is required
        {"defaults": {}},  # no jobs
        {"jobs": {"a": {"every": "1s"}}},  # no action
        {"jobs": {"a": {**JOB, "shell": "x"}}},  # two actions
        {"jobs": {"a": {**JOB, "cron": "* * * * *"}}},  # two schedules
    ],
)
def test_the_schema_rejects_mistakes(validator: Any, config: dict[str, Any]) -> None:
    assert not validator.is_valid(config)


@pytest.mark.parametrize("every", ["10s", "1h30m", "500ms", " 2 m ", 90, 1.5, "90"])
def test_durations_are_text_or_a_number_of_seconds(validator: Any, every: object) -> None:
    assert validator.is_valid({"jobs": {"a": {**JOB, "every": every}}})


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://api.example.com/v1", True),
        ("${API_URL:-https://api.example.com}/v1/prices", True),  # the loader expands it first
        ("${API_URL}", True),
        ("ftp://api.example.com", False),
        ("api.example.com/v1", False),
    ],
)
def test_an_http_url_may_start_with_a_variable(validator: Any, url: str, valid: bool) -> None:
    assert validator.is_valid({"jobs": {"a": {"every": "10s", "http": {"url": url}}}}) is valid


def test_the_cli_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()
