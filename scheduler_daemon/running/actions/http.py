"""HTTP jobs: one shared aiohttp session; the body is streamed and only its head is kept."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from yarl import URL

from scheduler_daemon.running.actions.outcome import Outcome
from scheduler_daemon.running.actions.results import ResultReader, succeeded
from scheduler_daemon.running.records import Status
from scheduler_daemon.specs import HttpSpec
from scheduler_daemon.specs.redaction import is_secret_header

_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
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
            # No cookie jar: the session is shared, and a cookie one job's response set (a login
            # session, say) was sent with every other job's requests to that host.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class HttpAction:
    __slots__ = ("_capture", "_client", "_results", "_spec")

    def __init__(
        self,
        spec: HttpSpec,
        *,
        client: HttpClient,
        capture_bytes: int,
        results: ResultReader | None = None,
    ) -> None:
        self._spec = spec
        self._client = client
        self._capture = capture_bytes
        self._results = results

    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome:
        spec = self._spec
        params: Mapping[str, Any] = spec.params
        json_body = spec.json_body
        if overrides:
            params = {**params, **overrides.get("params", {})}  # merged over the configured
            json_body = overrides.get("json", json_body)
        body: dict[str, Any] = {}
        if json_body is not None:
            body["json"] = json_body
        elif spec.body is not None:
            body["data"] = spec.body.encode()
        try:
            return await self._request(spec.method, URL(spec.url), params, body)
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

    async def _request(
        self, method: str, url: URL, params: Mapping[str, Any], body: dict[str, Any]
    ) -> Outcome:
        """One request, and with ``follow_redirects`` the hops after it (up to MAX_REDIRECTS)."""
        headers = dict(self._spec.headers)
        session = self._client.session()
        for _ in range(MAX_REDIRECTS + 1):
            async with session.request(
                method, url, headers=headers, params=params, allow_redirects=False, **body
            ) as resp:
                location = resp.headers.get("Location")
                if not (self._spec.follow_redirects and resp.status in _REDIRECTS and location):
                    return await self._outcome(resp)
                hop = resp.url.join(URL(location))
            if hop.origin() != url.origin():
                headers = {k: v for k, v in headers.items() if not is_secret_header(k)}
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", {}  # what browsers do: the body is not sent again
            url, params = hop, {}  # the Location carries its own query
        return Outcome(Status.FAILED, retryable=False, error=f"more than {MAX_REDIRECTS} redirects")

    async def _outcome(self, resp: aiohttp.ClientResponse) -> Outcome:
        status = resp.status
        ok = status in self._spec.expect if self._spec.expect else 200 <= status < 300
        results = self._results
        if ok and results is not None and results.wants_body(resp.content_type):
            # The whole body (up to result_max_bytes) is the result; `output` is its head.
            body, total = await _read_body(resp, max(self._capture, results.max_bytes + 1))
            kept = await results.from_body(body, total)
            return succeeded(kept, http_status=status, output=_head(body, total, self._capture))
        body, total = await _read_body(resp, self._capture)
        output = _head(body, total, self._capture)
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
_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s'\"?#]*)\?[^\s'\"#)]*", re.IGNORECASE)


def without_queries(text: str) -> str:
    """``text`` with every URL's query string replaced by ``?…``."""
    return _QUERY.sub(r"\1?…", text)


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytearray, int]:
    """The first ``limit`` bytes and the body's size: the rest is drained, so a huge body never
    sits in memory."""
    head = bytearray()
    total = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        total += len(chunk)
        if len(head) < limit:
            head += chunk[: limit - len(head)]
    return head, total  # not copied into bytes: it is read once more, at most


def _head(body: bytearray, total: int, limit: int) -> str:
    """What `output` keeps of a body: its first ``limit`` bytes, marked when cut."""
    text = (body if len(body) <= limit else body[:limit]).decode("utf-8", errors="replace")
    if total > limit:
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
