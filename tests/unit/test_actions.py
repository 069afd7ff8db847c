"""HTTP, command and Python actions against real servers, real processes and real imports."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from scheduler_daemon.running.actions import HttpClient, build_action
from scheduler_daemon.running.actions.command import CommandAction, command_environment
from scheduler_daemon.running.actions.http import HttpAction, without_queries
from scheduler_daemon.running.actions.python import PythonAction, job_threads
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import CommandSpec, HttpSpec, PythonSpec
from tests import e2e_jobs
from tests.helpers import make_job, serve_locally, wait_until

HUGE = 200 * 1024 * 1024


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {}
        if code == 503:
            headers["Retry-After"] = "2"
        if code == 429:
            when = datetime.now(UTC) + timedelta(seconds=30)
            headers["Retry-After"] = format_datetime(when, usegmt=True)
        return web.Response(status=code, text=f"status {code}", headers=headers)

    async def echo(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        return web.json_response(
            {
                "query": dict(request.query),
                "json": body,
                "auth": request.headers.get("Authorization"),
            }
        )

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"y" * (1024 * 1024)
        for _ in range(HUGE // len(chunk)):
            await resp.write(chunk)
        return resp

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.rel_url))  # to itself, query string and all

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def headers(request: web.Request) -> web.Response:
        names = ("X-Api-Key", "Accept", "Cookie")
        return web.json_response({k: request.headers.get(k) for k in names})

    async def login(_: web.Request) -> web.Response:
        resp = web.json_response({"logged_in": True})
        resp.set_cookie("sid", "job-a-session-secret")
        return resp

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/loop", loop)
    app.router.add_get("/hop", hop)
    app.router.add_get("/headers", headers)
    app.router.add_get("/login", login)
    app.router.add_get("/status/{code}", status)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/huge", huge)
    async with serve_locally(app) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.close()


def http_job(client: HttpClient, url: str, capture: int = 65536, **kw: object) -> HttpAction:
    return HttpAction(HttpSpec(url=url, **kw), client=client, capture_bytes=capture)  # type: ignore[arg-type]


# -- http ---------------------------------------------------------------------------------------


async def test_http_success_keeps_status_and_body(server: str, client: HttpClient) -> None:
    out = await http_job(client, f"{server}/ok").run()
    assert (out.status, out.http_status, out.output, out.retryable) == (
        Status.SUCCEEDED,
        200,
        '{"ok": true}',
        False,
    )


@pytest.mark.parametrize(
    ("code", "retryable", "retry_after"),
    [
        (500, True, None),
        (503, True, 2.0),
        (404, False, None),
        (400, False, None),
        (429, True, 30.0),
    ],
)
async def test_http_failures_are_retryable_only_when_worth_it(
    server: str, client: HttpClient, code: int, retryable: bool, retry_after: float | None
) -> None:
    out = await http_job(client, f"{server}/status/{code}").run()
    assert (out.status, out.http_status, out.retryable, out.error) == (
        Status.FAILED,
        code,
        retryable,
        f"HTTP {code}",
    )
    if retry_after is None:
        assert out.retry_after is None
    else:
        assert out.retry_after == pytest.approx(retry_after, abs=2)


async def test_http_expect_overrides_the_2xx_rule(server: str, client: HttpClient) -> None:
    assert (await http_job(client, f"{server}/status/404", expect=(404,)).run()).status is (
        Status.SUCCEEDED
    )
    out = await http_job(client, f"{server}/ok", expect=(201,)).run()
    assert (out.status, out.retryable) == (Status.FAILED, False)


async def test_an_error_text_never_carries_the_query_string(
    server: str, client: HttpClient
) -> None:
    """Query strings carry API keys (`?api_key=...`, `params:`): error texts go to executions.error,
    the log and NOTIFY payloads, so a URL in one keeps its path only."""
    to = quote("ftp://files.example/p?api_key=s3cret", safe="")
    job = http_job(
        client, f"{server}/hop?to={to}", params={"token": "t0ken"}, follow_redirects=True
    )
    outcome = await job.run()
    assert outcome.status is Status.FAILED and outcome.error is not None
    assert "ftp://files.example/p" in outcome.error  # still says where
    assert "s3cret" not in outcome.error and "t0ken" not in outcome.error


async def test_a_redirect_is_an_answer_unless_the_job_follows_redirects(
    server: str, client: HttpClient
) -> None:
    out = await http_job(client, f"{server}/hop?to=/ok").run()
    assert (out.status, out.http_status, out.retryable) == (Status.FAILED, 302, False)
    out = await http_job(client, f"{server}/hop?to=/ok", follow_redirects=True).run()
    assert (out.status, out.http_status) == (Status.SUCCEEDED, 200)
    out = await http_job(client, f"{server}/loop", follow_redirects=True).run()
    assert out.status is Status.FAILED and out.error == "more than 10 redirects"


async def test_a_followed_redirect_to_another_origin_loses_the_secret_headers(
    server: str, client: HttpClient
) -> None:
    sent = {"X-Api-Key": "k3y", "Accept": "application/json"}

    async def headers(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    app = web.Application()
    app.router.add_get("/headers", headers)
    async with serve_locally(app) as elsewhere:
        for to, key in (("/headers", "k3y"), (f"{elsewhere}/headers", None)):
            job = http_job(client, f"{server}/hop?to={to}", headers=sent, follow_redirects=True)
            out = await job.run()
            assert out.status is Status.SUCCEEDED and out.output is not None, to
            seen = json.loads(out.output)
            assert (seen.get("X-Api-Key"), seen.get("Accept")) == (key, "application/json"), to


async def test_a_cookie_one_job_was_given_is_never_sent_by_another(
    server: str, client: HttpClient
) -> None:
    # Every HTTP job shares one session: its cookie jar sent job a's session to job b's host.
    host = server.replace("127.0.0.1", "localhost")  # a jar keeps no cookie of a bare IP
    assert (await http_job(client, f"{host}/login").run()).status == Status.SUCCEEDED
    out = await http_job(client, f"{host}/headers").run()
    assert json.loads(out.output or "")["Cookie"] is None
    configured = await http_job(client, f"{host}/headers", headers={"Cookie": "own=1"}).run()
    assert json.loads(configured.output or "")["Cookie"] == "own=1"  # a job's own header goes


async def test_http_connection_refused_is_retryable(client: HttpClient) -> None:
    out = await http_job(client, "http://127.0.0.1:9/nothing").run()
    assert (
        out.status is Status.FAILED and out.retryable and "connection failed" in (out.error or "")
    )


async def test_http_sends_method_params_json_headers_and_takes_overrides(
    server: str, client: HttpClient
) -> None:
    job = http_job(
        client,
        f"{server}/echo",
        method="POST",
        params={"a": "1"},
        json_body={"x": 1},
        headers={"Authorization": "Bearer t0ken"},
    )
    out = await job.run()
    assert out.output is not None and '"query": {"a": "1"}' in out.output
    assert '"json": {"x": 1}' in out.output and "Bearer t0ken" in out.output
    out = await job.run({"params": {"date": "2026-01-01"}, "json": {"levels": [3]}})
    # Override params are merged over the configured ones; a json override replaces the body.
    assert out.output is not None and '"query": {"a": "1", "date": "2026-01-01"}' in out.output
    assert '"json": {"levels": [3]}' in out.output


async def test_http_huge_body_is_streamed_and_capped(server: str, client: HttpClient) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = await http_job(client, f"{server}/huge", capture=1000).run()
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert out.status is Status.SUCCEEDED and out.output is not None
    assert out.output.startswith("y" * 1000) and f"{HUGE} bytes total" in out.output
    assert len(out.output) < 1100
    assert grew_kib < 100 * 1024  # 200 MB went through; far less than that stayed


async def test_http_cancellation_propagates(client: HttpClient) -> None:
    arrived = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        arrived.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/hang", hang)
    async with serve_locally(app) as url:
        task = asyncio.create_task(http_job(client, f"{url}/hang").run())
        await asyncio.wait_for(arrived.wait(), 10)  # the request is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- command ------------------------------------------------------------------------------------


def command(capture: int = 65536, **kw: object) -> CommandAction:
    return CommandAction(CommandSpec(**kw), capture_bytes=capture)  # type: ignore[arg-type]


async def test_command_success_records_exit_code_and_output() -> None:
    out = await command(argv=("sh", "-c", "echo out; echo err >&2")).run()
    assert (out.status, out.exit_code) == (Status.SUCCEEDED, 0)
    assert out.output == "out\nerr\n"


async def test_command_failure_is_retryable_with_exit_code() -> None:
    out = await command(shell="echo nope; exit 7").run()
    assert (out.status, out.exit_code, out.retryable, out.error) == (
        Status.FAILED,
        7,
        True,
        "exit code 7",
    )
    assert out.output == "nope\n"


async def test_command_output_keeps_only_the_tail() -> None:
    out = await command(capture=1000, shell="yes | head -c 10000000; echo THE-END").run()
    assert out.output is not None and out.output.rstrip().endswith("THE-END")
    assert "of 10000008 bytes" in out.output and len(out.output) < 1100


async def test_command_env_and_cwd(tmp_path: Path) -> None:
    out = await command(
        shell='echo "$GREETING from $(pwd)"', env={"GREETING": "hi"}, cwd=str(tmp_path)
    ).run()
    assert out.output == f"hi from {tmp_path}\n"
    assert (await command(shell="echo $HOME").run()).output == f"{os.environ.get('HOME', '')}\n"


async def test_a_command_gets_none_of_the_daemons_secrets_unless_its_job_inherits_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULER_ADMIN_TOKEN", "adm1n-t0ken")
    monkeypatch.setenv("LC_TIME", "C")
    shown = "echo token=$SCHEDULER_ADMIN_TOKEN time=$LC_TIME own=$OWN; command -v sh"
    out = await command(shell=shown, env={"OWN": "mine"}).run()
    assert out.status is Status.SUCCEEDED and out.output is not None
    assert out.output.startswith("token= time=C own=mine\n")  # and `sh` found on PATH
    out = await command(shell=shown, inherit_env=True).run()
    assert out.output is not None and out.output.startswith("token=adm1n-t0ken time=C own=\n")


@pytest.mark.parametrize(
    ("daemon", "own", "inherit", "expected"),
    [
        ({"PATH": "/p", "HOME": "/h", "SECRET": "s"}, {}, False, {"PATH": "/p", "HOME": "/h"}),
        ({"LC_ALL": "C", "TZ": "UTC", "X": "1"}, {"X": "2"}, False,
         {"LC_ALL": "C", "TZ": "UTC", "X": "2", "PATH": os.defpath}),
        ({"PATH": "/p", "SECRET": "s"}, {"A": "b"}, True, {"PATH": "/p", "SECRET": "s", "A": "b"}),
        ({}, {"PATH": "/mine"}, False, {"PATH": "/mine"}),
    ],
)  # fmt: skip
def test_a_commands_environment(
    daemon: dict[str, str], own: dict[str, str], inherit: bool, expected: dict[str, str]
) -> None:
    assert command_environment(daemon, own, inherit=inherit) == expected


async def test_command_that_cannot_start_fails_without_retry(tmp_path: Path) -> None:
    out = await command(argv=("/no/such/program",)).run()
    assert (
        out.status is Status.FAILED
        and not out.retryable
        and "/no/such/program" in (out.error or "")
    )
    out = await command(argv=("true",), cwd=str(tmp_path / "missing")).run()
    assert out.status is Status.FAILED and not out.retryable


async def _group_gone(pgid: int) -> None:
    """SIGKILL is delivered asynchronously: a killed process may run a moment longer on a loaded
    machine before it is a zombie. Gone within seconds is what "killed" means here."""

    async def gone() -> bool:
        return not _group_alive(pgid)

    await wait_until(gone, timeout=5)


def _group_alive(pgid: int) -> bool:
    """Is any live (non-zombie) process still in process group ``pgid``?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


async def _started_group(job: CommandAction, marker: Path) -> tuple[asyncio.Task[object], int]:
    task = asyncio.create_task(job.run())

    async def started() -> bool:
        return marker.exists() and bool(marker.read_text().strip())

    await wait_until(started)
    return task, int(marker.read_text().split()[0])


async def test_cancellation_kills_the_whole_group_grandchildren_included(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    job = command(kill_grace=2.0, shell=f"sleep 300 & echo $$ > {marker}; wait")
    task, pgid = await _started_group(job, marker)
    assert _group_alive(pgid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _group_gone(pgid)


async def test_a_process_that_ignores_sigterm_is_killed_after_kill_grace(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    job = command(
        kill_grace=0.3, shell=f"trap '' TERM; echo $$ > {marker}; while :; do sleep 0.05; done"
    )
    task, pgid = await _started_group(job, marker)
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.25 <= time.monotonic() - began < 5
    await _group_gone(pgid)


async def test_killed_by_signal_is_named() -> None:
    out = await command(shell="kill -USR1 $$").run()
    assert out.status is Status.FAILED and out.error == f"killed by signal {signal.SIGUSR1.name}"


# -- python -------------------------------------------------------------------------------------


THREADS = job_threads(4)


def py(target: str, capture: int = 65536, **args: object) -> PythonAction:
    spec = PythonSpec(target=target, args=args)
    return PythonAction(spec, capture_bytes=capture, threads=THREADS)


async def test_python_coroutine_is_awaited_with_args_as_keywords() -> None:
    out = await py("tests.e2e_jobs:greet", name="ana", times=2).run()
    assert (out.status, out.output) == (Status.SUCCEEDED, "hello ana hello ana")
    out = await py("tests.e2e_jobs:greet", name="ana").run({"name": "bia"})
    assert out.output == "hello bia"


async def test_python_plain_function_runs_off_the_loop_thread() -> None:
    out = await py("threading:current_thread").run()
    assert out.status is Status.SUCCEEDED
    assert out.output is not None and threading.current_thread().name not in out.output


async def test_hung_plain_functions_leave_the_default_executor_to_the_daemon() -> None:
    """As many hung jobs as the loop's default executor has threads: the daemon's own blocking
    work (journal spills, reload parsing) still runs, because jobs have threads of their own."""
    release = threading.Event()
    default_threads = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default size
    threads = job_threads(default_threads)
    hung = [
        asyncio.create_task(
            PythonAction(
                PythonSpec(target="tests.e2e_jobs:block", args={"until": release}),
                capture_bytes=100,
                threads=threads,
            ).run()
        )
        for _ in range(default_threads)
    ]
    try:
        await wait_until(lambda: _all_blocked(release, default_threads))
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "daemon work"), 5) == "daemon work"
    finally:
        release.set()
        await asyncio.gather(*hung)
        threads.shutdown()


async def _all_blocked(release: threading.Event, count: int) -> bool:
    return e2e_jobs.BLOCKED.get(id(release), 0) >= count


async def test_python_return_values_are_json_and_capped() -> None:
    assert (await py("os:getloadavg").run()).output.startswith("[")  # type: ignore[union-attr]
    assert (await py("json:dumps", capture=5, obj=[1, 2, 3]).run()).output == "[1, 2"


async def test_python_exception_fails_and_is_retryable() -> None:
    out = await py("tests.e2e_jobs:explode", reason="kaboom").run()
    assert (out.status, out.retryable, out.error) == (Status.FAILED, True, "ValueError: kaboom")


@pytest.mark.parametrize("target", ["no_such_module_xyz:run", "os:no_such_function"])
async def test_python_bad_target_fails_without_retry(target: str) -> None:
    out = await py(target).run()
    assert out.status is Status.FAILED and not out.retryable and "cannot load" in (out.error or "")


def test_build_action_picks_the_kind() -> None:
    kw = {"http": HttpClient(), "threads": THREADS}
    http_job = make_job(action=HttpSpec(url="http://x"))
    assert isinstance(build_action(http_job, **kw), HttpAction)
    assert isinstance(build_action(make_job(), **kw), CommandAction)
    assert isinstance(build_action(make_job(action=PythonSpec(target="m:f")), **kw), PythonAction)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("URL('http://h:1/p?api_key=k&x=1')", "URL('http://h:1/p?…')"),
        ('url="https://x.io/a/b?t=s3cret#frag"', 'url="https://x.io/a/b?…#frag"'),
        ("GET http://h/p?a=1 then HTTPS://h/q?b=2", "GET http://h/p?… then HTTPS://h/q?…"),
        ("http://h/p has no query", "http://h/p has no query"),
        ("what? no url here", "what? no url here"),
        ("NonHttpUrlClientError: ftp://h/p?k=v", "NonHttpUrlClientError: ftp://h/p?…"),
    ],
)
def test_query_strings_are_cut_from_error_texts(text: str, expected: str) -> None:
    assert without_queries(text) == expected
