"""The live stream's per-client queue: bounded, a slow client resyncs (operation/live.py)."""

from __future__ import annotations

import json

from scheduler_daemon.operation import live
from scheduler_daemon.running.records import Status
from tests.helpers import rec


def _drain(client: live.Client) -> list[bytes]:
    out = []
    while not client.queue.empty():
        out.append(client.queue.get_nowait())
    return out


async def test_a_client_that_falls_behind_gets_one_resync_instead_of_a_growing_queue() -> None:
    client = live.Client(size=3)
    for n in range(8):
        client.offer(live.frame("finished", f'{{"n": {n}}}'))
    queued = _drain(client)
    # The 4th event found the queue full: emptied, a resync instead; later events queue again.
    # Events 0-2 fill it; 3 finds it full (resync); 4, 5 fill it again; 6 (resync); 7.
    assert queued == [b"event: resync\ndata: {}\n\n", b'event: finished\ndata: {"n": 7}\n\n']
    assert client.resyncs == 2


async def test_a_hub_offers_each_event_to_every_client_and_ends_them_at_close() -> None:
    hub = live.LiveHub(dsn=lambda: "", node=lambda: "n1", notified=lambda: False)
    first, second = hub.subscribe(), hub.subscribe()
    hub.publish(live.frame("started", "{}"))
    await hub.close()
    for client in (first, second):
        assert _drain(client) == [b""]  # the end: what was queued goes with the connection
    hub.unsubscribe(first)
    assert hub.clients == {second}


async def test_finishes_come_from_the_runner_only_when_the_channel_carries_none() -> None:
    for published in (True, False):
        hub = live.LiveHub(dsn=lambda: "", node=lambda: "n1", notified=lambda p=published: p)
        client = hub.subscribe()
        hub.attempt_finished(rec("job", 1, error="boom"))
        hub.attempt_finished(rec("job", 2, status=Status.RUNNING, finished_at=None))
        queued = _drain(client)
        if published:  # `events: true`: the LISTEN connection brings them, committed
            assert queued == []
        else:
            [event] = queued
            name, data = event.decode().splitlines()[:2]
            body = json.loads(data.removeprefix("data: "))
            assert name == "event: finished"
            assert (body["job"], body["error"], body["status"]) == ("job", "boom", "succeeded")
            assert "output" not in body and "result" not in body
