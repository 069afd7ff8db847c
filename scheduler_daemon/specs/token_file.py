"""`admin.token_file`: the admin token read from a file (a systemd credential, a root-only file).

A token in a file stays out of the unit's environment (``systemctl show`` prints it to any user)
and out of the config (which the service's dynamic user must be able to read). The file is read
at every load, like the rest of the config: its content, stripped, is the token, never shown.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic.json_schema import JsonSchemaValue

from scheduler_daemon.errors import as_whom
from scheduler_daemon.specs.values import Invalid, Value, got

MAX_BYTES = 4096
# Other users may not read it, nor group members change it (a group may read it: an operators'
# group running the CLI without sudo).
LOOSE_BITS = 0o027


@dataclass(frozen=True)
class FileToken:
    """Where the token was read from, and the token (never in repr)."""

    path: Path
    token: str = field(repr=False)


class TokenFile(Value):
    """A path (relative to the config file) to a file holding the token on one line."""

    def convert(self, value: Any, context: Mapping[str, Any]) -> FileToken | None:
        if value is None:
            return None
        if isinstance(value, FileToken):
            return value
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected a file path, got {got(value)}")
        path = Path(value.strip()).expanduser()
        if not path.is_absolute():
            path = Path(context.get("base", ".")) / path
        return FileToken(path, read_token(path))

    def json_schema(self) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "a file holding the admin token (relative to the config file)",
        }


def read_token(path: Path) -> str:
    """The file's stripped content; Invalid (naming the file, never its content) if unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror or exc}{as_whom()}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Invalid(f"expected a regular file, got {path} (not a regular file)")
        mode = stat.S_IMODE(st.st_mode)
        if mode & LOOSE_BITS:
            raise Invalid(
                f"{path} has mode {mode:04o}: other users could read or change the token; "
                "chmod 0600 (or 0640 for an operators' group)"
            )
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise Invalid(f"expected a token of at most {MAX_BYTES} bytes in {path}")
    token = data.decode("utf-8", errors="replace").strip()
    if not token:
        raise Invalid(f"{path} is empty: expected the token in it")
    # It goes into an HTTP header: one line of visible ASCII.
    if not all("!" <= ch <= "~" for ch in token):
        raise Invalid(f"expected the token in {path} on one line, without spaces")
    return token
