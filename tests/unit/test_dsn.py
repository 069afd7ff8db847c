"""Database URLs in words: where it points (never the password), and why connecting failed."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from scheduler_daemon.storage.dsn import Target, target, why


@pytest.mark.parametrize(
    ("url", "expected", "shown"),
    [
        (
            "postgresql://bob:s3cr3t@db.example:6432/jobs?sslmode=require",
            Target("db.example", "6432", "jobs", "bob"),
            "postgresql://bob@db.example:6432/jobs",
        ),
        (
            "postgres://bob@db.example/jobs",
            Target("db.example", "5432", "jobs", "bob"),
            "postgresql://bob@db.example:5432/jobs",
        ),
        (
            "postgresql://b%40b:p%3Ass@[::1]:5433/j%20obs",
            Target("::1", "5433", "j obs", "b@b"),
            "postgresql://b@b@[::1]:5433/j obs",
        ),
        (
            "postgresql://postgres@/postgres?host=/run/pg&port=5999&password=s3cr3t",
            Target("/run/pg", "5999", "postgres", "postgres"),
            "postgresql://postgres@/postgres?host=/run/pg&port=5999",
        ),
        (
            "postgresql:///?user=ann&dbname=jobs&host=h1",
            Target("h1", "5432", "jobs", "ann"),
            "postgresql://ann@h1:5432/jobs",
        ),
        (
            "postgresql://ann@h1:5432,h2:5433/jobs",
            Target("h1:5432,h2:5433", "", "jobs", "ann"),
            "postgresql://ann@h1:5432,h2:5433/jobs",
        ),
    ],
)
def test_a_url_in_words_names_host_port_database_and_user_never_the_password(
    url: str, expected: Target, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    assert target(url) == expected
    assert target(url).url() == shown
    assert "s3cr3t" not in shown and "sslmode" not in shown


def test_missing_parts_come_from_libpq_s_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PGHOST": "pg.internal", "PGPORT": "6000", "PGUSER": "svc", "PGDATABASE": "sched"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert target("postgresql://") == Target("pg.internal", "6000", "sched", "svc")
    monkeypatch.delenv("PGDATABASE")
    assert target("postgresql://").database == "svc"  # libpq: the user's name


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"), "connection refused"),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1), "
                "[Errno 111] Connect call failed ('127.0.0.1', 1)"
            ),
            "connection refused",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            "unknown host (Name or service not known)",
        ),
        (TimeoutError(), "no answer (timed out)"),
        (FileNotFoundError(2, "No such file or directory"), "no such file or directory"),
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "bob"'),
            'password authentication failed for user "bob"',
        ),
        (ValueError("invalid port 'x'\nmore"), "invalid port 'x'"),
    ],
)
def test_why_says_it_in_a_few_words(exc: BaseException, expected: str) -> None:
    assert why(exc) == expected
