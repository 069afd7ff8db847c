"""``${VAR}`` values: strings as set (never re-read as YAML), typed only by their field, and
never shown in an error message."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.specs import load_config

HEAD = 'database: {url: "postgresql:///nowhere"}\n'


def _load(tmp_path: Path, text: str, environ: dict[str, str]) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + text)
    return load_config(path, environ=environ)


@pytest.mark.parametrize("value", ["s3cr3t #x", "~", "1:30", "true", "[a, b]", "{a: 1}", "0x1F"])
def test_a_whole_value_from_a_variable_is_the_variables_text(tmp_path: Path, value: str) -> None:
    config = _load(
        tmp_path,
        "jobs:\n  j:\n    every: 1h\n    python: m:f\n    args: {token: '${TOKEN}'}\n"
        "  h:\n    every: 1h\n    http: {url: 'https://x', headers: {X-Key: '${TOKEN}'}}\n",
        {"TOKEN": value},
    )
    j, h = config.jobs  # type: ignore[attr-defined]
    assert j.args == {"token": value} and h.http.headers == {"X-Key": value}
    assert type(j.args["token"]) is str and type(h.http.headers["X-Key"]) is str


def test_fields_that_are_not_strings_parse_the_variables_text(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "max_concurrency: ${N}\njobs:\n  j:\n    every: ${EVERY}\n    enabled: ${ON}\n"
        "    retry: {attempts: '${N}', backoff: '${B}'}\n"
        "    http: {url: 'https://x', expect: '${CODE}'}\n",
        {"N": "8", "EVERY": "1h30m", "ON": "false", "B": "1.5", "CODE": "204"},
    )
    [job] = config.jobs  # type: ignore[attr-defined]
    assert config.max_concurrency == 8  # type: ignore[attr-defined]
    assert (job.every, job.enabled, job.retry.attempts, job.retry.backoff) == (5400, False, 8, 1.5)
    assert job.http.expect == (204,)


@pytest.mark.parametrize(
    ("text", "environ", "place"),
    [
        ("max_concurrency: ${N}\njobs: {}\n", {"N": "s3cr3t-8"}, "max_concurrency"),
        ("jobs:\n  j: {every: '${E}', command: [x]}\n", {"E": "s3cr3t"}, "jobs.j.every"),
        ("jobs:\n  j: {cron: '${C}', command: [x]}\n", {"C": "s3cr3t * * * *"}, "jobs.j.cron"),
        ("timezone: ${Z}\njobs: {}\n", {"Z": "s3cr3t"}, "timezone"),
        ("jobs:\n  j: {every: 1h, enabled: '${B}', command: [x]}\n", {"B": "s3cr3t"}, "enabled"),
        ("jobs:\n  j: {every: 1h, shell: 'x', command: '${C}'}\n", {"C": "'s3cr3t"}, "command"),
        ("admin: {listen: '${L}'}\njobs: {}\n", {"L": "s3cr3t:1"}, "admin.listen"),
        ("admin: {listen: '${L}'}\njobs: {}\n", {"L": "10.0.0.1:1"}, "admin.listen"),
        ("jobs:\n  j: {at: '${AT}', command: [x]}\n", {"AT": "s3cr3t"}, "jobs.j.at"),
    ],
)
def test_no_value_from_a_variable_is_shown_in_an_error(
    tmp_path: Path, text: str, environ: dict[str, str], place: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, environ)
    problems = "\n".join(caught.value.problems)
    assert place in problems and "${" in problems, problems
    assert "s3cr3t" not in problems and "10.0.0.1" not in problems, problems


def test_an_environment_override_is_not_shown_in_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "jobs: {}\n", {"SCHEDULER_DATABASE_URL": "mysql://u:s3cr3t@h/db"})
    [problem] = caught.value.problems
    assert "SCHEDULER_DATABASE_URL" in problem and "s3cr3t" not in problem, problem


def test_an_environment_override_still_sets_a_number(tmp_path: Path) -> None:
    config = _load(tmp_path, "jobs: {}\n", {"SCHEDULER_MAX_CONCURRENCY": "3"})
    assert config.max_concurrency == 3  # type: ignore[attr-defined]


def test_a_templated_string_copies_as_a_plain_string() -> None:
    from scheduler_daemon.specs.values import Templated

    value = Templated("s3cr3t", "${T}")
    assert type(copy.deepcopy(value)) is str and type(pickle.loads(pickle.dumps(value))) is str
