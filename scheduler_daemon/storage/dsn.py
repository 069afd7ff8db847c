"""What a database URL points at, and why connecting to it failed, in words fit for a log line
or an error message: host, port, database and user, never the password or the query string."""

from __future__ import annotations

import errno
import getpass
import os
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

DEFAULT_PORT = 5432


@dataclass(frozen=True)
class Target:
    host: str
    port: str
    database: str
    user: str

    def url(self) -> str:
        """``postgresql://user@host:port/database``: the URL without its secrets."""
        if self.host.startswith("/"):  # a unix socket directory
            return f"postgresql://{self.user}@/{self.database}?host={self.host}&port={self.port}"
        host = self.host
        if ":" in host and "," not in host:  # IPv6
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        return f"postgresql://{self.user}@{host}{port}/{self.database}"

    def fields(self) -> dict[str, str]:
        return {"host": self.host, "port": self.port, "database": self.database, "user": self.user}


def target(dsn: str) -> Target:
    """The parts of ``dsn`` (libpq's defaults for the missing ones: PGHOST, PGPORT, ...)."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    netloc = parts.netloc.rpartition("@")
    login, hosts = netloc[0], netloc[2]
    host, port = _host_port(hosts)
    user = query.get("user") or unquote(login.partition(":")[0]) or os.environ.get("PGUSER")
    user = user or _os_user()
    database = (
        query.get("dbname")
        or query.get("database")
        or unquote(parts.path.lstrip("/"))
        or os.environ.get("PGDATABASE")
        or user
    )
    if "," in host:  # several hosts, their ports written beside them
        return Target(host=host, port=query.get("port", ""), database=database, user=user)
    return Target(
        host=query.get("host") or host or os.environ.get("PGHOST") or "localhost",
        port=query.get("port") or port or os.environ.get("PGPORT") or str(DEFAULT_PORT),
        database=database,
        user=user,
    )


def _host_port(hosts: str) -> tuple[str, str]:
    if "," in hosts:  # several hosts: name them all, as written
        return hosts, ""
    if hosts.startswith("["):  # [IPv6]:port
        host, _, rest = hosts[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = hosts.partition(":")
    return unquote(host), port


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return str(os.getuid())


def why(exc: BaseException) -> str:
    """A connection failure in a few words: "connection refused", "password authentication
    failed for user "x"", "database "x" does not exist", ..."""
    # One address refused, or all of them ("Multiple exceptions: ..." for localhost's two).
    if isinstance(exc, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in str(exc):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__
