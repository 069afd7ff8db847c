"""The HTTP target of the http scenario: a minimal aiohttp server on 127.0.0.1, in its own process.

python -m bench.target      # prints the port it listens on, serves until killed
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import uvloop
from aiohttp import web


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def tickers(count: int) -> bytes:
    """A Binance /api/v3/ticker/24hr-shaped JSON list of ``count`` tickers (~450 bytes each)."""
    return json.dumps(
        [
            {
                "symbol": f"C{i:05d}USDT",
                "priceChange": f"{i * 0.37:.8f}",
                "priceChangePercent": f"{(i % 17) - 8:.3f}",
                "weightedAvgPrice": f"{1000 + i:.8f}",
                "lastPrice": f"{1000 + i * 1.5:.8f}",
                "lastQty": "0.00150000",
                "openPrice": f"{999 + i:.8f}",
                "highPrice": f"{1010 + i:.8f}",
                "lowPrice": f"{990 + i:.8f}",
                "volume": f"{12345.678 + i:.8f}",
                "quoteVolume": f"{98765432.1 + i:.8f}",
                "openTime": 1_764_201_600_000,
                "closeTime": 1_764_288_000_000,
                "firstId": 4_000_000_000 + i,
                "lastId": 4_000_100_000 + i,
                "count": 100_000 + i,
            }
            for i in range(count)
        ]
    ).encode()


# /json/N: N tickers (1: ~450 bytes, 900: ~400 KB), built once per size.
_BODIES: dict[int, bytes] = {}


async def json_list(request: web.Request) -> web.Response:
    count = int(request.match_info["count"])
    body = _BODIES.get(count) or _BODIES.setdefault(count, tickers(count))
    return web.Response(body=body, content_type="application/json")


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_get("/json/{count:\\d+}", json_list)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    print(sock.getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(uvloop.run(serve()))
