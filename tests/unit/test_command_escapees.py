"""A command attempt ends with all of its processes, even those that left its process group.

Real processes throughout: `setsid` escapees, double forks, background children holding the
output pipe, on the test's loop (asyncio) and on the daemon's (uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvloop

from scheduler_daemon.running.actions import shepherd
from scheduler_daemon.running.actions.command import (
    CommandAction,
    command_environment,
    shepherd_available,
)
from scheduler_daemon.running.limiter import Limiter
from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.running.runner import Runner
from scheduler_daemon.specs import CommandSpec
from tests.helpers import FakeClock, make_job, wait_until

needs_shepherd = pytest.mark.skipif(
    not shepherd_available(), reason="no child subreapers here (Linux only)"
)

# Leaves the command's process group and session, and its output as a daemon does (so nothing
# but a kill ends it early); it writes its own pid, then sleeps.
SETSID = "setsid sh -c 'echo $$ > {pid}; exec sleep 60' >/dev/null 2>&1 &"
# The same from a subshell that exits at once: its parent is gone before the command ends.
DOUBLE_FORK = "(setsid sh -c 'echo $$ > {pid}; exec sleep 60' >/dev/null 2>&1 &)"
WAIT_FOR_PID = "while [ ! -s {pid} ]; do sleep 0.01; done"


def command(**kw: object) -> CommandAction:
    shepherd = kw.pop("shepherd", None)
    return CommandAction(CommandSpec(**kw), capture_bytes=65536, shepherd=shepherd)  # type: ignore[arg-type]


@pytest.fixture
async def pid_file(tmp_path: Path) -> AsyncIterator[Path]:
    """Where a command's stray process writes its pid; the process is killed whatever happens."""
    path = tmp_path / "escapee.pid"
    yield path
    if path.exists() and path.read_text().strip():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(path.read_text()), signal.SIGKILL)


async def assert_gone(pid_file: Path) -> None:
    """The process whose pid is in ``pid_file`` no longer exists (not even as a zombie).

    Polled briefly: "killed" means gone within seconds on a loaded machine."""
    pid = int(pid_file.read_text())

    async def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_until(gone, timeout=5)


@needs_shepherd
@pytest.mark.parametrize("escape", [SETSID, DOUBLE_FORK], ids=["setsid", "double-fork"])
async def test_an_escapee_dies_when_the_command_ends(pid_file: Path, escape: str) -> None:
    script = f"{escape.format(pid=pid_file)}\n{WAIT_FOR_PID.format(pid=pid_file)}\necho done"
    out = await asyncio.wait_for(command(shell=script).run(), 30)
    assert (out.status, out.exit_code, out.output) == (Status.SUCCEEDED, 0, "done\n")
    await assert_gone(pid_file)


@needs_shepherd
async def test_an_escapee_dies_when_the_command_fails(pid_file: Path) -> None:
    script = f"{SETSID.format(pid=pid_file)} {WAIT_FOR_PID.format(pid=pid_file)}; exit 3"
    out = await asyncio.wait_for(command(shell=script).run(), 30)
    assert (out.status, out.error) == (Status.FAILED, "exit code 3")
    await assert_gone(pid_file)


@pytest.mark.parametrize("shepherd", [True, False], ids=["shepherd", "direct"])
async def test_a_background_child_does_not_keep_the_attempt_running(
    pid_file: Path, shepherd: bool
) -> None:
    """It holds the output pipe open, but the attempt ends with the command (and kills it)."""
    if shepherd and not shepherd_available():
        pytest.skip("no child subreapers here")
    script = f"sleep 60 & echo $! > {pid_file}; echo hi"
    out = await asyncio.wait_for(command(shell=script, shepherd=shepherd).run(), 30)
    assert (out.status, out.output) == (Status.SUCCEEDED, "hi\n")
    await assert_gone(pid_file)


async def _started(action: CommandAction, pid_file: Path) -> asyncio.Task[object]:
    task: asyncio.Task[object] = asyncio.create_task(action.run())

    async def started() -> bool:
        return pid_file.exists() and bool(pid_file.read_text().strip())

    await wait_until(started)
    return task


@needs_shepherd
@pytest.mark.parametrize("trap", ["", "trap '' TERM;"], ids=["dies-on-sigterm", "ignores-sigterm"])
async def test_cancelling_the_attempt_kills_its_escapees(pid_file: Path, trap: str) -> None:
    escape = SETSID.format(pid=pid_file)
    job = command(kill_grace=0.3, shell=f"{trap} {escape} while :; do sleep 0.05; done")
    task = await _started(job, pid_file)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    await assert_gone(pid_file)


class _Sink:
    def __init__(self) -> None:
        self.records: list[ExecutionRecord] = []

    def record(self, rec: ExecutionRecord) -> None:
        if rec.status is not Status.RUNNING:
            self.records.append(rec)


@needs_shepherd
async def test_a_timed_out_attempt_kills_its_escapees(pid_file: Path) -> None:
    clock, sink = FakeClock(), _Sink()
    runner = Runner(
        clock=clock,
        limiter=Limiter(1),
        recorder=sink,
        action_for=lambda job: CommandAction(job.action, capture_bytes=1000),  # type: ignore[arg-type]
        node="test",
        rng=random.Random(1),
    )
    escape = SETSID.format(pid=pid_file)
    runner.submit(
        make_job("j", timeout=5.0, action=CommandSpec(shell=f"{escape} sleep 60", kill_grace=1)),
        datetime.fromtimestamp(clock.time(), UTC),
    )

    async def started() -> bool:
        return pid_file.exists() and bool(pid_file.read_text().strip())

    await wait_until(started)
    await clock.advance(6)

    async def recorded() -> bool:
        return bool(sink.records)

    await wait_until(recorded)
    [record] = sink.records
    assert (record.status, record.error) == (Status.TIMED_OUT, "timed out after 5s")
    await assert_gone(pid_file)


@needs_shepherd
def test_escapees_die_on_the_daemons_loop_too(tmp_path: Path) -> None:
    """The daemon runs on uvloop, whose subprocesses are libuv's, not asyncio's."""
    escapee, background = tmp_path / "escapee.pid", tmp_path / "background.pid"
    script = (
        f"{SETSID.format(pid=escapee)} {WAIT_FOR_PID.format(pid=escapee)};"
        f" sleep 60 & echo $! > {background}; echo hi"
    )

    async def run() -> None:
        try:
            out = await asyncio.wait_for(command(shell=script).run(), 30)
            assert (out.status, out.output) == (Status.SUCCEEDED, "hi\n")
            await assert_gone(escapee)
            await assert_gone(background)
        finally:
            for path in (escapee, background):
                with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                    os.kill(int(path.read_text()), signal.SIGKILL)

    uvloop.run(run())


# -- the shepherd changes nothing else -----------------------------------------------------------


@needs_shepherd
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"shell": "echo out; echo err >&2; exit 7"}, (7, "exit code 7", "out\nerr\n", True)),
        ({"shell": "kill -USR1 $$"}, (-10, "killed by signal SIGUSR1", "", True)),
        ({"shell": "exec 1>&- 2>&-; true"}, (0, None, "", False)),
        (
            {"argv": ("/no/such/program",)},
            (None, "cannot start '/no/such/program': No such file or directory", None, False),
        ),
        (
            {"argv": ("true",), "cwd": "/no/such/dir"},
            (None, "cannot start 'true': No such file or directory", None, False),
        ),
    ],
    ids=["exit-code", "signal", "closed-output", "no-program", "no-cwd"],
)  # fmt: skip
async def test_outcomes_are_the_same_with_or_without_the_shepherd(
    spec: dict[str, object], expected: tuple[object, ...]
) -> None:
    for shepherded in (True, False):
        out = await command(shepherd=shepherded, **spec).run()
        assert (out.exit_code, out.error, out.output, out.retryable) == expected


@needs_shepherd
async def test_the_command_gets_exactly_its_environment_and_signal_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A C locale: the shepherd's Python adds LC_CTYPE=C.UTF-8 to its own environment then.
    for name in ("LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    expected = command_environment(os.environ, {"OWN": "x y"}, inherit=False)
    out = await command(argv=("env",), env={"OWN": "x y"}).run()
    assert out.output is not None
    assert dict(line.split("=", 1) for line in out.output.splitlines()) == expected
    shown = "grep -E '^Sig(Blk|Ign|Cgt)' /proc/self/status"
    states = [(await command(shell=shown, shepherd=s).run()).output for s in (True, False)]
    assert _comparable(states[0]) == _comparable(states[1])


def _comparable(status: str | None) -> dict[str, int]:
    """Signal masks from /proc/PID/status, without glibc's internal signals 32 and 33: glibc's
    posix_spawn leaves them ignored in every child it starts (so do Python's subprocess and
    Rust's Command, where they use it)."""
    internal = (1 << 31) | (1 << 32)
    masks = dict(line.split(":\t") for line in (status or "").splitlines())
    return {name: int(mask, 16) & ~internal for name, mask in masks.items()}


@needs_shepherd
def test_the_shepherd_reaps_its_command_even_if_started_with_sigchld_ignored() -> None:
    """SIG_IGN survives exec; with SIGCHLD ignored, children would reap themselves unseen."""
    read, write = os.pipe()
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", shepherd.__file__, "1", str(write), "sh", "-c", "exit 3"],
            pass_fds=(write,),
            preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN),
            timeout=30,
            check=True,
        )
        os.close(write)
        assert os.read(read, 100) == b"exit 3\n"
    finally:
        os.close(read)
        with contextlib.suppress(OSError):
            os.close(write)
