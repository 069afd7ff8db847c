"""Command jobs: argv or /bin/sh -c, in a process group of their own, output tail kept.

On Linux a command runs under a shepherd (``shepherd.py``) that kills whatever it leaves
behind, inside its process group or not, when it ends: an attempt ends with all of its processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.actions.shepherd import SHEPHERD_MAIN
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import CommandSpec

log = structlog.get_logger("scheduler_daemon.running.actions.command")

SHEPHERD_DIR = str(Path(__file__).parent)  # where the shepherd is imported from
# After the command has exited, how long its output is still read while something else holds
# the pipe open (a background process, where no shepherd killed it): then the rest is cut off.
LINGER = 0.25
# How long past `kill_grace` a cancelled shepherd may take before it is SIGKILLed itself.
SHEPHERD_MARGIN = 5.0
PR_GET_CHILD_SUBREAPER = 37
# What a command gets of the daemon's environment unless its job says `inherit_env: true`: enough
# to find programs and speak the locale, nothing that holds the daemon's secrets
# (SCHEDULER_ADMIN_TOKEN, SCHEDULER_DATABASE_URL, the values behind `${...}`).
PASSED_ON = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")


def command_environment(
    daemon: Mapping[str, str], own: Mapping[str, str], *, inherit: bool
) -> dict[str, str]:
    """A command's environment: the job's own `env` over the daemon's (all of it, or the basics)."""
    if inherit:
        return {**daemon, **own}
    basics = {k: v for k, v in daemon.items() if k in PASSED_ON or k.startswith("LC_")}
    basics.setdefault("PATH", os.defpath)
    return {**basics, **own}


class CommandAction:
    __slots__ = ("_argv", "_capture", "_env", "_shepherded", "_spec")

    def __init__(
        self, spec: CommandSpec, *, capture_bytes: int, shepherd: bool | None = None
    ) -> None:
        """``shepherd``: run the command under a shepherd (default: wherever one can run)."""
        self._spec = spec
        self._capture = capture_bytes
        self._argv: tuple[str, ...] = (
            ("/bin/sh", "-c", spec.shell) if spec.shell is not None else spec.argv or ()
        )
        self._env = command_environment(os.environ, spec.env, inherit=spec.inherit_env)
        self._shepherded = shepherd_available() if shepherd is None else shepherd

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        loop = asyncio.get_running_loop()
        output = _Output(self._capture)
        status_r, status_w = os.pipe() if self._shepherded else (-1, -1)
        try:
            try:
                transport, _ = await loop.subprocess_exec(
                    lambda: output,
                    *self._launch(status_w),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=self._spec.cwd,
                    env=self._env,
                    start_new_session=True,  # its own process group: we can kill grandchildren too
                    pass_fds=(status_w,) if status_w >= 0 else (),
                )
            except OSError as exc:
                return self._cannot_start(exc.strerror or str(exc))
            finally:
                if status_w >= 0:
                    os.close(status_w)
            await self._watch(transport, output)
            status = _read_status(status_r)
        finally:
            if status_r >= 0:
                os.close(status_r)
        if status.startswith("error "):
            return self._cannot_start(os.strerror(int(status[6:])))
        code = int(status[5:]) if status.startswith("exit ") else transport.get_returncode()
        assert code is not None  # the process has exited
        text = output.text()
        if code == 0:
            return Outcome(Status.SUCCEEDED, retryable=False, exit_code=0, output=text)
        error = (
            f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        )
        return Outcome(Status.FAILED, retryable=True, exit_code=code, error=error, output=text)

    def _launch(self, status_fd: int) -> tuple[str, ...]:
        if status_fd < 0:
            return self._argv
        grace = repr(self._spec.kill_grace)
        shepherd = (sys.executable, "-I", "-S", "-c", SHEPHERD_MAIN, SHEPHERD_DIR)
        return (*shepherd, grace, str(status_fd), *self._argv)

    def _cannot_start(self, reason: str) -> Outcome:
        error = f"cannot start {self._argv[0]!r}: {reason}"
        return Outcome(Status.FAILED, retryable=False, error=error)

    async def _watch(self, transport: asyncio.SubprocessTransport, output: _Output) -> None:
        """Wait for the process to exit and its output to end (or to stop for good)."""
        pid = transport.get_pid()
        try:
            await output.exited.wait()
            # Whatever still holds the pipe open now is a leftover: its output is not waited for.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER):
                    await output.closed.wait()
        except asyncio.CancelledError:
            await self._stop(pid, output)
            raise
        finally:
            # Without a shepherd, a background grandchild may still hold the group.
            _signal_group(pid, signal.SIGKILL)
            transport.close()

    async def _stop(self, pid: int, output: _Output) -> None:
        """SIGTERM the command's group, SIGKILL it after ``kill_grace``; wait for the end.

        A shepherd does both itself (and then kills the rest), so it is only told to start."""
        grace = self._spec.kill_grace
        if self._shepherded:
            _signal(pid, signal.SIGTERM)
            if not await _within(output.exited, grace + SHEPHERD_MARGIN):
                for child in _children(pid):  # a stuck shepherd: its command's group, then it
                    _signal_group(child, signal.SIGKILL)
        else:
            _signal_group(pid, signal.SIGTERM)
            await _within(output.exited, grace)
        _signal_group(pid, signal.SIGKILL)
        await output.exited.wait()


class _Output(asyncio.SubprocessProtocol):
    """A process's stdout+stderr (the last ``limit`` bytes), its exit and its pipe's end."""

    def __init__(self, limit: int) -> None:
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self._limit = limit
        self._tail = bytearray()
        self._total = 0

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data if isinstance(data, bytes) else data.encode()  # always bytes: no text mode
        tail = self._tail
        tail += chunk
        self._total += len(chunk)
        if len(tail) > self._limit:
            del tail[: len(tail) - self._limit]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.closed.set()

    def process_exited(self) -> None:
        self.exited.set()

    def text(self) -> str:
        text = self._tail.decode("utf-8", errors="replace")
        if self._total > len(self._tail):
            text = f"[truncated: last {len(self._tail)} of {self._total} bytes]\n" + text
        return text


@functools.cache
def shepherd_available() -> bool:
    """Can a shepherd run here: Linux with child subreapers and /proc listing children?"""
    if not sys.platform.startswith("linux"):
        return False
    reason = None
    if not sys.executable:
        reason = "no Python interpreter to run it"
    elif not Path(f"/proc/self/task/{os.getpid()}/children").exists():
        reason = "/proc does not list children"
    elif not _subreapers_supported():
        reason = "prctl(PR_SET_CHILD_SUBREAPER) is not available"
    if reason is not None:
        log.warning("command_shepherd_unavailable", reason=reason)
    return reason is None


def _subreapers_supported() -> bool:
    try:
        import ctypes

        flag = ctypes.c_int()
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return int(prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)) == 0
    except (ImportError, OSError, AttributeError):
        return False


def _read_status(fd: int) -> str:
    """The shepherd's last word (empty without one, or if it died before saying it)."""
    if fd < 0:
        return ""
    os.set_blocking(fd, False)  # it has exited, but a stray copy of the pipe may live elsewhere
    try:
        return os.read(fd, 256).decode().strip()
    except BlockingIOError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


async def _within(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
