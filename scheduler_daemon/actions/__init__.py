"""Job kinds: http, command, python. (Being written.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from scheduler_daemon.actions.outcome import Outcome


class Action(Protocol):
    async def run(self, overrides: Mapping[str, Any] | None = None) -> Outcome: ...
