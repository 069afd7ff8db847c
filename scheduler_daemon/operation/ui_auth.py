"""Who may see the status page (/ui/): the API's token, as a header or through a login session.

The login form takes the admin token and sets a session cookie: a random id mapped here, in the
daemon's memory, to its expiry and its CSRF token (the token itself never leaves the form). The
cookie is HttpOnly and SameSite=Strict (Secure when the request came over https); sessions end
at logout, after SESSION_TTL, when the token changes (a reload) or when the daemon restarts.
Scripts send the API's `Authorization: Bearer` or `X-API-Key` header instead, on every page.
Without a configured token the page follows the API: readable only where its reads are open,
and no buttons (changes need a token).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from scheduler_daemon.specs import AdminSpec

COOKIE = "sd_session"
SESSION_TTL = 12 * 3600.0  # seconds a login lasts
MAX_SESSIONS = 1000  # the oldest go first past this: a login form hammered cannot grow memory
Access = Literal["token", "session", "open", "none"]


@dataclass(slots=True)
class Session:
    expires: float  # time.monotonic()
    csrf: str
    token_digest: bytes  # of the token it was opened with: a new token ends the session


@dataclass(frozen=True, slots=True)
class Visitor:
    """How a request is let in: `token` (a header), `session` (the cookie, with its CSRF token),
    `open` (no token configured, reads open) or `none` (not let in)."""

    access: Access
    csrf: str | None = None

    @property
    def may_read(self) -> bool:
        return self.access != "none"

    @property
    def may_change(self) -> bool:
        return self.access in ("token", "session")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


class Sessions:
    """The open login sessions of this process, by cookie value."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def open(self, token: str) -> tuple[str, Session]:
        self._prune()
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]  # dicts keep insertion order: the oldest
        session_id = secrets.token_urlsafe(32)
        session = Session(time.monotonic() + SESSION_TTL, secrets.token_urlsafe(32), _digest(token))
        self._by_id[session_id] = session
        return session_id, session

    def find(self, session_id: str | None, token: str) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires < time.monotonic() or not hmac.compare_digest(
            session.token_digest, _digest(token)
        ):
            del self._by_id[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._by_id.items() if s.expires < now]:
            del self._by_id[key]

    def __len__(self) -> int:
        return len(self._by_id)


def visitor(
    request: web.Request, settings: AdminSpec | None, sessions: Sessions, header_token: bool
) -> Visitor:
    """How ``request`` is let in. ``header_token``: whether it carries the token in a header
    (admin.py's check, the API's own)."""
    token = settings.token if settings else None
    if token is None:
        reads_open = settings is None or settings.reads_open
        return Visitor("open" if reads_open else "none")
    if header_token:
        return Visitor("token")
    session = sessions.find(request.cookies.get(COOKIE), token)
    if session is not None:
        return Visitor("session", session.csrf)
    return Visitor("none")


def set_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(SESSION_TTL),
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=request.secure or request.headers.get("X-Forwarded-Proto", "") == "https",
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/ui/")


def csrf_ok(visitor: Visitor, given: str | None) -> bool:
    """A form's CSRF field against its session's. A header-token request needs none: a browser
    never adds that header on its own, so another site cannot forge it."""
    if visitor.access == "token":
        return True
    if visitor.access != "session" or visitor.csrf is None or not given:
        return False
    return hmac.compare_digest(visitor.csrf.encode(), given.encode("utf-8", "surrogateescape"))
