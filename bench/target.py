"""The HTTP target of the http scenario: a minimal aiohttp server on 127.0.0.1, in its own process.

python -m bench.target      # prints the port it listens on, serves until killed
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop
from aiohttp import web


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/ping", ping)
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
