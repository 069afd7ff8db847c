"""The admin API's results as data: one attempt with its result, a job's items, the history's size.

Pages of attempts leave `result` out (up to `result_max_bytes`, 1 MiB, each): GET /executions/{id}
is where one attempt's result is read. GET /jobs/{name}/items pages through `job_items` oldest
first, with the same cursor as the pages of attempts.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from scheduler_daemon.operation import api_models as m
from scheduler_daemon.operation.api_handlers import Api, cursor_of, reply
from scheduler_daemon.operation.api_models import ApiError
from scheduler_daemon.storage import history

_ID = re.compile(r"[1-9][0-9]{0,18}")
_MAX_ID = 2**63 - 1  # executions.id is a bigint


async def get_execution(api: Api, request: web.Request, query: m.Query) -> web.Response:
    execution_id = _execution_id(request)  # a malformed id is a 404 even while the database is away
    row = await history.execution(api.pool(), execution_id)
    if row is None:
        raise ApiError(404, "unknown_execution", f"no execution with id {execution_id}")
    fields = {k: v for k, v in dict(row).items() if k not in m.DETAIL_ONLY}
    body = m.Execution.model_validate(fields).model_dump_json(by_alias=True)
    # The result as PostgreSQL wrote its jsonb (valid JSON), spliced in rather than parsed and
    # written again: up to result_max_bytes of work the event loop need not do.
    text = f'{body[:-1]},"result":{row["result"] or "null"}}}'
    return web.Response(text=text, content_type="application/json")


def _execution_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if _ID.fullmatch(text) and int(text) <= _MAX_ID:
        return int(text)
    raise ApiError(404, "unknown_execution", "no such execution (execution ids are integers)")


async def job_items(api: Api, request: web.Request, query: m.ItemsQuery) -> web.Response:
    # An unknown job has no items, as a removed job's are still readable: an empty page (as
    # GET /jobs/{name}/executions), not a 404.
    cursor = cursor_of(query.cursor)  # a bad one is a 400 even while the database is away
    rows, next_cursor = await history.items(
        api.pool(), request.match_info["name"], since=query.since, after=cursor, limit=query.limit
    )
    items = [
        m.JobItem(
            fire_id=r["fire_id"],
            attempt=r["attempt"],
            scheduled_at=r["scheduled_at"],
            idx=r["idx"],
            key=r["key"],
            item=json.loads(r["item"]),
        )
        for r in rows
    ]
    return reply(m.ItemPage(items=items, next_cursor=next_cursor.encode() if next_cursor else None))


async def history_size(api: Api, request: web.Request, query: m.Query) -> web.Response:
    sizes = await history.history_size(api.pool())
    return reply(
        m.HistorySize(
            executions_bytes=sizes["executions"],
            job_items_bytes=sizes["job_items"],
            total_bytes=sum(sizes.values()),
        )
    )
