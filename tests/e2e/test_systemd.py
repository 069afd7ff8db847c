"""systemd integration: the notify protocol on a real datagram socket, and the shipped unit."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scheduler_daemon.operation.notify import Notifier
from scheduler_daemon.operation.stop_budget import stop_budget
from scheduler_daemon.specs import Config, load_config
from tests.helpers import REPO, readme_install_steps, start_daemon

UNIT = REPO / "systemd" / "scheduler-daemon.service"


class NotifySocket:
    """What systemd listens on: a unix datagram socket; collects each message's fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    async def expect(
        self, key: str, value: str | None = None, timeout: float = 30
    ) -> dict[str, str]:
        loop = asyncio.get_running_loop()

        async def receive() -> dict[str, str]:
            while True:
                for message in self.messages:
                    if key in message and (value is None or message[key] == value):
                        self.messages.remove(message)
                        return message
                data = await loop.sock_recv(self.sock, 65536)
                fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
                self.messages.append(fields)

        return await asyncio.wait_for(receive(), timeout)

    def close(self) -> None:
        self.sock.close()


def test_notifier_is_silent_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("fine")  # no socket, no error


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


async def test_the_daemon_speaks_the_notify_protocol(tmp_path: Path, database_url: str) -> None:
    listener = NotifySocket(tmp_path / "notify.sock")
    config = tmp_path / "config.yaml"
    text = (
        f'database: {{url: "{database_url}"}}\nshutdown_grace: 1s\n'
        'jobs:\n  a: {every: 1s, command: ["true"]}\n'
    )
    config.write_text(text)
    daemon = await start_daemon(
        config, {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"}
    )
    try:
        ready = await listener.expect("READY", "1")
        assert "1 jobs" in ready["STATUS"]
        await listener.expect("WATCHDOG", "1")
        await listener.expect("WATCHDOG", "1")  # keeps pinging at half of WATCHDOG_USEC

        daemon.proc.send_signal(signal.SIGHUP)
        reloading = await listener.expect("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        reloaded = await listener.expect("READY", "1")
        assert "1 jobs" in reloaded["STATUS"] and "FAILED" not in reloaded["STATUS"]

        config.write_text("jobs: {broken")
        daemon.proc.send_signal(signal.SIGHUP)
        await listener.expect("RELOADING", "1")
        after = await listener.expect("READY", "1")
        assert "last reload FAILED" in after["STATUS"]

        config.write_text(text)  # for the budget below (what it runs with)
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = await listener.expect("STOPPING", "1")
        # systemd is told how long this stop may take: 1s of grace, 5s of kill_grace, the rest.
        budget = stop_budget(load_config(config))
        assert int(stopping["EXTEND_TIMEOUT_USEC"]) == round(budget * 1_000_000)
        assert await asyncio.wait_for(daemon.proc.wait(), 30) == 0
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
        listener.close()


def _unit_for_this_machine(tmp_path: Path) -> Path:
    daemon = Path(sys.executable).with_name("scheduler-daemon")
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace("/opt/scheduler-daemon/bin/scheduler-daemon", str(daemon))
    )
    return unit


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
def test_the_unit_verifies(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(_unit_for_this_machine(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@needs_systemd_analyze
def test_the_unit_is_sandboxed_to_an_exposure_of_at_most_1_5(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_unit_for_this_machine(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for .*: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 1.5, done.stdout


def test_the_unit_has_what_operations_need() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=",
        "StateDirectory=scheduler-daemon",
        "DynamicUser=yes",
        "RestartPreventExitStatus=78",
        "LoadCredential=admin-token:/etc/scheduler-daemon/admin-token",
    ):
        assert line in text
    stop = int(re.search(r"TimeoutStopSec=(\d+)s", text).group(1))  # type: ignore[union-attr]
    # Above the longest stop of a default config with a command job (its kill_grace counts).
    default = Config.model_validate({"jobs": {"a": {"every": 60, "command": ["true"]}}})
    assert default.shutdown_grace == 30 and stop_budget(default) > 70
    assert stop >= stop_budget(default) + 10


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_readme_install_provides_what_the_unit_needs() -> None:
    """Where systemd cannot be booted (tests/e2e/test_systemd_install.py), each path and mode
    the unit relies on, as the README's install lines make them."""
    steps = readme_install_steps()
    unit = _unit_settings()
    binary, _run, _c, config = unit["ExecStart"][0].split()
    venv = Path(binary).parent.parent
    # A venv of the system's interpreter: ProtectHome= hides /root and /home from the service.
    assert f"sudo /usr/bin/python3 -m venv {venv}" in steps
    assert f"sudo {venv}/bin/pip install ." in steps
    # The config: root's, readable by the dynamic user, from the systemd sample.
    assert f"sudo install -m 0644 systemd/config.yaml {config}" in steps
    assert f"sudo install -d -m 0755 {Path(config).parent}" in steps
    # The credential's source: created private (umask 077), where LoadCredential= reads it.
    (credential,) = unit["LoadCredential"]
    name, source = credential.split(":")
    assert name == "admin-token"  # the sample's `${CREDENTIALS_DIRECTORY:-.}/admin-token`
    assert f"sudo sh -c 'umask 077 && head -c 32 /dev/urandom | base64 > {source}'" in steps
    assert Path(source).parent == Path(config).parent  # `${CREDENTIALS_DIRECTORY:-.}` beside it
    # The unit itself, and Documentation= where pip puts the README.
    assert f"sudo install -m 0644 systemd/{UNIT.name} /etc/systemd/system/" in steps
    (docs,) = unit["Documentation"]
    pyproject = (REPO / "pyproject.toml").read_text()
    shared = re.search(r'"README.md" = "(share/doc/[^"]+)"', pyproject)
    assert shared and docs == f"file://{venv}/{shared.group(1)}"
    assert unit["RestartPreventExitStatus"] == ["78"]
    # The CLI on PATH runs the same binary, on the same config unless told otherwise.
    wrapper = (REPO / "systemd" / "scheduler-daemon.sh").read_text()
    assert "sudo install -m 0755 systemd/scheduler-daemon.sh /usr/local/bin/scheduler-daemon" in (
        steps
    )
    assert f'exec {binary} "$@"' in wrapper
    assert f'"${{SCHEDULER_CONFIG:={config}}}"' in wrapper
    assert os.access(REPO / "systemd" / "scheduler-daemon.sh", os.X_OK)


def test_the_systemd_sample_uses_the_state_directory_and_the_credential(tmp_path: Path) -> None:
    sample = REPO / "systemd" / "config.yaml"
    assert "state_dir" not in yaml.safe_load(sample.read_text())
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.yaml"
    shutil.copy(sample, config)
    (etc / "admin-token").write_text("root-token\n")
    (etc / "admin-token").chmod(0o600)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "admin-token").write_text("root-token\n")
    (credentials / "admin-token").chmod(0o400)
    state = tmp_path / "state"

    service = load_config(
        config, environ={"STATE_DIRECTORY": str(state), "CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert service.state_dir == state
    assert service.admin is not None and service.admin.token == "root-token"
    assert service.database_url is None  # the embedded PostgreSQL, in the state directory
    # An operator's CLI (root, outside the unit): the token file beside the config.
    operator = load_config(config, environ={})
    assert operator.admin is not None and operator.admin.token == "root-token"
    # The CLI finds the config through $SCHEDULER_CONFIG (the wrapper sets it), no -c.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("scheduler-daemon")), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SCHEDULER_CONFIG": str(config)},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "root-token" not in done.stdout + done.stderr
