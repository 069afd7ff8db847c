"""Fixtures of the PostgreSQL layer: a local HTTP target and a daemon with its admin API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import Running, free_port, running_daemon, serve_locally, write_config


@pytest.fixture
async def target() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append({"query": dict(request.query), "body": json.loads(body) if body else None,
                     "auth": request.headers.get("Authorization")})  # fmt: skip
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    async with serve_locally(app) as url:
        yield url, seen


@pytest.fixture
def config(tmp_path: Path, database_url: str, target: tuple[str, Any]) -> tuple[Path, str]:
    port = free_port()
    path = tmp_path / "config.yaml"
    write_config(path, database_url, target[0], listen=f"127.0.0.1:{port}")
    return path, f"http://127.0.0.1:{port}"


@pytest.fixture
async def api(config: tuple[Path, str]) -> AsyncIterator[Running]:
    async with running_daemon(*config) as running:
        yield running
