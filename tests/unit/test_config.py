"""Config loading: a full valid file, and a table of broken ones with their exact file:line."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler_daemon.errors import ConfigError, ConfigUnreadable
from scheduler_daemon.specs import (
    CommandSpec,
    HttpSpec,
    PythonSpec,
    RetrySpec,
    load_config,
    parse_duration,
)

FULL = """\
database:
  url: ${DB_URL:-}
state_dir: state
timezone: Europe/Berlin
max_concurrency: 8
shutdown_grace: 1m30s
node: web-1
record_buffer: 16MiB
defaults:
  timeout: 30s
  retry: {attempts: 3, delay: 2s, backoff: 2, max_delay: 1m, jitter: 0.1}
  overlap: skip
  priority: normal
jobs:
  prices:
    every: 10s
    offset: 2s
    retry: {attempts: 5}
    http:
      method: post
      url: https://api.example.com/prices
      headers: {X-Key: "${API_KEY}", Authorization: "Bearer literal-secret", Accept: json}
      params: {symbol: BTC, limit: 5}
      json: {levels: [1, 2]}
      expect: [200, 201]
  market_open:
    cron: "0 0 9 * * MON-FRI"
    timezone: America/Sao_Paulo
    priority: high
    command: ["./scrape.sh", "PETR4"]
    env: {TOKEN: "${API_KEY}", MODE: fast}
    cwd: /tmp
    kill_grace: 2s
  pipeline:
    cron: "@daily"
    shell: "cut -d, -f1 data.csv | sort | uniq -c"
    overlap: allow
    max_instances: 2
    capture_bytes: 1KiB
  once:
    at: "2026-12-01T02:00:00"
    python: "mypkg.etl:run"
    args: {levels: [1, 2]}
    enabled: false
    timeout: null
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_full_config_loads_into_frozen_objects(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path, environ={"API_KEY": "s3cret"})
    assert config.database_url is None
    assert config.state_dir == (tmp_path / "state").resolve()
    assert (config.timezone, config.max_concurrency, config.shutdown_grace, config.node) == (
        "Europe/Berlin",
        8,
        90.0,
        "web-1",
    )
    assert config.record_buffer == 16 * 1024 * 1024
    jobs = {job.name: job for job in config.jobs}
    assert list(jobs) == ["prices", "market_open", "pipeline", "once"]

    prices = jobs["prices"]
    assert (prices.every, prices.offset, prices.timeout, prices.timezone) == (
        10.0,
        2.0,
        30.0,
        "Europe/Berlin",
    )
    assert prices.retry == RetrySpec(attempts=5, delay=2, backoff=2, max_delay=60, jitter=0.1)
    assert prices.action == HttpSpec(
        method="POST",
        url="https://api.example.com/prices",
        headers={"X-Key": "s3cret", "Authorization": "Bearer literal-secret", "Accept": "json"},
        params={"symbol": "BTC", "limit": "5"},
        json_body={"levels": [1, 2]},
        expect=(200, 201),
    )

    market = jobs["market_open"]
    assert (market.cron, market.timezone, market.priority) == (
        "0 0 9 * * MON-FRI",
        "America/Sao_Paulo",
        "high",
    )
    assert market.action == CommandSpec(
        argv=("./scrape.sh", "PETR4"),
        env={"TOKEN": "s3cret", "MODE": "fast"},
        cwd="/tmp",
        kill_grace=2.0,
    )
    pipeline = jobs["pipeline"]
    assert isinstance(pipeline.action, CommandSpec) and pipeline.action.shell
    assert (pipeline.overlap, pipeline.max_instances, pipeline.capture_bytes) == ("allow", 2, 1024)

    once = jobs["once"]
    assert once.at == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # naive = the job's zone (Berlin)
    assert once.action == PythonSpec(target="mypkg.etl:run", args={"levels": [1, 2]})
    assert (once.enabled, once.timeout) == (False, None)
    with pytest.raises(Exception):
        prices.every = 5.0  # type: ignore[misc]


def test_redacted_spec_never_contains_a_secret(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={"API_KEY": "s3cret"})
    for job in config.jobs:
        assert "s3cret" not in repr(job.redacted())
        assert "literal-secret" not in repr(job.redacted())
    prices = config.jobs[0].redacted()
    assert prices["action"]["headers"] == {
        "X-Key": "${API_KEY}",
        "Authorization": "***",
        "Accept": "json",
    }
    assert config.jobs[1].redacted()["action"]["env"]["TOKEN"] == "${API_KEY}"


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    env = {
        "API_KEY": "k",
        "SCHEDULER_DATABASE_URL": "postgresql://u@db/x",
        "SCHEDULER_MAX_CONCURRENCY": "3",
        "SCHEDULER_TIMEZONE": "Asia/Tokyo",
    }
    config = load_config(write(tmp_path, FULL), environ=env)
    assert (config.database_url, config.max_concurrency, config.timezone) == (
        "postgresql://u@db/x",
        3,
        "Asia/Tokyo",
    )
    assert config.jobs[0].timezone == "Asia/Tokyo"  # the default zone of jobs without their own


def test_whole_value_interpolation_is_typed_like_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        max_concurrency: ${N}
        state_dir: ${STATE_DIRECTORY:-/var/lib/sd}
        jobs:
          a: {every: "${EVERY:-5s}", command: ["echo", "$$HOME is ${HOME_NAME}"]}
    """,
    )
    config = load_config(path, environ={"N": "12", "HOME_NAME": "me"})
    assert config.max_concurrency == 12
    assert config.state_dir == Path("/var/lib/sd")
    assert config.jobs[0].every == 5.0
    assert config.jobs[0].action == CommandSpec(argv=("echo", "$HOME is me"))


def test_state_dir_defaults_to_systemd_state_directory(tmp_path: Path) -> None:
    path = write(tmp_path, 'jobs: {a: {every: 1s, command: ["true"]}}\n')
    assert load_config(path, environ={}).state_dir == (tmp_path / "var").resolve()
    sysd = load_config(path, environ={"STATE_DIRECTORY": "/var/lib/scheduler-daemon"})
    assert sysd.state_dir == Path("/var/lib/scheduler-daemon")


@pytest.mark.parametrize("state_dir", ["./var", "var", "state/here"])
def test_systemd_state_directory_wins_over_a_relative_state_dir(
    tmp_path: Path, state_dir: str
) -> None:
    """The quick start's `./var` next to /etc/scheduler-daemon/config.yaml would be read-only
    under the unit's sandbox: StateDirectory= is where a unit keeps its state."""
    path = write(
        tmp_path, f'state_dir: {state_dir}\njobs: {{a: {{every: 1s, command: ["true"]}}}}\n'
    )
    assert load_config(path, environ={}).state_dir == (tmp_path / state_dir).resolve()
    sysd = load_config(path, environ={"STATE_DIRECTORY": "/var/lib/scheduler-daemon"})
    assert sysd.state_dir == Path("/var/lib/scheduler-daemon")


def test_an_absolute_state_dir_is_used_as_written_under_systemd(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir: /srv/sd\njobs: {a: {every: 1s, command: ["true"]}}\n')
    sysd = load_config(path, environ={"STATE_DIRECTORY": "/var/lib/scheduler-daemon"})
    assert sysd.state_dir == Path("/srv/sd")


@pytest.mark.parametrize(
    ("text", "line", "path", "phrase"),
    [
        (
            "jobs:\n  a: {every: 1s, command: [x]}\n  a: {every: 2s, command: [y]}\n",
            3,
            "jobs.a",
            "duplicate key 'a' (first defined on line 2)",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    every: 2s\n    command: [x]\n",
            4,
            "jobs.a.every",
            "duplicate key",
        ),
        (
            "max_concurency: 4\njobs:\n  a: {every: 1s, command: [x]}\n",
            1,
            "max_concurency",
            "did you mean 'max_concurrency'?",
        ),
        ("jobs:\n  a:\n    every: 1s\n    comand: [x]\n", 2, "jobs.a", "exactly one action"),
        (
            "jobs:\n  a:\n    every: 1s\n    command: [x]\n    retry: {atempts: 3}\n",
            5,
            "jobs.a.retry.atempts",
            "did you mean 'attempts'?",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    http: {url: 'http://x', method: GET, header: {}}\n",
            4,
            "jobs.a.http.header",
            "did you mean 'headers'?",
        ),
        (
            "max_concurrency: abc\njobs: {}\n",
            1,
            "max_concurrency",
            "expected an integer ≥ 1, got 'abc'",
        ),
        ("max_concurrency: yes\njobs: {}\n", 1, "max_concurrency", "got a boolean"),
        (
            "jobs:\n  a:\n    every: 1s\n    cron: '* * * * *'\n    command: [x]\n",
            2,
            "jobs.a",
            "exactly one of cron, every, at, got cron and every",
        ),
        (
            "jobs:\n  a:\n    command: [x]\n",
            2,
            "jobs.a",
            "exactly one of cron, every, at, got none",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    command: [x]\n    shell: y\n",
            2,
            "jobs.a",
            "got command and shell",
        ),
        (
            "jobs:\n  a:\n    cron: '61 * * * *'\n    command: [x]\n",
            3,
            "jobs.a.cron",
            "invalid cron",
        ),
        ("jobs:\n  a:\n    cron: '* * * * * * *'\n    command: [x]\n", 3, "jobs.a.cron", "got 7"),
        (
            "jobs:\n  a:\n    every: 1s\n    timezone: Mars/Olympus\n    command: [x]\n",
            4,
            "jobs.a.timezone",
            "expected an IANA time zone",
        ),
        (
            "jobs:\n  a:\n    every: -5s\n    command: [x]\n",
            3,
            "jobs.a.every",
            "expected a duration",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    timeout: -1\n    command: [x]\n",
            4,
            "jobs.a.timeout",
            "≥ 0, got -1",
        ),
        (
            "jobs:\n  a:\n    every: soon\n    command: [x]\n",
            3,
            "jobs.a.every",
            "expected a duration like 10s, 5m, 1h30m or a number of seconds, got 'soon'",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    command: ['${NOPE}']\n",
            4,
            "jobs.a.command.0",
            "environment variable NOPE is not set",
        ),
        (
            "jobs:\n  bad name:\n    every: 1s\n    command: [x]\n",
            2,
            "jobs.bad name",
            "expected a job name",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    env: {A: b}\n    http: {url: 'http://x'}\n",
            4,
            "jobs.a.env",
            "only applies to command and shell jobs",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    http: {url: 'example.com/x'}\n",
            4,
            "jobs.a.http.url",
            "expected an http:// or https:// URL",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    python: 'not a target'\n",
            4,
            "jobs.a.python",
            'expected "package.module:function"',
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    overlap: sometimes\n    command: [x]\n",
            4,
            "jobs.a.overlap",
            "expected one of skip, allow, replace, got 'sometimes'",
        ),
        (
            "defaults:\n  timeout: forever\njobs:\n  a: {every: 1s, command: [x]}\n",
            2,
            "jobs.a.timeout",
            "got 'forever'",
        ),
        ("jobs:\n  a: [1, 2]\n", 2, "jobs.a", "expected a mapping of job fields, got a list"),
        ("jobs: []\n", 1, "jobs", "expected a mapping of jobs, got a list"),
        ("database: {url: 'mysql://x'}\njobs: {}\n", 1, "database.url", "a postgresql:// URL"),
        ("database: {uri: x}\njobs: {}\n", 1, "database.uri", "did you mean 'url'?"),
        (
            "jobs:\n  a:\n    every: 1s\n    command: [x]\n    delivery: sometimes\n",
            5,
            "jobs.a.delivery",
            "expected one of at_least_once, at_most_once, got 'sometimes'",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    command: [x]\n"
            "    delivery: at_most_once\n    catch_up: all\n",
            6,
            "jobs.a.catch_up",
            "`catch_up: all` runs missed fires, which `delivery: at_most_once` never does",
        ),
        (
            "defaults:\n  delivery: at_most_once\n  catch_up: latest\n"
            "jobs:\n  a: {every: 1s, command: [x]}\n",
            3,
            "defaults.catch_up",
            "`delivery: at_most_once` never does",
        ),
        (
            "defaults:\n  delivery: at_most_once\n"
            "jobs:\n  a: {every: 1s, command: [x], catch_up: latest}\n",
            4,
            "jobs.a.catch_up",
            "`delivery: at_most_once` never does",
        ),
        (
            "jobs:\n  a: {every: 1s, python: m:f, then: [b]}\n  b: {every: 1s, python: m:f,"
            " then: [c]}\n  c:\n    every: 1s\n    python: m:f\n    then: [a]\n",
            2,
            "jobs.a.then",
            "a cycle of chained jobs: a → b → c → a",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    python: m:f\n    then: [a]\n",
            5,
            "jobs.a.then",
            "a cycle of chained jobs: a → a",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    python: m:f\n    then: [nope]\n",
            5,
            "jobs.a.then",
            "unknown job 'nope'",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    http: {url: 'http://x'}\n"
            "    items: {path: 'data[*'}\n",
            5,
            "jobs.a.items.path",
            "expected a JMESPath expression, got 'data[*'",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    command: [x]\n    items: {path: data}\n",
            5,
            "jobs.a.items",
            "`items` only applies to http and python jobs (a command has no result)",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    http: {url: 'http://x'}\n    result: xml\n",
            5,
            "jobs.a.result",
            "expected one of auto, json, none, got 'xml'",
        ),
        (
            "defaults:\n  then: [a]\njobs:\n  a: {every: 1s, command: [x]}\n",
            2,
            "defaults.then",
            "`then` cannot be a default",
        ),
        (
            "retention: {results: forever}\njobs: {}\n",
            1,
            "retention.results",
            "expected a duration",
        ),
        (
            "jobs:\n  a:\n    every: 1s\n    command: [x]\n    starting_deadline: 0\n",
            5,
            "jobs.a.starting_deadline",
            "expected a duration > 0, got 0",
        ),
    ],
)
def test_broken_configs_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, path: str, phrase: str
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(file, environ={})
    prefix = f"{file}:{line}: {path}: "
    assert any(p.startswith(prefix) and phrase in p for p in err.value.problems), err.value.problems


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    file = write(tmp_path, "jobs:\n  a: {every: 1s\n  b: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(file, environ={})
    [problem] = err.value.problems
    assert problem.startswith(f"{file}:") and "invalid YAML" in problem


def test_every_error_is_reported_in_one_pass(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        """\
        max_concurrency: 0
        timezone: Nowhere/City
        jobs:
          a: {cron: "99 * * * *", command: [x]}
          b: {every: 1s, shell: "x", priority: urgent}
          c: {every: 1s}
          d: {at: "tomorrow", python: "m:f"}
    """,
    )
    with pytest.raises(ConfigError) as err:
        load_config(file, environ={})
    problems = err.value.problems
    assert len(problems) == 6, problems
    for fragment in (
        ":1: max_concurrency",
        ":2: timezone",
        ":4: jobs.a.cron",
        ":5: jobs.b.priority",
        ":6: jobs.c",
        ":7: jobs.d.at",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)


@pytest.mark.parametrize("text", ["", "just a string\n", "- a\n- b\n"])
def test_empty_or_non_mapping_files_are_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, text), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigUnreadable, match=r"no config file at .*nope\.yaml") as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.missing


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigUnreadable, match=r"cannot read config file .*: Is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        (7, 7),
        (1.5, 1.5),
        ("2.5s", 2.5),
        ("90", 90),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_spec_hash_changes_only_with_the_spec(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, FULL), environ={"API_KEY": "k"})
    b = load_config(write(tmp_path, FULL), environ={"API_KEY": "k"})
    c = load_config(
        write(tmp_path, FULL.replace("every: 10s", "every: 20s")), environ={"API_KEY": "k"}
    )
    assert a.jobs[0].spec_hash() == b.jobs[0].spec_hash() != c.jobs[0].spec_hash()
    assert a.jobs[1].spec_hash() == c.jobs[1].spec_hash()


def test_spec_hash_is_cached_but_never_stale_on_a_copy(tmp_path: Path) -> None:
    job = load_config(write(tmp_path, FULL), environ={"API_KEY": "k"}).jobs[0]
    first = job.spec_hash()
    assert job.spec_hash() == first
    changed = job.model_copy(update={"every": 99.0})
    assert changed.spec_hash() != first
    assert job.model_copy().spec_hash() == first


# -- admin ----------------------------------------------------------------------------------------


def _admin_config(tmp_path: Path, admin: str, environ: dict[str, str] | None = None) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(f"admin:\n{textwrap.indent(textwrap.dedent(admin), '  ')}jobs: {{}}\n")
    return load_config(path, environ=environ or {}).admin


def test_admin_listens_on_loopback_or_a_unix_socket(tmp_path: Path) -> None:
    tcp = _admin_config(tmp_path, "listen: 127.0.0.1:8089\ntoken: ${T}\n", {"T": "s3cret"})
    assert tcp.host == "127.0.0.1" and tcp.port == 8089 and tcp.token == "s3cret"  # type: ignore[attr-defined]
    assert "s3cret" not in repr(tcp)
    v6 = _admin_config(tmp_path, 'listen: "[::1]:9000"\n')
    assert v6.host == "::1" and v6.address == "[::1]:9000"  # type: ignore[attr-defined]
    unix = _admin_config(tmp_path, "listen: ./run/admin.sock\n")
    assert unix.unix_socket == tmp_path / "run" / "admin.sock"  # type: ignore[attr-defined]
    empty = _admin_config(tmp_path, "listen: localhost:1\ntoken: ${T:-}\n")
    assert empty.token is None  # type: ignore[attr-defined]
    remote = _admin_config(tmp_path, "listen: 0.0.0.0:8089\nallow_remote: true\ntoken: x\n")
    assert remote.host == "0.0.0.0"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("admin", "message"),
    [
        (
            "listen: 0.0.0.0:8089\n",
            "config.yaml:2: admin.listen: '0.0.0.0:8089' is reachable beyond",
        ),
        ("listen: 10.0.0.5:80\n", "set `allow_remote: true`"),
        ("listen: :8089\n", "is reachable beyond this machine"),
        ("listen: 127.0.0.1\n", "admin.listen: expected host:port (127.0.0.1:8089) or a unix"),
        ("listen: 127.0.0.1:99999\n", "expected host:port"),
        ("token: x\n", "config.yaml:1: admin: missing `listen:`"),
        ("listen: 127.0.0.1:1\nallow_remote: yes-please\n", "admin.allow_remote: expected true"),
        ("listen: 127.0.0.1:1\ntoken: [1]\n", "admin.token: expected a string"),
        ("listen: 127.0.0.1:1\nport: 2\n", "config.yaml:3: admin.port: unknown key 'port'"),
        ("listen: 0.0.0.0:1\nallow_remote: true\n", "admin.allow_remote: reachable beyond this"),
    ],
)
def test_admin_mistakes_are_named(tmp_path: Path, admin: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _admin_config(tmp_path, admin)
    assert message in "\n".join(info.value.problems)


def test_events_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("events: false\njobs: {}\n")
    assert load_config(path, environ={}).events is False
    path.write_text("jobs: {}\n")
    assert load_config(path, environ={}).events is True
    path.write_text("events: maybe\njobs: {}\n")
    with pytest.raises(ConfigError, match="events"):
        load_config(path, environ={})


def test_delivery_defaults_to_at_least_once_and_a_default_catch_up_yields_to_at_most_once(
    tmp_path: Path,
) -> None:
    file = write(
        tmp_path,
        """
        defaults: {catch_up: all}
        jobs:
          usual: {every: 1s, command: [x]}
          once: {every: 1s, command: [x], delivery: at_most_once}
          quiet: {every: 1s, command: [x], delivery: at_most_once, catch_up: none}
        """,
    )
    config = load_config(file, environ={})
    usual, once, quiet = config.jobs
    assert (usual.delivery, usual.catch_up) == ("at_least_once", "all")
    assert once.delivery == "at_most_once" and once.catch_up != "all"
    assert (quiet.delivery, quiet.catch_up) == ("at_most_once", "none")
