"""What a job's stored and served spec shows of its secrets: ${...} as written, never the value."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler_daemon.specs import load_config

ENV = {"TOKEN": "s3cret-t0ken", "KEY": "k3y-value", "OWN": "own-value"}


def test_secrets_taken_from_defaults_are_shown_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "defaults:\n"
        "  env: {TOKEN: '${TOKEN}', MODE: plain}\n"
        "  args: {key: '${KEY}'}\n"
        "jobs:\n"
        "  cmd: {every: 1s, shell: 'echo $TOKEN'}\n"
        "  py: {every: 1s, python: 'os:getpid', args: {day: 1}}\n"
        "  mine: {every: 1s, command: [x], env: {TOKEN: '${OWN}'}}\n"
        "  plain: {every: 1s, command: [x], env: {TOKEN: written-here}}\n"
    )
    jobs = {job.name: job for job in load_config(path, environ=ENV).jobs}
    assert jobs["cmd"].action.env["TOKEN"] == "s3cret-t0ken"  # the job itself gets the value
    shown = {name: job.redacted() for name, job in jobs.items()}
    assert shown["cmd"]["action"]["env"] == {"TOKEN": "${TOKEN}", "MODE": "plain"}
    assert shown["py"]["action"]["args"] == {"key": "${KEY}", "day": 1}
    assert shown["mine"]["action"]["env"]["TOKEN"] == "${OWN}"
    assert shown["plain"]["action"]["env"]["TOKEN"] == "written-here"  # its own, not a default's
    text = json.dumps(shown)
    assert "s3cret-t0ken" not in text and "k3y-value" not in text and "own-value" not in text
