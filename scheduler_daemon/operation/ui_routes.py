"""The status page's sub-application: every /ui/ route, behind its gate (ui_pages.Ui.gate).

admin.build_app mounts it under /ui/ on the admin listener.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from scheduler_daemon.operation import ui_detail, ui_pages
from scheduler_daemon.operation.api_handlers import Api

PREFIX = ui_pages.PREFIX


def build(api: Api, header_check: Callable[[web.Request, str], bool]) -> web.Application:
    """``header_check``: the API's own test of the token in Authorization or X-API-Key."""
    ui = ui_pages.Ui(api, header_check)
    app = web.Application(middlewares=[ui.gate])
    ui_pages.install(app, ui)
    ui_detail.install(app, ui)
    return app
