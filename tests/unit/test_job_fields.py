"""A job back in config syntax (`jobs export`): read back, the same job; ${...} as written."""

from __future__ import annotations

from pathlib import Path

import yaml

from scheduler_daemon.specs import load_config
from scheduler_daemon.specs.job_fields import api_fields, config_fields

ENV = {"TOKEN": "s3cret-t0ken", "HOST": "example.org", "LIMIT": "7"}

CONFIG = """\
timezone: America/Sao_Paulo
defaults: {retry: {attempts: 2, jitter: 0.1}, env: {FROM_DEFAULTS: "${TOKEN}"}}
jobs:
  web:
    every: 90s
    offset: 5s
    timeout: null
    http:
      method: POST
      url: "https://${HOST}/hook?x=1"
      headers: {Authorization: "Bearer ${TOKEN}", X-Plain: "a$$$$b"}
      params: {limit: "${LIMIT}"}
      json: {day: "2026-11-27", items: [1, "$$x"]}
      expect: [200, 204]
      follow_redirects: true
  cmd:
    cron: "0 9 * * MON-FRI"
    command: ["./run.sh", "--cost=5$$", "${TOKEN}"]
    cwd: /srv
    kill_grace: 1s
    inherit_env: true
    delivery: at_most_once
    catch_up: none
    capture_bytes: 1KiB
  once:
    at: 2026-12-24T18:00:00
    timezone: Europe/Berlin
    python: "os:getpid"
    args: {n: "${LIMIT}"}
    priority: high
    overlap: allow
    max_instances: 3
  boot:
    cron: "@reboot"
    shell: "echo $$HOME ${HOST}"
    enabled: false
"""


def test_every_job_reads_back_the_same_with_its_templates_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    config = load_config(path, environ=ENV)
    fields = {job.name: config_fields(job) for job in config.jobs}
    text = yaml.safe_dump({"jobs": fields}, sort_keys=False)
    assert "s3cret-t0ken" not in text and "example.org" not in text
    assert fields["web"]["http"]["url"] == "https://${HOST}/hook?x=1"
    assert fields["web"]["http"]["headers"] == {
        "Authorization": "Bearer ${TOKEN}",
        "X-Plain": "a$$$$b",  # its value is a$$b
    }
    assert fields["cmd"]["env"] == {"FROM_DEFAULTS": "${TOKEN}"}  # what it took from defaults
    assert fields["boot"]["retry"] == {"attempts": 2, "jitter": 0.1}  # the defaults left out
    assert list(fields["web"])[:3] == ["every", "offset", "http"]  # schedule, then action
    assert "overlap" not in fields["web"] and "enabled" not in fields["web"]  # defaults left out

    again = tmp_path / "again.yaml"
    again.write_text(text)
    back = load_config(again, environ=ENV)
    assert {job.name: job for job in back.jobs} == {job.name: job for job in config.jobs}
    assert {job.name: job.redacted() for job in back.jobs} == {
        job.name: job.redacted() for job in config.jobs
    }


def test_an_api_job_s_references_are_written_as_a_config_writes_them() -> None:
    definition = {
        "every": "1h",
        "shell": "echo ${NOT_A_VARIABLE}",
        "env": {"TOKEN": {"env": "API_TOKEN"}, "PLAIN": "5$"},
    }
    assert api_fields(definition) == {
        "every": "1h",
        "shell": "echo $${NOT_A_VARIABLE}",
        "env": {"TOKEN": "${API_TOKEN}", "PLAIN": "5$$"},
    }
