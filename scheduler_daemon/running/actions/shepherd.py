"""The shepherd of one command attempt: `python -I -S -c SHEPHERD_MAIN DIR GRACE STATUS_FD ARGV...`

A command's descendants can leave its process group (`setsid sleep 60 &`, a daemon that double
forks), where a group kill never reaches them. This process starts the command and marks itself
a child subreaper (Linux's PR_SET_CHILD_SUBREAPER): whatever the command leaves behind is
reparented to it, not to init, so when the command ends everything under it is found and killed.

- The command runs as the leader of its own process group (as it did without a shepherd), with
  the environment this process was started with, an empty signal mask and SIGPIPE, SIGXFSZ at
  their defaults, as `subprocess` starts it. (Started by posix_spawn, it finds glibc's internal
  signals 32 and 33 ignored, as does every program that glibc's posix_spawn starts.)
- SIGTERM (the daemon cancels the attempt) is passed on to the command's group; `GRACE` seconds
  later the command is SIGKILLed.
- Once the command has exited, every process left under this one is SIGKILLed and reaped; then a
  line goes to STATUS_FD: `exit N` (N < 0: killed by signal -N), or `error ERRNO` when the command
  could not be started at all.

It starts once per attempt, so it imports next to nothing — only built-in modules, never `os`,
`signal`, `typing` or `contextlib`, which load others — and it is imported (not run as a script)
so that its compiled code is cached.
"""

# ruff: noqa: SIM105 - contextlib.suppress would import contextlib
# No `from __future__ import annotations` either: one more import. Annotations naming what only
# the type checker imports are quoted.

import sys
import time

TYPE_CHECKING = False  # as typing's, without importing typing
if TYPE_CHECKING:
    import os
    import signal
    from collections.abc import Mapping
else:
    import _signal as signal
    import posix as os

# How the daemon runs it: this file's directory goes last on sys.path (after the standard
# library, so nothing here shadows a stdlib module) and the module is imported from there.
SHEPHERD_MAIN = (
    "import sys; sys.path.append(sys.argv[1]); import shepherd; shepherd.main(sys.argv[2:])"
)
PR_SET_CHILD_SUBREAPER = 36
WATCHED = {signal.SIGCHLD, signal.SIGTERM}


def become_subreaper() -> bool:
    """Have orphaned descendants reparented here; False where the kernel or libc says no."""
    try:
        import _ctypes  # not ctypes: its import costs as much as the rest of the script

        prctl = _ctypes.dlsym(_ctypes.dlopen(None), "prctl")  # type: ignore[arg-type]
        done = _ctypes.call_function(prctl, (PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
    except (ImportError, OSError, AttributeError):  # an internal function: ctypes if it is gone
        return _subreaper_by_ctypes()
    return bool(done == 0)


def _subreaper_by_ctypes() -> bool:
    try:
        import ctypes

        return int(ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (ImportError, OSError, AttributeError):
        return False


def start(argv: list[str]) -> int:
    """Spawn the command (PATH searched as execvp does) in a process group of its own."""
    return os.posix_spawnp(
        argv[0],
        argv,
        original_environment(),
        setpgroup=0,
        setsigmask=(),
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores them; a command must not
    )


def original_environment() -> "Mapping[bytes, bytes] | Mapping[str, str]":
    """The environment this process was started with: Python may have added to it since
    (LC_CTYPE, when it coerces a C locale), and the command must get what the job says."""
    try:
        with open("/proc/self/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return os.environ  # without /proc: Python's (posix.environ, in bytes)
    return dict(entry.partition(b"=")[::2] for entry in entries if b"=" in entry)


def supervise(child: int, grace: float) -> int:
    """Wait for the command; a SIGTERM is passed on to its group, SIGKILL follows after
    ``grace`` seconds. Returns its wait status. Orphans that exit meanwhile are reaped."""
    deadline: float | None = None
    killed = False
    while True:
        status = reap(child)
        if status is not None:
            return status
        got: int | None
        if deadline is None or killed:
            got = signal.sigwaitinfo(WATCHED).si_signo
        else:
            info = signal.sigtimedwait(WATCHED, max(deadline - time.monotonic(), 0.0))
            got = info.si_signo if info is not None else None
        if got == signal.SIGTERM and deadline is None:
            signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + grace
        elif got is None:  # the grace is over
            signal_group(child, signal.SIGKILL)
            killed = True


def reap(child: int = 0) -> int | None:
    """Reap every child that has exited; the command's wait status if it is among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = status


def kill_everything_left(group: int) -> None:
    """SIGKILL the command's group and every process still under this one; reap them all.

    Only direct children are signalled, which no one else can reap: a pid read here cannot have
    been reused by an unrelated process. Their own children come to this process as they die."""
    signal_group(group, signal.SIGKILL)
    while True:
        pids = children()
        if pids is None:  # cannot see them: reap what has exited, and give up on the rest
            reap()
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def children() -> list[int] | None:
    """This process's children (zombies included), or None if /proc does not say."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", "rb") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        return None


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def report(fd: int, line: str) -> None:
    try:
        os.write(fd, f"{line}\n".encode())
    except OSError:  # the daemon is gone: nobody to tell
        pass


def main(args: list[str]) -> None:
    grace, fd, argv = float(args[0]), int(args[1]), args[2:]
    os.set_inheritable(fd, False)  # the daemon passed it on; the command must not hold it
    become_subreaper()
    # Blocked, they queue for sigwaitinfo: no handler runs, and no SIGTERM is lost before then.
    # SIGCHLD must not be SIG_IGN (inherited through exec): children would reap themselves.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    try:
        child = start(argv)
    except OSError as exc:
        report(fd, f"error {exc.errno or 0}")
        return
    status = supervise(child, grace)
    kill_everything_left(child)
    report(fd, f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":  # by hand: python -I -S shepherd.py GRACE STATUS_FD ARGV...
    main(sys.argv[1:])
