"""The status page's live updates (GET /ui/events) against the running daemon, real PostgreSQL.

The stream's queue and its resync are in tests/unit/test_live.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from scheduler_daemon.operation import live
from scheduler_daemon.storage import store
from tests import e2e_jobs
from tests.helpers import AUTH, Running, query_value, wait_until


async def _events(response: aiohttp.ClientResponse) -> Any:
    """The stream's events as (name, data), comments and the retry field left out."""
    name, data = "", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif not line and name:
            yield name, json.loads(data)
            name, data = "", ""


async def _next(events: Any, kind: str) -> dict[str, Any]:
    while True:
        name, data = await asyncio.wait_for(anext(events), 10)
        if name == kind:
            return dict(data)


async def test_an_attempt_streams_its_start_then_its_finish_with_its_row_id(api: Running) -> None:
    hold = "live-start"
    async with api.http.get(api.base + live.EVENTS_PATH, headers=AUTH) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = _events(response)
        await _subscribed(api)
        status, fired = await api.call("POST", "/jobs/greet/trigger", json={"args": {"hold": hold}})
        assert status == 202
        started = await _next(events, "started")
        assert (started["job"], started["fire_id"], started["status"]) == (
            "greet",
            fired["fire_id"],
            "running",
        )
        assert started["trigger"] == "manual" and started["attempt"] == 1
        e2e_jobs.HELD.setdefault(hold, asyncio.Event()).set()
        finished = await _next(events, "finished")
    assert (finished["fire_id"], finished["status"]) == (fired["fire_id"], "succeeded")
    status, row = await api.call("GET", f"/executions/{finished['id']}")
    assert status == 200 and row["fire_id"] == fired["fire_id"]


async def test_the_stream_needs_the_token_or_a_session(api: Running) -> None:
    url = api.base + live.EVENTS_PATH
    async with api.http.get(url, allow_redirects=False) as response:
        assert response.status == 303  # to the login form, as the pages
    async with api.http.get(url, headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401


async def test_stopping_the_daemon_ends_open_streams(api: Running) -> None:
    # Two browsers watching must not hold the daemon's stop (aiohttp would wait for them).
    responses = [await api.http.get(api.base + live.EVENTS_PATH, headers=AUTH) for _ in range(2)]
    await _subscribed(api, clients=2)
    reading = [asyncio.ensure_future(r.content.read()) for r in responses]
    api.daemon.request_stop("test")
    assert await asyncio.wait_for(api.task, 30) == 0
    bodies = await asyncio.wait_for(asyncio.gather(*reading), 5)
    assert all(body.startswith(b"retry: ") for body in bodies)  # then the end of the stream
    for r in responses:
        r.release()


async def _subscribed(api: Running, clients: int = 1) -> None:
    """Wait until the hub has ``clients`` streams and listens: events before are not theirs."""
    assert api.daemon._admin is not None
    hub = api.daemon._admin.app[live.HUB]

    async def ready() -> bool:
        return len(hub.clients) >= clients and hub.listening

    await wait_until(ready)


async def test_a_lost_listen_connection_tells_pages_to_resync_and_listens_again(
    api: Running, database_url: str
) -> None:
    async with api.http.get(api.base + live.EVENTS_PATH, headers=AUTH) as response:
        events = _events(response)
        await _subscribed(api)
        # Finishes published while it was away are not replayed: the page must reload.
        killed = await query_value(
            database_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE query = 'LISTEN \"{store.EVENTS_CHANNEL}\"' AND pid <> pg_backend_pid()",
        )
        assert killed == 1
        assert await _next(events, "resync") == {}
        await _subscribed(api)  # listening again
        status, fired = await api.call("POST", "/jobs/shell/trigger")
        assert status == 202
        finished = await _next(events, "finished")
    assert finished["fire_id"] == fired["fire_id"]
