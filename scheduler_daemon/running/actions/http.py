"""HTTP jobs: one shared aiohttp session; the body is streamed and only its head is kept."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import HttpSpec

_CHUNK = 64 * 1024
# A server that accepts and then says nothing must not hold an attempt (and, with `overlap: skip`,
# every later fire of its job) forever when the job has no `timeout`.
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 300.0  # between two reads of the response, not the whole attempt


class HttpClient:
    """The one ClientSession every HTTP job shares (created lazily inside the running loop)."""

    def __init__(
        self, *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT
    ) -> None:
        self._session: aiohttp.ClientSession | None = None
        # The whole attempt's limit is the job's `timeout` (the runner's); these bound one wait.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class HttpAction:
    __slots__ = ("_capture", "_client", "_spec")

    def __init__(self, spec: HttpSpec, *, client: HttpClient, capture_bytes: int) -> None:
        self._spec = spec
        self._client = client
        self._capture = capture_bytes

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        spec = self._spec
        params: Mapping[str, Any] = spec.params
        json_body = spec.json_body
        if overrides:
            params = {**params, **overrides.get("params", {})}  # merged over the configured
            json_body = overrides.get("json", json_body)
        kwargs: dict[str, Any] = {"headers": spec.headers, "params": params}
        if json_body is not None:
            kwargs["json"] = json_body
        elif spec.body is not None:
            kwargs["data"] = spec.body.encode()
        try:
            async with self._client.session().request(spec.method, spec.url, **kwargs) as resp:
                output = await _read_head(resp, self._capture)
                return self._outcome(resp, output)
        except asyncio.CancelledError:
            raise
        except aiohttp.ClientConnectorError as exc:
            error = f"connection failed: {exc.os_error}"
            return Outcome(Status.FAILED, retryable=True, error=without_queries(error))
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            return Outcome(Status.FAILED, retryable=True, error=without_queries(error))
        except Exception as exc:  # noqa: BLE001 - e.g. a body that can't be encoded: the job's fault
            error = f"{type(exc).__name__}: {exc}"
            return Outcome(Status.FAILED, retryable=False, error=without_queries(error))

    def _outcome(self, resp: aiohttp.ClientResponse, output: str) -> Outcome:
        status = resp.status
        ok = status in self._spec.expect if self._spec.expect else 200 <= status < 300
        if ok:
            return Outcome(Status.SUCCEEDED, retryable=False, http_status=status, output=output)
        retryable = status >= 500 or status == 429
        return Outcome(
            Status.FAILED,
            retryable=retryable,
            http_status=status,
            error=f"HTTP {status}",
            output=output,
            retry_after=_retry_after(resp.headers.get("Retry-After")) if retryable else None,
        )


# A URL's query string: where API keys travel (`?api_key=...`, `params:`). aiohttp's error texts
# quote whole URLs, and ours go to executions.error, the log and NOTIFY payloads.
_QUERY = re.compile(r"(\bhttps?://[^\s'\"?#]*)\?[^\s'\"#)]*", re.IGNORECASE)


def without_queries(text: str) -> str:
    """``text`` with every http(s) URL's query string replaced by ``?…``."""
    return _QUERY.sub(r"\1?…", text)


async def _read_head(resp: aiohttp.ClientResponse, limit: int) -> str:
    """Keep the first ``limit`` bytes and drain the rest, so a huge body never sits in memory."""
    head = bytearray()
    total = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        total += len(chunk)
        if len(head) < limit:
            head += chunk[: limit - len(head)]
    text = head.decode("utf-8", errors="replace")
    if total > len(head):
        text += f"\n[truncated: {total} bytes total]"
    return text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
