"""The daemon notices a background loop that ends: it stops, in order, and says which."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.notify import Notifier
from scheduler_daemon.specs import load_config
from scheduler_daemon.timing.clock import Clock


async def test_a_loop_that_dies_stops_the_daemon(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def heartbeat(self: Notifier, clock: Clock, status: Callable[[], str]) -> None:
        await clock.sleep(0.05)
        raise ValueError("the watchdog socket is gone")

    monkeypatch.setattr(Notifier, "heartbeat", heartbeat)
    config = tmp_path / "config.yaml"
    config.write_text(
        f'database: {{url: "{database_url}"}}\nstate_dir: ./state\n'
        'jobs:\n  ping: {every: 1h, command: ["true"]}\n'
    )
    daemon = Daemon(load_config(config))
    ended = "the heartbeat loop ended unexpectedly"
    with capture_logs() as logs, pytest.raises(RuntimeError, match=ended) as err:
        await asyncio.wait_for(daemon.run(), 30)
    assert isinstance(err.value.__cause__, ValueError)
    events = [e["event"] for e in logs]
    [died] = [e for e in logs if e["event"] == "background_task_died"]
    assert died["task"] == "heartbeat" and "watchdog socket" in died["error"]
    assert events.index("background_task_died") < events.index("daemon_stopping")
    assert events[-1] == "daemon_stopped"
