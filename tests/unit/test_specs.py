"""The spec models on their own: a job from JSON, defaults written once, the derived action."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.specs import (
    CommandSpec,
    HttpSpec,
    JobSpec,
    PythonSpec,
    RetrySpec,
    load_config,
)
from scheduler_daemon.specs.schema import config_schema
from tests.helpers import make_job


def problems(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]


def yaml_problems(tmp_path: Path, job: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text("jobs:\n  a:\n" + textwrap.indent(textwrap.dedent(job) + "\n", "    "))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    return err.value.problems


BROKEN_JOBS: list[tuple[dict[str, Any], str, str]] = [
    ({"every": "soon", "command": ["x"]}, "every", "expected a duration like 10s"),
    ({"every": "1s"}, "", "expected exactly one action (http, command, shell, python), got none"),
    ({"every": "1s", "cron": "* * * * *", "shell": "x"}, "", "got cron and every"),
    ({"every": "1s", "comand": ["x"], "shell": "x"}, "comand", "did you mean 'command'?"),
    ({"every": "1s", "command": ["x"], "max_instances": "5"}, "max_instances", "got '5'"),
    ({"every": "1s", "command": ["x"], "enabled": "yes"}, "enabled", "expected true or false"),
    ({"every": "1s", "python": "m:f", "env": {"A": "b"}}, "env", "only applies to command"),
    ({"every": "1s", "command": ["x"], "args": {}}, "args", "only applies to python jobs"),
    ({"cron": "* * * * *", "offset": "1s", "shell": "x"}, "offset", "only applies to `every`"),
    ({"every": "1s", "http": {"method": "GET"}}, "http", "missing `url:`"),
    ({"every": "1s", "http": {"url": "http://x", "json": {}, "body": "x"}}, "http", "got both"),
    ({"every": "1s", "http": {"url": "http://x", "expect": [700]}}, "http.expect", "(100-599)"),
    ({"every": "1s", "shell": "x", "retry": {"atempts": 2}}, "retry.atempts", "'attempts'?"),
    ({"every": "1s", "shell": "x", "retry": [1]}, "retry", "expected a mapping, got a list"),
    ({"every": "1s", "shell": "x", "overlap": "sometimes"}, "overlap", "skip, allow, replace"),
    ({"every": "1s", "shell": "x", "starting_deadline": 0}, "starting_deadline", "> 0, got 0"),
    ({"every": "1s", "http": {"url": "http://x", "body": None}}, "http.body", "got nothing"),
    ({"every": "1s", "shell": None}, "shell", "expected a non-empty string, got nothing (null)"),
]


@pytest.mark.parametrize(("job", "path", "phrase"), BROKEN_JOBS)
def test_a_job_from_json_gets_the_same_problems_as_from_yaml(
    tmp_path: Path, job: dict[str, Any], path: str, phrase: str
) -> None:
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate_json(json.dumps({"name": "a", **job}))
    from_json = problems(err.value)
    assert any(p == path and phrase in m for p, m in from_json), from_json
    # The file adds its name, the line and the job's place; the path and message are the same.
    from_yaml = [re.sub(r"^.*?:\d+: ", "", p) for p in yaml_problems(tmp_path, json.dumps(job))]
    in_file = [f"jobs.a.{p}: {m}" if p else f"jobs.a: {m}" for p, m in from_json]
    assert sorted(from_yaml) == sorted(in_file)


def test_a_minimal_yaml_job_has_exactly_the_models_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('jobs:\n  a: {every: 1s, command: ["true"]}\n')
    [loaded] = load_config(path, environ={}).jobs
    assert loaded == JobSpec(name="a", every=1.0, command=("true",))
    assert loaded.retry == RetrySpec()
    assert loaded.action == CommandSpec(argv=("true",))


def test_an_attempt_times_out_after_an_hour_unless_its_job_says_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "jobs:\n"
        "  default: {every: 1m, command: [x]}\n"
        "  none: {every: 1m, command: [x], timeout: null}\n"
        "  own: {every: 1m, command: [x], timeout: 5m}\n"
    )
    timeouts = {job.name: job.timeout for job in load_config(path, environ={}).jobs}
    assert timeouts == {"default": 3600.0, "none": None, "own": 300.0}
    path.write_text("defaults: {timeout: null}\njobs:\n  a: {every: 1m, command: [x]}\n")
    assert load_config(path, environ={}).jobs[0].timeout is None
    job_schema = config_schema()["$defs"]["JobSpec"]["properties"]["timeout"]
    assert job_schema["default"] == 3600.0 and {"type": "null"} in job_schema["anyOf"]


def test_a_job_built_in_code_may_give_its_action_spec() -> None:
    http = JobSpec(name="h", every=1.0, action=HttpSpec(url="http://x"))  # type: ignore[call-arg]
    assert http.action == HttpSpec(url="http://x") and http.http == http.action
    shell = JobSpec(name="s", every=1.0, action=CommandSpec(shell="ls", kill_grace=1.0))  # type: ignore[call-arg]
    assert (shell.shell, shell.kill_grace, shell.command) == ("ls", 1.0, None)
    python = JobSpec(name="p", cron="@reboot", action=PythonSpec(target="m:f", args={"x": 1}))  # type: ignore[call-arg]
    assert python.action == PythonSpec(target="m:f", args={"x": 1}) and python.run_on_start
    for job in (http, shell, python):
        assert job.model_copy().kind == job.action.kind  # the kind, with no action built


def test_the_action_follows_a_copy() -> None:
    job = JobSpec(name="a", every=1.0, command=("true",))
    assert job.action.kind == "command"
    copy = job.model_copy(update={"command": None, "python": "m:f"})
    assert copy.action == PythonSpec(target="m:f")


def test_a_naive_at_is_in_the_jobs_zone() -> None:
    job = JobSpec.model_validate(
        {"name": "a", "at": "2026-12-01T02:00:00", "timezone": "Asia/Tokyo", "shell": "x"}
    )
    assert job.at is not None and job.at.utcoffset() is not None
    assert job.at.isoformat() == "2026-12-01T02:00:00+09:00"


def test_a_value_from_defaults_is_reported_at_its_line_there(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "defaults:\n"
        "  retry:\n"
        "    delay: later\n"
        "jobs:\n"
        "  a: {every: 1s, command: [x], retry: {attempts: 2}}\n"
        "  b: {every: 1s, command: [x], retry: {delay: 1s, attempts: 0}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.problems == [
        f"{path}:3: jobs.a.retry.delay: expected a duration like 10s, 5m, 1h30m or a number of "
        "seconds, got 'later'",
        f"{path}:6: jobs.b.retry.attempts: expected an integer ≥ 1, got 0",
    ]


def test_options_of_another_action_kind_are_not_taken_from_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "defaults: {env: {A: b}, args: {x: 1}, kill_grace: 1s}\n"
        "jobs:\n  c: {every: 1s, command: [x]}\n  p: {every: 1s, python: 'm:f'}\n"
    )
    command, python = load_config(path, environ={}).jobs
    assert command.action == CommandSpec(argv=("x",), env={"A": "b"}, kill_grace=1.0)
    assert python.action == PythonSpec(target="m:f", args={"x": 1})


def test_a_job_may_not_name_itself(tmp_path: Path) -> None:
    problems = yaml_problems(tmp_path, "every: 1s\nshell: x\nname: other\n")
    assert problems == [
        f"{tmp_path / 'config.yaml'}:5: jobs.a.name: unknown key 'name' (a job is named by its key)"
    ]


@pytest.mark.parametrize(
    "job",
    [
        JobSpec(name="c", every=1.0, command=("x",), env={"A": "b"}),
        JobSpec(name="s", every=1.0, shell="ls", cwd="/tmp"),
        JobSpec(name="p", every=1.0, python="m:f", args={"n": 1}),
        JobSpec(name="h", every=1.0, http=HttpSpec(url="http://x", json_body={"a": 1})),
    ],
    ids=lambda job: job.name,
)
def test_a_jobs_action_builds_the_same_job(job: JobSpec) -> None:
    assert JobSpec(name=job.name, every=1.0, action=job.action) == job  # type: ignore[call-arg]


def test_a_field_is_written_as_its_key_never_as_the_name_behind_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('jobs:\n  a:\n    every: 1s\n    http: {url: "http://x", json_body: {a: 1}}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [
        f"{path}:4: jobs.a.http.json_body: unknown key 'json_body'; did you mean 'json'?"
    ]


def test_inherit_env_is_a_command_option(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "defaults: {inherit_env: true}\n"
        "jobs:\n"
        "  c: {every: 1s, command: [x]}\n"
        "  p: {every: 1s, python: 'm:f'}\n"
        "  own: {every: 1s, shell: x, inherit_env: false}\n"
    )
    c, p, own = load_config(path, environ={}).jobs
    assert isinstance(c.action, CommandSpec) and c.action.inherit_env
    assert isinstance(own.action, CommandSpec) and not own.action.inherit_env
    assert isinstance(p.action, PythonSpec)  # defaults' command options never reach it
    path.write_text("jobs:\n  p: {every: 1s, python: 'm:f', inherit_env: true}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [
        f"{path}:2: jobs.p.inherit_env: `inherit_env` only applies to command and shell jobs"
    ]


def test_jobs_share_what_they_set_and_a_copy_changes_only_its_own() -> None:
    a, b = (make_job(name, every=60.0, timeout=5.0) for name in ("a", "b"))
    assert a.model_fields_set is b.model_fields_set  # one set for every job that set the same
    c = a.model_copy(update={"timeout": 7.0, "priority": "high"})
    assert "priority" in c.model_fields_set
    assert "priority" not in a.model_fields_set and "priority" not in b.model_fields_set
    assert a.model_dump(exclude_unset=True) == {**b.model_dump(exclude_unset=True), "name": "a"}


def test_jobs_of_one_cron_expression_have_it_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler_daemon.specs import cron

    parsed: list[str] = []
    real = cron.croniter

    def counted(expr: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(expr)
        return real(expr, *args, **kwargs)

    monkeypatch.setattr(cron, "croniter", counted)
    jobs = [make_job(f"j{i}", cron="17 4 * * 3") for i in range(200)]  # an expression of its own
    assert {job.cron for job in jobs} == {"17 4 * * 3"}
    assert parsed == ["17 4 * * 3"]  # 0.1 ms each: 11 s for 100k cron jobs before
    with pytest.raises(ValidationError, match="invalid cron expression"):
        make_job("bad", cron="61 4 * * 3")
    with pytest.raises(ValidationError, match="invalid cron expression"):
        make_job("bad-again", cron="61 4 * * 3")  # a remembered refusal is still one
