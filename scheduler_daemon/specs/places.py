"""Config values that name places: the database URL, directories, the admin listener, secrets.

Like every ``Value`` (see ``values``): parsed as written, refused with "expected X, got Y".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic.json_schema import JsonSchemaValue

from scheduler_daemon.specs.values import Invalid, Templated, Value, got


class PostgresUrl(Value):
    """A postgresql:// URL; empty or null: the embedded PostgreSQL."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> str | None:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not re.match(r"postgres(ql)?://", value):
            raise Invalid(
                f"expected a postgresql:// URL or nothing (embedded PostgreSQL), got {got(value)}"
            )
        return value

    def json_schema(self) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string"}, {"type": "null"}]}


class Directory(Value):
    """A directory; relative to the config file's folder (``context["base"]``)."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> Path:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected a non-empty string, got {got(value)}")
        # $STATE_DIRECTORY may list several directories (colon-separated): the first is ours.
        path = Path(value.split(":")[0]).expanduser()
        if not path.is_absolute():
            path = Path(context.get("base", ".")) / path
        return path.resolve()

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "minLength": 1}


class Directories(Value):
    """One directory or a list of them; each relative to the config file's folder."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> tuple[Path, ...]:
        items = list(value) if isinstance(value, list | tuple) else [value]
        base = Path(context.get("base", "."))
        paths: list[Path] = []
        for item in items:
            if isinstance(item, Path):
                item = str(item)
            if not isinstance(item, str) or not item.strip():
                raise Invalid(f"expected a directory or a list of directories, got {got(item)}")
            path = Path(item).expanduser()
            paths.append((path if path.is_absolute() else base / path).resolve())
        return tuple(paths)

    def json_schema(self) -> JsonSchemaValue:
        text = {"type": "string", "minLength": 1}
        return {"anyOf": [text, {"type": "array", "items": text}]}


@dataclass(frozen=True)
class ListenAddress:
    """Where the admin server listens: a TCP host and port, or a unix socket."""

    host: str | None = None
    port: int | None = None
    unix_socket: Path | None = None
    text: str = field(default="", compare=False)  # as written, for messages

    @property
    def is_loopback(self) -> bool:
        if self.unix_socket is not None or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:
            return False


class Listen(Value):
    """`127.0.0.1:8089`, `[::1]:9000`, or a unix socket path (relative to the config file)."""

    expected = "expected host:port (127.0.0.1:8089) or a unix socket path"

    def convert(self, value: Any, context: Mapping[str, Any]) -> ListenAddress:
        if isinstance(value, ListenAddress):
            return value
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"{self.expected}, got {got(value)}")
        listen = value.strip()
        text = value.template if isinstance(value, Templated) else listen  # never the value
        if listen.startswith(("unix:", "/", "./", "../")):
            path = Path(listen.removeprefix("unix:")).expanduser()
            base = Path(context.get("base", "."))
            socket = path if path.is_absolute() else (base / path).resolve()
            return ListenAddress(unix_socket=socket, text=text)
        host, sep, port_text = listen.rpartition(":")
        host = host.strip("[]")
        if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise Invalid(f"{self.expected}, got {got(value)}")
        return ListenAddress(host=host or "0.0.0.0", port=int(port_text), text=text)

    def json_schema(self) -> JsonSchemaValue:
        return {"type": "string", "description": "host:port (127.0.0.1:8089) or a socket path"}


class Secret(Value):
    """A string whose value is never shown; empty means none."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> str | None:
        if value is not None and not isinstance(value, str):
            raise Invalid(f"expected a string, got {got(value)}")
        return value or None

    def json_schema(self) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string"}, {"type": "null"}]}
