"""`admin.token_file`: the token read from a file, as the systemd unit's credential gives it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.specs import load_config

TOKEN = "s3cr3t-T0ken/with+base64="


def config(tmp_path: Path, admin: str) -> Path:
    """A config with `admin:` listening on loopback plus ``admin`` (its indented lines)."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f'admin:\n  listen: 127.0.0.1:8089\n{admin}\njobs:\n  a: {{every: 1s, command: ["true"]}}\n'
    )
    return path


def token_file(path: Path, text: str = TOKEN + "\n", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def problem(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    (only,) = caught.value.problems
    assert TOKEN not in only
    return only


def test_the_token_is_the_files_stripped_content(tmp_path: Path) -> None:
    token_file(tmp_path / "admin-token")
    loaded = load_config(config(tmp_path, "  token_file: admin-token"), environ={})
    assert loaded.admin is not None and loaded.admin.token == TOKEN  # relative to the config
    assert TOKEN not in repr(loaded) and TOKEN not in str(loaded.admin)


def test_the_service_reads_its_credential_and_root_the_file_beside_the_config(
    tmp_path: Path,
) -> None:
    """`${CREDENTIALS_DIRECTORY:-.}/admin-token`: LoadCredential='s copy in the service, the
    root-owned original for an operator's CLI."""
    path = config(tmp_path, "  token_file: ${CREDENTIALS_DIRECTORY:-.}/admin-token")
    token_file(tmp_path / "admin-token")
    credentials = tmp_path / "credentials"
    token_file(credentials / "admin-token", "from-the-credential\n", mode=0o400)
    operator = load_config(path, environ={})
    service = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert operator.admin is not None and operator.admin.token == TOKEN
    assert service.admin is not None and service.admin.token == "from-the-credential"


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_owner_and_group_may_read_it(tmp_path: Path, mode: int) -> None:
    token_file(tmp_path / "t", mode=mode)
    loaded = load_config(config(tmp_path, "  token_file: t"), environ={})
    assert loaded.admin is not None and loaded.admin.token == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o606])
def test_a_file_other_users_can_read_or_group_members_change_is_refused(
    tmp_path: Path, mode: int
) -> None:
    token_file(tmp_path / "t", mode=mode)
    message = problem(config(tmp_path, "  token_file: t"))
    assert f"admin.token_file: {tmp_path / 't'} has mode {mode:04o}" in message
    assert "chmod 0600" in message


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("two words\n", "on one line, without spaces"),
        ("line\nother\n", "on one line, without spaces"),
        ("x" * 5000, "at most 4096 bytes"),
    ],
)
def test_unusable_content_is_refused_without_showing_it(
    tmp_path: Path, text: str, phrase: str
) -> None:
    token_file(tmp_path / "t", text)
    message = problem(config(tmp_path, "  token_file: t"))
    assert phrase in message
    assert "words" not in message and "other" not in message and "xxxx" not in message


def test_a_missing_file_names_the_path_and_the_user(tmp_path: Path) -> None:
    message = problem(config(tmp_path, "  token_file: /nonexistent/admin-token"))
    assert "admin.token_file: cannot read /nonexistent/admin-token: No such file" in message
    assert "(as user " in message


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    assert "not a regular file" in problem(config(tmp_path, "  token_file: d"))


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    token_file(tmp_path / "t")
    message = problem(config(tmp_path, "  token: ${T}\n  token_file: t"), {"T": "x"})
    assert "expected `token` or `token_file`, got both" in message
    # An empty ${VAR} is no token: the file gives it.
    loaded = load_config(config(tmp_path, "  token: ${T:-}\n  token_file: t"), environ={})
    assert loaded.admin is not None and loaded.admin.token == TOKEN


def test_allow_remote_is_satisfied_by_a_token_file(tmp_path: Path) -> None:
    token_file(tmp_path / "t")
    path = tmp_path / "config.yaml"
    path.write_text(
        "admin: {listen: 0.0.0.0:8089, allow_remote: true, token_file: t}\n"
        'jobs: {a: {every: 1s, command: ["true"]}}\n'
    )
    loaded = load_config(path, environ={})
    assert loaded.admin is not None and loaded.admin.token == TOKEN
