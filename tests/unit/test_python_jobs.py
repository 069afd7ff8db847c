"""Python jobs end to end of the config: `python_path:`, targets imported by `check`, start and
reload, and arguments the function does not take (refused before the call, never retried)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.operation import cli
from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.operation.reload import load_checked
from scheduler_daemon.running.actions.python import PythonAction, job_threads, unfinished_job_calls
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import PythonSpec, load_config
from scheduler_daemon.specs.pytargets import python_path_in_use
from tests import e2e_jobs
from tests.helpers import FakeClock

THREADS = job_threads(2)
Module = Callable[..., str]


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Module]:
    """``module(code, where="lib")`` writes a module under tmp_path/where and returns its name
    (unique to the test); the interpreter forgets it afterwards."""
    names: list[str] = []

    def write(code: str, where: str = "lib") -> str:
        name = f"jobs_{uuid.uuid4().hex[:12]}"
        directory = tmp_path / where
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.py").write_text(textwrap.dedent(code))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def config_file(tmp_path: Path, text: str, where: str = "conf") -> Path:
    path = tmp_path / where / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- python_path --------------------------------------------------------------------------------


def test_python_path_is_one_directory_or_a_list_relative_to_the_config_file(
    tmp_path: Path,
) -> None:
    one = config_file(tmp_path, "python_path: lib\njobs: {}\n", where="a")
    assert load_config(one, environ={}).python_path == ((tmp_path / "a" / "lib").resolve(),)
    many = config_file(tmp_path, "python_path: [../lib, /opt/jobs]\njobs: {}\n", where="b")
    expected = ((tmp_path / "lib").resolve(), Path("/opt/jobs"))
    assert load_config(many, environ={}).python_path == expected
    none = config_file(tmp_path, "jobs: {}\n", where="c")
    assert load_config(none, environ={}).python_path == ()


def test_python_path_goes_first_on_sys_path_when_targets_are_imported(
    tmp_path: Path, module: Module
) -> None:
    name = module("def run(day: str) -> str:\n    return day\n", where="conf/lib")
    path = config_file(
        tmp_path,
        f"""\
        python_path: lib
        jobs:
          etl: {{every: 1h, python: "{name}:run", args: {{day: today}}}}
        """,
    )
    config = load_checked(path, environ={}, import_targets=True)
    lib = str((tmp_path / "conf" / "lib").resolve())
    assert sys.path[0] == lib and python_path_in_use() == (lib,)
    assert sys.modules[name].__file__ == str(Path(lib) / f"{name}.py")
    assert config.job("etl") is not None


def test_without_python_path_a_module_beside_the_config_is_not_found(
    tmp_path: Path, module: Module
) -> None:
    name = module("def run() -> None: ...\n", where="conf")
    path = config_file(tmp_path, f'jobs:\n  etl: {{every: 1h, python: "{name}:run"}}\n')
    with pytest.raises(ConfigError) as caught:
        load_checked(path, environ={}, import_targets=True)
    assert caught.value.problems == [
        f"{path}:2: jobs.etl.python: cannot import module {name!r}: No module named {name!r}"
    ]


# -- check --------------------------------------------------------------------------------------

BROKEN = """\
python_path: [lib, missing]
jobs:
  no_module: {every: 1h, python: "no_such_module_xyz:run"}
  no_function:
    every: 1h
    python: "os:no_such_function"
  not_callable: {every: 1h, python: "os:sep"}
  bad_args:
    every: 1h
    python: "posixpath:basename"
    args: {p: /tmp/x, nope: 2}
  missing_args: {every: 1h, python: "posixpath:basename"}
  manual_only: {every: 1h, enabled: false, python: "posixpath:basename"}
  typo: {every: 1h, python: "posixpath:basename", args: {pp: /tmp/x}}
  fine: {every: 1h, python: "posixpath:basename", args: {p: /tmp/x}}
"""


def test_check_lists_every_target_that_cannot_be_called_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "conf" / "lib").mkdir(parents=True)
    path = config_file(tmp_path, BROKEN)
    assert cli.main(["check", "-c", str(path)]) == 1
    missing = (tmp_path / "conf" / "missing").resolve()
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:1: python_path.1: expected an existing directory, got {missing}",
        f"{path}:3: jobs.no_module.python: cannot import module 'no_such_module_xyz': "
        "No module named 'no_such_module_xyz'",
        f"{path}:6: jobs.no_function.python: module 'os' has no attribute 'no_such_function'",
        f"{path}:7: jobs.not_callable.python: os:sep is not callable (it is 'str')",
        f"{path}:11: jobs.bad_args.args: bad arguments for posixpath:basename: "
        "unexpected keyword argument 'nope'",
        f"{path}:12: jobs.missing_args.python: bad arguments for posixpath:basename: "
        "missing a required argument: 'p'",
        f"{path}:14: jobs.typo.args: bad arguments for posixpath:basename: "
        "unexpected keyword argument 'pp'; did you mean 'p'?",
        f"7 error(s) in {path}",
    ]


def test_a_module_whose_own_code_fails_is_a_config_error(tmp_path: Path, module: Module) -> None:
    raises = module("raise RuntimeError('no database at import time')\n", where="conf/lib")
    exits = module("import sys\nsys.exit(3)\n", where="conf/lib")
    broken = module("def run(:\n", where="conf/lib")
    path = config_file(
        tmp_path,
        f"""\
        python_path: lib
        jobs:
          a: {{every: 1h, python: "{raises}:run"}}
          b: {{every: 1h, python: "{exits}:run"}}
          c: {{every: 1h, python: "{broken}:run"}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_checked(path, environ={}, import_targets=True)
    a, b, c = caught.value.problems
    assert a == (
        f"{path}:3: jobs.a.python: cannot import module {raises!r}: "
        "RuntimeError: no database at import time"
    )
    assert b == f"{path}:4: jobs.b.python: cannot import module {exits!r}: SystemExit: 3"
    assert c.startswith(f"{path}:5: jobs.c.python: cannot import module {broken!r}: SyntaxError")


def test_a_refused_config_puts_the_previous_python_path_back(
    tmp_path: Path, module: Module
) -> None:
    good = module("def run() -> None: ...\n", where="conf/lib")
    path = config_file(
        tmp_path, f'python_path: lib\njobs:\n  a: {{every: 1h, python: "{good}:run"}}\n'
    )
    load_checked(path, environ={}, import_targets=True)
    lib = str((tmp_path / "conf" / "lib").resolve())
    (tmp_path / "conf" / "other").mkdir()
    path.write_text("python_path: other\njobs:\n  a: {every: 1h, python: 'nowhere_xyz:run'}\n")
    with pytest.raises(ConfigError):
        load_checked(path, environ={}, import_targets=True)
    assert python_path_in_use() == (lib,) and sys.path[0] == lib
    assert str((tmp_path / "conf" / "other").resolve()) not in sys.path


def test_the_operator_commands_do_not_import_the_jobs_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, 'jobs:\n  a: {every: 1h, python: "no_such_module_xyz:run"}\n')
    assert cli.main(["next", "-c", str(path), "-n", "1"]) == 0
    assert "no_such_module_xyz" not in sys.modules


# -- reload -------------------------------------------------------------------------------------

GOOD = 'database: {url: "postgresql:///nowhere"}\njobs:\n  kept: {every: 1h, command: ["true"]}\n'


async def test_a_reload_naming_a_target_that_cannot_be_imported_keeps_the_old_schedule(
    tmp_path: Path,
) -> None:
    path = config_file(tmp_path, GOOD)
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    running, next_fire = daemon.config, daemon.scheduler.next_fire("kept")
    path.write_text(GOOD + '  etl: {every: 1h, python: "no_such_module_xyz:run"}\n')
    with capture_logs() as logs:
        assert await daemon.reload() is False
    [failed] = [e for e in logs if e["event"] == "reload_failed"]
    assert failed["problems"] == [
        f"{path}:4: jobs.etl.python: cannot import module 'no_such_module_xyz': "
        "No module named 'no_such_module_xyz'"
    ]
    assert daemon.config is running and daemon.scheduler.next_fire("kept") == next_fire
    assert daemon.scheduler.job("etl") is None


async def test_a_reload_applies_a_new_python_path_before_importing_new_targets(
    tmp_path: Path, module: Module
) -> None:
    path = config_file(tmp_path, GOOD)
    daemon = Daemon(load_config(path), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    name = module("async def run() -> str:\n    return 'deployed'\n", where="conf/jobs")
    path.write_text(
        GOOD.replace("jobs:\n", "python_path: jobs\njobs:\n")
        + f'  etl: {{every: 1h, python: "{name}:run"}}\n'
    )
    assert await daemon.reload() is True
    assert daemon.scheduler.job("etl") is not None
    assert python_path_in_use() == (str((tmp_path / "conf" / "jobs").resolve()),)


async def test_a_reload_that_fails_while_applied_puts_the_previous_python_path_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("lib", "other"):
        (tmp_path / "conf" / name).mkdir(parents=True)
    path = config_file(tmp_path, GOOD.replace("jobs:\n", "python_path: lib\njobs:\n"))
    daemon = Daemon(load_checked(path, import_targets=True), clock=FakeClock())
    daemon.scheduler.set_jobs(daemon.config.jobs)
    path.write_text(GOOD.replace("jobs:\n", "python_path: other\njobs:\n").replace("1h", "2h"))

    add = daemon.scheduler.add

    def failing_add(job, *, after=None):  # type: ignore[no-untyped-def]
        if job.every == 7200:  # the new spec, not the old one put back
            raise RuntimeError("boom")
        return add(job, after=after)

    monkeypatch.setattr(daemon.scheduler, "add", failing_add)
    with capture_logs() as logs:
        assert await daemon.reload() is False
    assert "reload_apply_crashed" in [e["event"] for e in logs]
    assert python_path_in_use() == (str((tmp_path / "conf" / "lib").resolve()),)


# -- arguments at run time ----------------------------------------------------------------------


def py(target: str, **args: object) -> PythonAction:
    return PythonAction(PythonSpec(target=target, args=args), capture_bytes=1000, threads=THREADS)


async def test_arguments_the_function_does_not_take_fail_the_attempt_for_good() -> None:
    action = py("tests.e2e_jobs:add", n=1)
    out = await action.run({"nope": 1})
    assert (out.status, out.retryable) == (Status.FAILED, False)
    assert out.error == "bad arguments for tests.e2e_jobs:add: unexpected keyword argument 'nope'"
    out = await py("tests.e2e_jobs:add").run()
    assert (out.status, out.retryable) == (Status.FAILED, False)
    assert out.error == "bad arguments for tests.e2e_jobs:add: missing a required argument: 'n'"
    assert (await action.run({"n": 41})).output == "42"  # a run's own args: checked afresh


async def test_a_type_error_from_the_jobs_own_body_stays_retryable() -> None:
    out = await py("tests.e2e_jobs:add", n="one").run()
    assert (out.status, out.retryable) == (Status.FAILED, True)
    assert out.error is not None and out.error.startswith("TypeError: can only concatenate str")


async def test_a_decorated_function_is_called_whatever_its_wrapped_signature_says(
    tmp_path: Path, module: Module
) -> None:
    """A decorator may give the arguments its function needs: only the wrapper is checked."""
    name = module(
        """\
        import functools

        def with_db(func):
            @functools.wraps(func)
            def wrapper(**kwargs):
                return func(db="sqlite://", **kwargs)
            return wrapper

        @with_db
        def report(db, day):
            return f"{day} from {db}"
        """
    )
    sys.path.insert(0, str(tmp_path / "lib"))
    out = await py(f"{name}:report", day="monday").run()
    assert (out.status, out.output) == (Status.SUCCEEDED, "monday from sqlite://")


async def test_a_coroutine_returned_by_a_plain_function_is_awaited(
    tmp_path: Path, module: Module
) -> None:
    name = module(
        """\
        import asyncio
        import threading

        async def fetch(day):
            await asyncio.sleep(0)
            return f"{day} on {threading.current_thread().name}"

        def wrapped(**kwargs):  # a decorator that hides the coroutine function
            return fetch(**kwargs)
        """
    )
    sys.path.insert(0, str(tmp_path / "lib"))
    out = await py(f"{name}:wrapped", day="monday").run()
    assert (out.status, out.output) == (Status.SUCCEEDED, "monday on MainThread")


async def test_the_jobs_threads_count_the_calls_that_have_not_returned() -> None:
    release = threading.Event()
    threads = job_threads(1)
    hung = threads.submit(e2e_jobs.block, release)
    queued = threads.submit(e2e_jobs.block, release)
    assert threads.unfinished == 2 and unfinished_job_calls() >= 2
    threads.shutdown(wait=False, cancel_futures=True)  # a stop: the queued call never starts
    assert queued.cancelled() and threads.unfinished == 1
    release.set()
    await asyncio.wrap_future(hung)
    assert threads.unfinished == 0
