"""The embedded server's files as the systemd unit's sandbox lets the daemon write them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scheduler_daemon.storage import embedded_home


def test_writing_a_file_of_our_own_never_calls_chown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SystemCallFilter=~@privileged refuses every chown with EPERM, even a no-op one: the
    daemon under the unit failed to start its embedded PostgreSQL on pg_hba.conf."""

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refused)
    monkeypatch.setattr(os, "chown", refused)
    hba, ident = embedded_home.authentication_files(tmp_path, None)
    for path in (hba, ident):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "peer map=daemon" in hba.read_text()
