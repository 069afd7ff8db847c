"""Which way the operator commands go: the admin API when it would answer them, else PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler_daemon.operation import control
from scheduler_daemon.specs import load_config
from tests.helpers import ENV, write_config


@pytest.mark.parametrize(
    ("listen", "token", "extra", "backend"),
    [
        ("127.0.0.1:9", "${ADMIN_TOKEN}", "", control.ApiBackend),
        ("127.0.0.1:9", None, "", control.DbBackend),  # its reads would be refused
        ("127.0.0.1:9", None, "  open_reads: true\n", control.ApiBackend),
        ("./admin.sock", None, "", control.ApiBackend),
        (None, None, "", control.DbBackend),
    ],
)
async def test_the_cli_asks_the_api_only_when_it_would_answer(
    tmp_path: Path, database_url: str, listen: str | None, token: str | None, extra: str,
    backend: type,
) -> None:  # fmt: skip
    path = tmp_path / "config.yaml"
    write_config(path, database_url, "http://127.0.0.1:9", listen=listen, token=token)
    if extra:
        path.write_text(path.read_text().replace("admin:\n", "admin:\n" + extra, 1))
    async with control.connect(load_config(path, environ=ENV)) as chosen:
        assert isinstance(chosen, backend)
