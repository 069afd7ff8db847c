"""Command jobs: argv or /bin/sh -c, in a process group of their own, output tail kept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import CommandSpec

_CHUNK = 64 * 1024
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
    __slots__ = ("_argv", "_capture", "_env", "_spec")

    def __init__(self, spec: CommandSpec, *, capture_bytes: int) -> None:
        self._spec = spec
        self._capture = capture_bytes
        self._argv: tuple[str, ...] = (
            ("/bin/sh", "-c", spec.shell) if spec.shell is not None else spec.argv or ()
        )
        self._env = command_environment(os.environ, spec.env, inherit=spec.inherit_env)

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self._spec.cwd,
                env=self._env,
                start_new_session=True,  # its own process group: we can kill grandchildren too
            )
        except OSError as exc:
            return Outcome(
                Status.FAILED,
                retryable=False,
                error=f"cannot start {self._argv[0]!r}: {exc.strerror or exc}",
            )
        try:
            output = await _read_tail(proc, self._capture)
            code = await proc.wait()
        except asyncio.CancelledError:
            await _kill_group(proc, self._spec.kill_grace)
            raise
        # The main process is gone, but a background grandchild may still hold the group.
        _signal_group(proc.pid, signal.SIGKILL)
        if code == 0:
            return Outcome(Status.SUCCEEDED, retryable=False, exit_code=0, output=output)
        error = (
            f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        )
        return Outcome(Status.FAILED, retryable=True, exit_code=code, error=error, output=output)


async def _read_tail(proc: asyncio.subprocess.Process, limit: int) -> str:
    """Read stdout+stderr to the end, keeping only the last ``limit`` bytes."""
    assert proc.stdout is not None
    tail = bytearray()
    total = 0
    while chunk := await proc.stdout.read(_CHUNK):
        total += len(chunk)
        tail += chunk
        if len(tail) > limit:
            del tail[: len(tail) - limit]
    text = tail.decode("utf-8", errors="replace")
    if total > len(tail):
        text = f"[truncated: last {len(tail)} of {total} bytes]\n" + text
    return text


async def _kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the whole group, SIGKILL it after ``grace`` seconds, and reap the process."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
