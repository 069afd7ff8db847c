"""Ad-hoc runs' jobs and runs' own options (operation/adhoc.py), and how OneOffRuns starts them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.operation.adhoc import RunOptions, adhoc_job, default_name, shown_spec
from scheduler_daemon.operation.oneoff import OneOffRuns
from scheduler_daemon.specs import JobSpec, RetrySpec
from scheduler_daemon.specs.api_job import ApiJobRules, JobProblems
from scheduler_daemon.storage.queries import OneOffRun
from tests.helpers import FakeClock, make_job
from tests.unit.test_oneoff import StubDatabase, StubPool, Submitted

AT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
HTTP_ONLY = ApiJobRules(kinds=frozenset(), env=frozenset({"API_TOKEN"}), timezone="Europe/Paris")
ENVIRON = {"API_TOKEN": "s3cret"}
BODY: dict[str, Any] = {
    "http": {
        "url": "http://127.0.0.1:9/hook",
        "headers": {"Authorization": {"env": "API_TOKEN"}},
    },
    "timeout": "5s",
}


def problems(exc: pytest.ExceptionInfo[JobProblems]) -> dict[str, str]:
    return {p["path"]: p["message"] for p in exc.value.as_list()}


def test_an_adhoc_job_needs_no_schedule_and_is_stored_as_written() -> None:
    job, definition = adhoc_job(BODY, AT, HTTP_ONLY, default="adhoc-1", environ=ENVIRON)
    assert job.name == "adhoc-1" and job.timeout == 5.0
    assert job.http is not None and job.http.headers["Authorization"] == "s3cret"
    # The reference as written, not its value; no placeholder schedule; the zone made explicit.
    assert definition == {**BODY, "timezone": "Europe/Paris"}
    assert "s3cret" not in str(job.redacted())


def test_the_body_may_name_its_job() -> None:
    job, definition = adhoc_job(
        {**BODY, "name": "nightly-fix"}, AT, HTTP_ONLY, default="x", environ=ENVIRON
    )
    assert job.name == "nightly-fix" and "name" not in definition


@pytest.mark.parametrize("key", ["cron", "every", "at"])
def test_a_schedule_in_the_body_is_refused_with_every_other_problem(key: str) -> None:
    value = {"cron": "* * * * *", "every": "1m", "at": "2026-12-01T00:00:00Z"}[key]
    body = {**BODY, key: value, "timeout": "soon", "name": "bad name"}
    with pytest.raises(JobProblems) as exc:
        adhoc_job(body, AT, HTTP_ONLY, default="x", environ=ENVIRON)
    found = problems(exc)
    assert set(found) == {key, "timeout", "name"}
    assert "a one-off run has no schedule" in found[key]


def test_a_kind_the_rules_do_not_allow_is_refused_at_its_key() -> None:
    body = {"shell": "echo hi"}
    with pytest.raises(JobProblems) as exc:
        adhoc_job(body, AT, HTTP_ONLY, default="x")
    assert list(problems(exc)) == ["shell"] and "allow_job_kinds" in problems(exc)["shell"]
    rules = ApiJobRules(kinds=frozenset({"shell"}), env=frozenset(), timezone="UTC")
    job, _ = adhoc_job(body, AT, rules, default="x")
    assert job.action.kind == "command"


def test_a_secret_in_clear_is_refused() -> None:
    body = {"http": {"url": "http://127.0.0.1:9/", "headers": {"Authorization": "Bearer x"}}}
    with pytest.raises(JobProblems) as exc:
        adhoc_job(body, AT, HTTP_ONLY, default="x")
    assert list(problems(exc)) == ["http.headers.Authorization"]


def test_the_default_name_is_adhoc_and_the_runs_first_hex_digits() -> None:
    run_id = uuid.UUID("0123abcd-0000-4000-8000-000000000000")
    assert default_name(run_id) == "adhoc-0123abcd"


def test_shown_spec_redacts_and_is_none_for_a_configured_jobs_run_or_a_refused_job() -> None:
    spec = shown_spec(BODY, AT, "adhoc-1", HTTP_ONLY)
    assert spec is not None and spec["name"] == "adhoc-1"
    assert spec["action"]["headers"]["Authorization"] == {"env": "API_TOKEN"}
    assert shown_spec(None, AT, "greet", HTTP_ONLY) is None
    assert shown_spec({"shell": "true"}, AT, "x", HTTP_ONLY) is None


def test_run_options_are_checked_and_apply_only_what_was_given() -> None:
    job = make_job("j", priority="low", retry=RetrySpec(attempts=5, delay=2.0))
    options = RunOptions.of({"retry": {"attempts": 3, "delay": "10ms"}})
    assert options is not None
    applied = options.applied(job)
    assert applied.priority == "low"  # the job's own: not given for the run
    assert (applied.retry.attempts, applied.retry.delay) == (3, 0.01)
    assert job.retry.attempts == 5  # the job itself is untouched
    assert RunOptions.of({"priority": "high"}).applied(job).priority == "high"  # type: ignore[union-attr]
    assert RunOptions.of(None) is None


@pytest.mark.parametrize(
    ("stored", "path"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"retry": {"attempts": 0}}, "retry.attempts"),
        ({"retry": {"tries": 2}}, "retry.tries"),
        ({"nice": 1}, "nice"),
        (["priority", "high"], ""),
    ],
)
def test_bad_run_options_are_problems_at_their_paths(stored: Any, path: str) -> None:
    with pytest.raises(JobProblems) as exc:
        RunOptions.of(stored)
    assert list(problems(exc)) == [path]


# -- OneOffRuns starting them ----------------------------------------------------------------------

CONFIGURED = make_job("report", retry=RetrySpec(attempts=1))


def oneoff(clock: FakeClock, submit: Submitted, rules: ApiJobRules = HTTP_ONLY) -> OneOffRuns:
    jobs = {CONFIGURED.name: CONFIGURED}
    return OneOffRuns(
        clock=clock,
        database=StubDatabase(StubPool("UPDATE 1")),
        job=jobs.get,
        submit=submit,
        rules=lambda: rules,
        environ=ENVIRON,
    )


def adhoc_run(clock: FakeClock, job: Any, name: str = "adhoc-1", **kw: Any) -> OneOffRun:
    at = datetime.fromtimestamp(clock.time(), UTC) + timedelta(seconds=1)
    return OneOffRun(id=uuid.uuid4(), job_name=name, run_at=at, overrides=None, job=job, **kw)


async def test_an_adhoc_run_starts_its_job_built_afresh_with_its_options() -> None:
    clock, submit = FakeClock(), Submitted()
    runs = oneoff(clock, submit)
    run = adhoc_run(clock, BODY, options={"priority": "high", "retry": {"attempts": 3}})
    runs.schedule([run])
    await clock.advance(1)
    [(name, at, kw)] = submit.fires
    assert (name, at, kw["fire_id"]) == ("adhoc-1", run.run_at, run.id)
    job = submit.jobs[0]
    assert job.priority == "high" and job.retry.attempts == 3
    assert job.http is not None and job.http.headers["Authorization"] == "s3cret"  # resolved now


async def test_a_configured_jobs_run_takes_its_options() -> None:
    clock, submit = FakeClock(), Submitted()
    runs = oneoff(clock, submit)
    run = adhoc_run(clock, None, name="report", options={"retry": {"attempts": 4}})
    runs.schedule([run])
    await clock.advance(1)
    [job] = submit.jobs
    assert job.name == "report" and job.retry.attempts == 4 and CONFIGURED.retry.attempts == 1


@pytest.mark.parametrize(
    ("job", "name", "options", "why"),
    [
        ({"shell": "rm -rf /"}, "adhoc-1", None, "shell: `shell` jobs cannot be created"),
        ({**BODY, "cron": "* * * * *"}, "adhoc-1", None, "cron: a one-off run has no schedule"),
        (BODY, "report", None, "a job named 'report' is configured now"),
        ({**BODY, "name": "other"}, "adhoc-1", None, "its job is named 'other'"),
        (["not", "a", "job"], "adhoc-1", None, "its job must be a JSON object"),
        (BODY, "adhoc-1", {"priority": "now"}, "priority:"),
    ],
    ids=["kind", "schedule", "configured-name", "other-name", "not-an-object", "bad-option"],
)
async def test_a_stored_run_the_api_would_refuse_is_cancelled_not_started(
    job: Any, name: str, options: Any, why: str
) -> None:
    clock, submit = FakeClock(), Submitted()
    runs = oneoff(clock, submit)
    with capture_logs() as logs:
        runs.schedule([adhoc_run(clock, job, name=name, options=options)])
        await clock.advance(1)
    assert submit.fires == []
    [refused] = [e for e in logs if e["event"] == "oneoff_run_refused"]
    assert why in refused["why"]


async def test_a_kind_allowed_when_stored_but_no_longer_is_refused_when_due() -> None:
    clock, submit = FakeClock(), Submitted()
    rules = ApiJobRules(kinds=frozenset({"shell"}), env=frozenset(), timezone="UTC")
    adhoc_job({"shell": "true"}, AT, rules, default="x")  # what the API accepted then
    runs = oneoff(clock, submit, rules=HTTP_ONLY)  # the daemon's rules now
    with capture_logs() as logs:
        runs.schedule([adhoc_run(clock, {"shell": "true", "timezone": "UTC"})])
        await clock.advance(1)
    assert submit.fires == [] and [e["event"] for e in logs] == ["oneoff_run_refused"]


def test_jobspec_is_untouched_by_applying_no_options() -> None:
    job: JobSpec = make_job("j")
    assert RunOptions().applied(job) is job
