"""The daemon's own settings beside its jobs: the admin API, cluster mode, the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from scheduler_daemon.specs import places
from scheduler_daemon.specs import values as v
from scheduler_daemon.specs.spec import Problem, Spec
from scheduler_daemon.specs.token_file import FileToken, TokenFile


class AdminSpec(Spec):
    """The admin HTTP server (`admin:`): off when the section is absent."""

    listen: Annotated[
        places.ListenAddress,
        places.Listen(),
        Field(description="host:port like 127.0.0.1:8089, or a unix socket path"),
    ]
    # The Bearer token: written in the config (`token:`, usually ${VAR}), or read from a file.
    token_text: Annotated[str | None, places.Secret()] = Field(
        default=None, alias="token", repr=False
    )
    token_file: Annotated[FileToken | None, TokenFile()] = Field(default=None, repr=False)
    allow_remote: Annotated[bool, v.Boolean()] = False  # binding beyond loopback needs this
    # Without a token, reads (history: captured output, run arguments) answer anyone on the host
    # only when asked for; a unix socket's own modes decide who reaches it.
    open_reads: Annotated[bool, v.Boolean()] = False
    # The kinds of job the API and `jobs apply` may create besides http: a command, shell or
    # python job runs anything as the daemon's user, so only the operator can allow them.
    allow_job_kinds: Annotated[
        tuple[str, ...],
        v.Names(
            pattern="http|command|shell|python", what="job kinds (http, command, shell, python)"
        ),
    ] = ()
    # The daemon's environment variables an API job may use as a secret ({"env": "NAME"}): any
    # other would hand the daemon's own (its database URL) to whoever holds the token.
    allow_env: Annotated[tuple[str, ...], v.Names(what="environment variable names")] = ()

    @property
    def token(self) -> str | None:
        """The Bearer token the API expects and the CLI sends, if any."""
        return self.token_file.token if self.token_file is not None else self.token_text

    @property
    def reads_open(self) -> bool:
        """Whether the read endpoints answer without the token."""
        return self.token is None and (self.open_reads or self.listen.unix_socket is not None)

    def value_rules(self) -> list[Problem]:
        if self.token_text is not None and self.token_file is not None:
            return [(("token_file",), "expected `token` or `token_file`, got both")]
        if not self.allow_remote and not self.listen.is_loopback:
            return [
                (
                    ("listen",),
                    f"{self.listen.text!r} is reachable beyond this machine; listen on 127.0.0.1 "
                    "or a unix socket, or set `allow_remote: true` (with a token) if that is "
                    "what you want",
                )
            ]
        if self.allow_remote and not self.token:
            return [
                (
                    ("allow_remote",),
                    "reachable beyond this machine without a token: set admin.token (or "
                    "admin.token_file) as well",
                )
            ]
        return []

    @property
    def host(self) -> str | None:
        return self.listen.host

    @property
    def port(self) -> int | None:
        return self.listen.port

    @property
    def unix_socket(self) -> Path | None:
        return self.listen.unix_socket

    @property
    def address(self) -> str:
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


class ClusterSpec(Spec):
    """Several daemons (replicas) on one PostgreSQL, each fire run by one of them (`cluster:`)."""

    enabled: Annotated[bool, v.Boolean()] = False
    # A fire's other replicas claim it if its preferred one has not, this long past due.
    takeover_after: Annotated[float, v.Duration(positive=True)] = 2.0
    # A replica not seen this long is dead: its running attempts are abandoned and retried.
    lease: Annotated[float, v.Duration(positive=True)] = 15.0

    def value_rules(self) -> list[Problem]:
        if self.lease <= self.takeover_after:
            return [(("lease",), "expected a lease longer than takeover_after")]
        return []


class DatabaseSpec(Spec):
    url: Annotated[str | None, places.PostgresUrl()] = None  # None: embedded PostgreSQL
