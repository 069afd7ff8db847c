"""What the tests share: a fake clock, job and record builders, local servers, the daemon as a
subprocess, and condition waits (never fixed sleeps).

Test modules import from here, never from each other; fixtures live in the conftest.py files.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from aiohttp import web

from scheduler_daemon.operation.daemon import Daemon
from scheduler_daemon.running.records import ExecutionRecord, FireKind, Status, scheduled_fire_id
from scheduler_daemon.specs import Config, load_config
from scheduler_daemon.storage import store

if TYPE_CHECKING:
    from scheduler_daemon.specs import JobSpec

REPO = Path(__file__).resolve().parent.parent
DAEMON = Path(sys.executable).with_name("scheduler-daemon")
# Daemons started by tests: killed after each test (conftest), so a failing test never leaves a
# `scheduler-daemon run` behind.
STARTED_PIDS: list[int] = []
T = datetime(2026, 1, 1, tzinfo=UTC)
Event = dict[str, Any]  # one JSON log line of the daemon


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False


class FakeClock:
    """A clock whose time only moves when the test says so.

    ``sleep`` parks the caller until ``advance`` moves monotonic time past its deadline; a
    ``timeout`` block is cancelled the same way. Wall time moves with monotonic time, and can also
    be stepped alone with ``jump`` (an NTP or manual clock change).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._wall = start
        self._mono = 1000.0
        self._due: list[tuple[float, int, asyncio.Future[None] | _Timer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self._mono + seconds, next(self._seq), fut))
        await fut

    @asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[object]:
        if seconds is None:
            yield None
            return
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = _Timer(expire)
        heapq.heappush(self._due, (self._mono + seconds, next(self._seq), timer))
        try:
            yield None
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            timer.cancelled = True

    def jump(self, seconds: float) -> None:
        """Step the wall clock alone (monotonic time does not move)."""
        self._wall += seconds

    async def settle(self) -> None:
        """Let every task that can run, run (several loop turns: tasks wake tasks)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its own deadline in order."""
        target = self._mono + seconds
        await self.settle()
        while self._due and self._due[0][0] <= target:
            deadline, _, waiter = heapq.heappop(self._due)
            if _done(waiter):
                continue
            self._wall += deadline - self._mono
            self._mono = deadline
            if isinstance(waiter, _Timer):
                waiter.cancelled = True
                waiter.callback()
            else:
                waiter.set_result(None)
            await self.settle()
        self._wall += target - self._mono
        self._mono = target
        await self.settle()

    @property
    def pending_sleepers(self) -> int:
        return sum(1 for _, _, w in self._due if not _done(w))


def _done(waiter: asyncio.Future[None] | _Timer) -> bool:
    return waiter.cancelled if isinstance(waiter, _Timer) else waiter.done()


def make_config(
    *jobs: JobSpec, path: Path = Path("/etc/scheduler/config.yaml"), **settings: Any
) -> Config:
    """A validated Config holding ``jobs``; other settings as the model's fields
    (``database=DatabaseSpec(url=...)``, ``admin=AdminSpec(listen=...)``, ``state_dir=Path``)."""
    state_dir = settings.pop("state_dir", Path("/var/lib/scheduler"))
    base = Config.model_validate(
        {"state_dir": str(state_dir), "jobs": {}}, context={"path": path, "base": path.parent}
    )
    return base.model_copy(update={"jobs": tuple(jobs), **settings})


def make_job(name: str = "job", **fields: object) -> JobSpec:
    """A JobSpec with a harmless default action and schedule; override any field."""
    from scheduler_daemon.specs import CommandSpec, JobSpec

    fields.setdefault("action", CommandSpec(argv=("true",)))
    if not any(k in fields for k in ("cron", "every", "at")):
        fields["every"] = 1.0
    return JobSpec(name=name, **fields)  # type: ignore[arg-type]


@asynccontextmanager
async def serve_locally(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 on a free port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def rec(
    job: str = "j", n: int = 0, attempt: int = 1, status: Status = Status.SUCCEEDED, **kw: object
) -> ExecutionRecord:
    """An execution row of job ``job``'s fire at ``T + n`` seconds."""
    at = T + timedelta(seconds=n)
    fields: dict[str, object] = dict(
        fire_id=scheduled_fire_id(job, at),
        job_name=job,
        scheduled_at=at,
        attempt=attempt,
        trigger=FireKind.SCHEDULE,
        status=status,
        started_at=at + timedelta(milliseconds=3),
        finished_at=at + timedelta(milliseconds=50),
        drift_ms=3.0,
        duration_ms=47.0,
        node="n1",
    )
    fields.update(kw)
    return ExecutionRecord(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def query_value(dsn: str, sql: str, *args: object) -> Any:
    """The first column of the first row of ``sql`` (for ``wait_until`` conditions on rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


class DaemonProcess:
    """A running `scheduler-daemon run` subprocess and the events it logged."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self.raw: list[str] = []
        self._reader = asyncio.create_task(self._read())
        self._seen = asyncio.Condition()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            self.raw.append(text)
            try:
                event = json.loads(text)
            except ValueError:
                continue
            async with self._seen:
                self.events.append(event)
                self._seen.notify_all()

    def mark(self) -> int:
        """A position in the log: pass it as ``since`` to wait only for what comes after."""
        return len(self.events)

    def after(self, event: Event) -> int:
        """The position just after ``event`` (one ``wait_for`` returned): a ``since``."""
        return next(i for i, e in enumerate(self.events) if e is event) + 1

    def matching(self, name: str | tuple[str, ...], since: int = 0, **fields: Any) -> list[Event]:
        """The events logged from ``since`` on named ``name`` (or any of the names) whose
        ``fields`` have the given values."""
        names = (name,) if isinstance(name, str) else name
        return [
            event
            for event in self.events[since:]
            if event.get("event") in names and all(event.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self,
        name: str | tuple[str, ...],
        timeout: float = 60,
        *,
        count: int = 1,
        since: int = 0,
        **fields: Any,
    ) -> Event:
        """The ``count``-th event that ``matching`` selects, once the daemon has logged it.

        E.g. ``wait_for("attempt_finished", count=3, job="tick", since=mark)``: the third attempt
        of ``tick`` that finished after ``mark``.
        """

        async def seen() -> Event:
            async with self._seen:
                while True:
                    found = self.matching(name, since, **fields)
                    if len(found) >= count:
                        return found[count - 1]
                    if self.proc.returncode is not None:
                        raise AssertionError("daemon exited; output:\n" + "\n".join(self.raw))
                    await self._seen.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            tail = "\n".join(self.raw[-40:])
            what = f"{count} x {name!r} {fields or ''}".rstrip()
            raise AssertionError(f"no {what} within {timeout}s; last output:\n{tail}") from None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code


async def start_daemon(config: Path, extra_env: dict[str, str] | None = None) -> DaemonProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SCHEDULER_LOG_LEVEL": "info",
        **(extra_env or {}),
    }
    env.pop("SCHEDULER_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        str(DAEMON),
        "run",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    STARTED_PIDS.append(proc.pid)
    return DaemonProcess(proc)


def reachable_dir(parent: Path) -> Path:
    """A new directory under ``parent`` that the embedded server's user can traverse when the
    tests run as root (``mkdtemp`` makes 0700, and the daemon never chmods a parent)."""
    place = Path(tempfile.mkdtemp(dir=parent))
    place.chmod(0o755)
    return place


def copy_cluster(template: Path, data_dir: Path) -> Path:
    """Copy ``template``, a PostgreSQL data directory, to ``data_dir/pgdata`` for an
    ``EmbeddedPostgres(data_dir)`` to start without running initdb; returns ``data_dir``.

    Modes are kept (PostgreSQL refuses a group- or world-readable data directory) and, as root,
    owners too: the server runs as the data directory's owner (``nobody`` for the template), and
    copies made by root would otherwise belong to root, unreadable to it.
    """
    pgdata = data_dir / "pgdata"
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, pgdata, symlinks=True)
    if os.geteuid() == 0:
        for copy in (pgdata, *pgdata.rglob("*")):
            source = template / copy.relative_to(pgdata)
            owner = source.lstat()
            os.chown(copy, owner.st_uid, owner.st_gid, follow_symlinks=False)
    return data_dir


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


# -- the admin API of a daemon running in the test's loop ----------------------------------

ADMIN_TOKEN = "admin-secret-5f1c9a"
JOB_TOKEN = "job-secret-83be21"
ENV = {"ADMIN_TOKEN": ADMIN_TOKEN, "JOB_TOKEN": JOB_TOKEN}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def write_config(
    path: Path, dsn: str, target: str, *, listen: str | None, token: str | None = "${ADMIN_TOKEN}"
) -> None:
    admin = f"admin:\n  listen: {listen}\n" if listen else ""
    if admin and token:
        admin += f"  token: {token}\n"
    path.write_text(
        f"""\
database: {{url: "{dsn}"}}
state_dir: ./state
shutdown_grace: 2s
{admin}jobs:
  greet:
    every: 1h
    python: tests.e2e_jobs:greet
    args: {{name: world}}
  explode:
    every: 1h
    python: tests.e2e_jobs:explode
    args: {{reason: boom}}
    retry: {{attempts: 2, delay: 10ms}}
  ping:
    cron: "0 9 * * MON-FRI"
    timezone: America/Sao_Paulo
    http:
      url: {target}/echo
      params: {{level: "1"}}
      headers: {{Authorization: "Bearer ${{JOB_TOKEN}}"}}
  shell:
    every: 1h
    command: ["true"]
"""
    )


class Running:
    """A daemon running in this test's loop, and a client for its admin API."""

    def __init__(self, daemon: Daemon, task: asyncio.Task[int], base: str) -> None:
        self.daemon, self.task, self.base = daemon, task, base
        self.http = aiohttp.ClientSession()

    async def call(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as r:
            text = await r.text()
            body = json.loads(text) if r.content_type == "application/json" else text
            return r.status, body

    async def stop(self) -> int:
        await self.http.close()
        self.daemon.request_stop("test")
        return await asyncio.wait_for(self.task, 30)


@asynccontextmanager
async def running_daemon(config: Path, base: str, *, jobs: int = 4) -> AsyncIterator[Running]:
    """``jobs``: how many jobs the config file has (they are synced before it is yielded)."""
    daemon = Daemon(load_config(config, environ=ENV))
    task = asyncio.create_task(daemon.run())
    running = Running(daemon, task, base)

    async def ready() -> bool:
        if task.done():
            task.result()
        try:
            status, body = await running.call("GET", "/healthz")
        except aiohttp.ClientError:
            return False
        return status == 200 and body["database"] == "connected"

    try:
        await wait_until(ready)
        # The jobs are synced on connection; pause/resume need their rows.
        await wait_until(lambda: _synced(daemon, jobs))
        yield running
    finally:
        if not task.done():
            await running.stop()


async def _synced(daemon: Daemon, jobs: int) -> bool:
    pool = daemon.recorder.pool
    return (
        pool is not None
        and await pool.fetchval("SELECT count(*) FROM jobs WHERE source = 'config'") == jobs
    )


@asynccontextmanager
async def listening(dsn: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """The events channel: each notification's payload, parsed."""
    conn = await asyncpg.connect(dsn)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await conn.add_listener(store.EVENTS_CHANNEL, lambda *a: events.put_nowait(json.loads(a[3])))
    try:
        yield events
    finally:
        await conn.close()


async def next_event(events: asyncio.Queue[dict[str, Any]], **match: Any) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(events.get(), 10)
        if all(event.get(k) == v for k, v in match.items()):
            return event


def readme_install_steps() -> list[str]:
    """The first sh block of README "Running under systemd": the install, one command a line."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running under systemd") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no sh block in README 'Running under systemd'"
    return [line for line in block.group(1).splitlines() if line.strip()]
