"""The systemd notify protocol: a few datagrams on $NOTIFY_SOCKET (sd_notify(3)), no library.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op. Send errors are logged, never raised:
a notification must never take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import structlog

from scheduler_daemon.timing.clock import Clock

log = structlog.get_logger("scheduler_daemon.operation.notify")

# The status line is refreshed (and the watchdog pinged, when it wants less) this often.
HEARTBEAT_MAX = 10.0


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract-namespace socket.
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        if not self._address:
            return
        try:
            if self._socket is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                self._socket = socket.socket(socket.AF_UNIX, kind)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.warning("notify_failed", error=str(exc), message=lines[0] if lines else "")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # systemd wants the reload's start time to tell it from the READY=1 that ends it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "stopping", *, needs: float | None = None) -> None:
        """``needs``: the seconds the stop may take from now; systemd waits that long if its
        TimeoutStopSec= is shorter (EXTEND_TIMEOUT_USEC, systemd 236+; it only ever extends)."""
        extend = () if needs is None else (f"EXTEND_TIMEOUT_USEC={round(needs * 1_000_000)}",)
        self.send("STOPPING=1", f"STATUS={status}", *extend)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    async def heartbeat(self, clock: Clock, status: Callable[[], str]) -> None:
        """Ping the watchdog and refresh STATUS= until cancelled: a task on the loop, so a
        blocked loop stops the pings (and systemd restarts us)."""
        interval = min(self.watchdog_interval or HEARTBEAT_MAX, HEARTBEAT_MAX)
        while True:
            self.watchdog()
            self.status(status())
            await clock.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of WATCHDOG_USEC, if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2 / 1_000_000
    except ValueError:
        return None
