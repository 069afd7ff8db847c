"""Each kind of config value: what it accepts and the words it refuses the rest with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from scheduler_daemon.specs import Invalid, parse_duration, places
from scheduler_daemon.specs import action_values as av
from scheduler_daemon.specs import values as v

ACCEPTED: list[tuple[v.Value, Any, Any]] = [
    (v.Duration(), "1h30m", 5400.0),
    (v.Duration(), " 2 s ", 2.0),
    (v.Duration(), 0, 0.0),
    (v.Duration(optional=True), None, None),
    (v.Size(), "64KiB", 65536),
    (v.Size(), "1MB", 1_000_000),
    (v.Size(), 12, 12),
    (v.Integer(0), 0, 0),
    (v.Number(0, 1), 1, 1.0),
    (v.Boolean(), False, False),
    (v.Zone(), "America/Sao_Paulo", "America/Sao_Paulo"),
    (v.Cron(), "@reboot", "@reboot"),
    (v.Cron(), "*/30 * * * * *", "*/30 * * * * *"),
    (v.DateTime(), "2026-12-01T02:00:00Z", datetime.fromisoformat("2026-12-01T02:00:00+00:00")),
    (av.StrMap(), {"n": 5, "on": True}, {"n": "5", "on": "true"}),
    (av.Argv(), "./run.sh --all 'a b'", ("./run.sh", "--all", "a b")),
    (av.Argv(), ["echo", 1], ("echo", "1")),
    (av.PyTarget(), "pkg.mod:Class.run", "pkg.mod:Class.run"),
    (av.Url(), "https://example.com/x", "https://example.com/x"),
    (av.Method(), "post", "POST"),
    (av.Statuses(), 204, (204,)),
    (av.Statuses(), [200, 201], (200, 201)),
    (v.JobName(), "a.b-c_1", "a.b-c_1"),
    (places.PostgresUrl(), "", None),
    (places.Secret(), "", None),
]


@pytest.mark.parametrize(("kind", "given", "expected"), ACCEPTED)
def test_accepted_values(kind: v.Value, given: Any, expected: Any) -> None:
    assert kind.convert(given, {}) == expected


REFUSED: list[tuple[v.Value, Any, str]] = [
    (
        v.Duration(),
        "soon",
        "expected a duration like 10s, 5m, 1h30m or a number of seconds, got 'soon'",
    ),
    (v.Duration(), -1, "expected a duration ≥ 0, got -1"),
    (v.Duration(), True, "got a boolean (true)"),
    (v.Duration(positive=True), "0s", "expected a duration > 0, got '0s'"),
    (v.Duration(), None, "got nothing (null)"),
    (v.Size(), "lots", "expected a size in bytes such as 65536, 64KiB or 1MiB, got 'lots'"),
    (v.Integer(1), True, "expected an integer ≥ 1, got a boolean (true)"),
    (v.Integer(1), "5", "expected an integer ≥ 1, got '5'"),
    (v.Integer(1), 0, "expected an integer ≥ 1, got 0"),
    (v.Number(0, 1), 2, "expected a number between 0 and 1, got 2"),
    (v.Number(1), "x", "expected a number ≥ 1, got 'x'"),
    (v.Boolean(), "yes", "expected true or false, got 'yes'"),
    (v.Text(), " ", "expected a non-empty string, got ' '"),
    (
        v.Zone(),
        "Mars/Olympus",
        "expected an IANA time zone such as Europe/Berlin, got 'Mars/Olympus'",
    ),
    (v.Cron(), "* * *", "expected 5 or 6 fields (6 = seconds first) or an @alias, got 3"),
    (v.Cron(), 5, "expected a cron expression string, got 5"),
    (v.DateTime(), "tomorrow", "expected an ISO 8601 date-time such as 2026-12-01T02:00:00Z"),
    (av.StrMap(), {"a": None}, "expected string values, got nothing (null) for 'a'"),
    (av.StrMap(), [1], "expected a mapping of names to strings, got a list"),
    (av.AnyMapping(), 3, "expected a mapping, got 3"),
    (av.Argv(), [], "expected at least the program to run, got an empty command"),
    (
        av.Argv(),
        {"a": 1},
        'expected a list of arguments such as ["./run.sh", "--all"], got a mapping',
    ),
    (av.Argv(), "echo 'open", 'expected a command line, got "echo \'open"'),
    (av.PyTarget(), "not a target", "expected \"package.module:function\", got 'not a target'"),
    (av.Url(), "example.com", "expected an http:// or https:// URL, got 'example.com'"),
    (av.Method(), "GET /", "expected an HTTP method such as GET or POST, got 'GET /'"),
    (av.Statuses(), [200, 700], "expected HTTP status codes (100-599), got 700"),
    (av.Body(), {"a": 1}, "expected a string (use `json:` for structured data), got a mapping"),
    (
        v.JobName(),
        "bad name",
        "expected a job name of letters, digits, '_', '.', '-', got 'bad name'",
    ),
    (
        places.PostgresUrl(),
        "mysql://x",
        "expected a postgresql:// URL or nothing (embedded PostgreSQL)",
    ),
    (
        places.Listen(),
        "127.0.0.1",
        "expected host:port (127.0.0.1:8089) or a unix socket path, got",
    ),
    (places.Listen(), "127.0.0.1:99999", "expected host:port"),
    (places.Secret(), [1], "expected a string, got a list"),
]


@pytest.mark.parametrize(("kind", "given", "message"), REFUSED)
def test_refused_values_say_what_was_expected_and_got(
    kind: v.Value, given: Any, message: str
) -> None:
    with pytest.raises(Invalid) as err:
        kind.convert(given, {})
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1h30m", 5400), ("2d", 172800), (7, 7), ("90", 90)],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_a_unix_socket_is_relative_to_the_config_folder(tmp_path: Any) -> None:
    address = places.Listen().convert("./run/admin.sock", {"base": tmp_path})
    assert address.unix_socket == tmp_path / "run" / "admin.sock" and address.is_loopback
    assert not places.Listen().convert(":8089", {}).is_loopback  # every interface


def test_a_directory_is_relative_to_the_config_folder(tmp_path: Any) -> None:
    assert places.Directory().convert("state", {"base": tmp_path}) == (tmp_path / "state").resolve()
    assert str(places.Directory().convert("/srv/a:/srv/b", {})) == "/srv/a"  # $STATE_DIRECTORY list
