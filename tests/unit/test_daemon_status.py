"""systemd's STATUS= line: what `systemctl status` shows every user on the host."""

from __future__ import annotations

from pathlib import Path

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.specs import load_config
from tests.helpers import FakeClock


def test_a_failed_reload_is_named_without_quoting_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        'database: {url: "postgresql:///nowhere"}\njobs:\n  a: {every: 1h, shell: "true"}\n'
    )
    daemon = Daemon(load_config(path), clock=FakeClock())
    assert "FAILED" not in daemon.status_line()
    daemon.jobs.reload_error = (
        "1 error(s): config.yaml:3: jobs.a.env.TOKEN: expected a string, got 31337"
    )
    line = daemon.status_line()
    assert "last reload FAILED, see the log" in line and "31337" not in line
