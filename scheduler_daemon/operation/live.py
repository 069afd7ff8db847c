"""The status page's live updates: server-sent events of attempts starting and finishing.

Finishes come from the executions channel (README: Events), on one LISTEN connection per daemon,
opened when the first browser subscribes: committed rows only, of every replica. Starts come
from the runner (its observer, through ``Metrics``), so only this replica's: another replica's
attempt shows when it finishes. With `events: false` nothing is published, and this replica's
finishes come from the runner too.

Each client has a bounded queue. A client that falls behind (a stalled tab, a slow link) has its
queue emptied and gets one `resync` event (the page reloads) instead of growing the daemon's
memory. At stop, every stream ends first (on_shutdown), so open pages never delay the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog
from aiohttp import web

from scheduler_daemon.operation.api_handlers import Controlled
from scheduler_daemon.running.fire import Fire
from scheduler_daemon.running.records import ExecutionRecord, Status
from scheduler_daemon.storage import rows, store

log = structlog.get_logger("scheduler_daemon.operation.live")

EVENTS_PATH = "/ui/events"
QUEUE_SIZE = 256  # events a client may be behind before it is told to resync
KEEPALIVE = 15.0  # a comment this often keeps proxies from closing an idle stream
RECONNECT_EVERY = 5.0  # the LISTEN connection, after the database went away
RETRY_MS = 3000  # how long a browser waits before reconnecting (the SSE `retry:` field)

_END = b""  # the sentinel that ends a stream (at stop)
_RESYNC = b"event: resync\ndata: {}\n\n"


def frame(kind: str, data: str) -> bytes:
    """One SSE event; ``data`` is one line of JSON (json.dumps never writes a newline)."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


class Client:
    """One open stream: what it has yet to send."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.resyncs = 0

    def offer(self, event: bytes) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._replace_all(_RESYNC)
            self.resyncs += 1

    def end(self) -> None:
        self._replace_all(_END)  # what is queued would be lost with the connection anyway

    def _replace_all(self, event: bytes) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(event)


class LiveHub:
    """Fans attempt events out to the open streams."""

    def __init__(
        self, *, dsn: Callable[[], str], node: Callable[[], str], notified: Callable[[], bool]
    ) -> None:
        """``notified``: whether finishes are published on the channel (config `events`)."""
        self._dsn = dsn
        self._node = node
        self._notified = notified
        self.clients: set[Client] = set()
        self._listener: asyncio.Task[None] | None = None
        self.listening = False  # the LISTEN connection is up
        self._closed = False

    def subscribe(self) -> Client:
        client = Client()
        self.clients.add(client)
        if self._listener is None and self._notified():
            self._listener = asyncio.create_task(self._listen(), name="live-listen")
        return client

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    def publish(self, event: bytes) -> None:
        for client in self.clients:
            client.offer(event)

    # -- sources ---------------------------------------------------------------------------------

    def attempt_started(self, fire: Fire) -> None:
        if not self.clients:
            return
        data = {
            "job": fire.job.name,
            "fire_id": str(fire.fire_id),
            "attempt": fire.attempt,
            "trigger": str(fire.trigger),
            "status": str(Status.RUNNING),
            "scheduled_at": fire.scheduled_at.isoformat(),
            "started_at": datetime.fromtimestamp(fire.started, UTC).isoformat(),
            "drift_ms": round((fire.started - fire.due) * 1000.0, 3),
            "node": self._node(),
        }
        self.publish(frame("started", json.dumps(data)))

    def attempt_finished(self, rec: ExecutionRecord) -> None:
        """This replica's finishes, used only when the channel carries none."""
        if not self.clients or self._notified() or rec.status is Status.RUNNING:
            return
        data = rows.to_json(rec)
        data["job"] = data.pop("job_name")
        for attached in ("output", "result", "items"):
            data.pop(attached, None)
        self.publish(frame("finished", json.dumps(data, default=str)))

    def _notification(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.publish(frame("finished", str(payload)))  # the payload is one line of JSON already

    async def _listen(self) -> None:
        """Hold the LISTEN connection until closed; reconnect after a loss (clients resync:
        they missed what was published meanwhile)."""
        while True:
            conn = await self._connect()
            if conn is None:
                await asyncio.sleep(RECONNECT_EVERY)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            self.listening = True
            try:
                await lost.wait()
            finally:
                self.listening = False
                if not conn.is_closed():
                    await conn.close(timeout=1)
            log.info("live_listener_lost")
            self.publish(_RESYNC)

    async def _connect(self) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(
                self._dsn(), timeout=store.CONNECT_TIMEOUT, server_settings=store.SERVER_SETTINGS
            )
        except (*store.DB_ERRORS, RuntimeError) as exc:  # RuntimeError: no server yet
            log.debug("live_not_listening", error=str(exc))
            return None
        try:
            await conn.add_listener(store.EVENTS_CHANNEL, self._notification)
        except store.DB_ERRORS as exc:
            log.debug("live_not_listening", error=str(exc))
            await conn.close(timeout=1)
            return None
        return conn

    async def close(self) -> None:
        """End every stream and the LISTEN connection."""
        self._closed = True
        for client in self.clients:
            client.end()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    @property
    def closed(self) -> bool:
        return self._closed


async def stream(hub: LiveHub, request: web.Request) -> web.StreamResponse:
    """GET /ui/events: the event stream (text/event-stream) until the client leaves or the
    daemon stops."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    await response.prepare(request)
    if hub.closed:
        return response
    client = hub.subscribe()
    try:
        await response.write(f"retry: {RETRY_MS}\n: live\n\n".encode())
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    event = await client.queue.get()
            except TimeoutError:
                event = b": keepalive\n\n"
            if event == _END:
                break
            await response.write(event)
    except (ConnectionResetError, ConnectionError):
        pass  # the browser left
    finally:
        hub.unsubscribe(client)
    return response


HUB = web.AppKey("live_hub", LiveHub)


def install(app: web.Application, target: Controlled, *, prefix: str = "") -> LiveHub:
    """Serve EVENTS_PATH from ``app`` (mounted at ``prefix``), fed by ``target`` (the daemon)."""
    hub = LiveHub(
        dsn=lambda: target.recorder.database.dsn,
        node=lambda: target.config.node,
        notified=lambda: target.config.events,
    )
    app[HUB] = hub

    async def events(request: web.Request) -> web.StreamResponse:
        return await stream(hub, request)

    async def started(_app: web.Application) -> None:
        target.metrics.on_start = hub.attempt_started
        target.metrics.on_finish = hub.attempt_finished

    async def stopping(_app: web.Application) -> None:
        target.metrics.on_start = target.metrics.on_finish = None
        await hub.close()

    app.router.add_get(EVENTS_PATH.removeprefix(prefix), events, allow_head=False)
    app.on_startup.append(started)
    app.on_shutdown.append(stopping)
    return hub
