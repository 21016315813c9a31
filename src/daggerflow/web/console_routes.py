"""The handlers of the console's reads: ``/api/v1/listeners``, ``/api/v1/timers``,
``/api/v1/overview``, ``/api/v1/workers`` and ``/api/v1/templates/{name}/node-counts``.

Each decodes its query into a ``web.schemas_console`` struct (an unknown name or a bad value
is a 400) and calls the engine's read (``daggerflow.console_reads``), which on Kafka asks
every worker and merges the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from .errors import JSONResponse
from .inputs import decode_query
from .schemas import NoQuery
from .schemas_console import (
    ListenerPage,
    ListenersQuery,
    NodeCounts,
    NodeCountsQuery,
    Overview,
    TimerPage,
    TimersQuery,
    Workers,
)

if TYPE_CHECKING:
    from .api import EngineAPI


def _next(offset: int, shown: int, total: int) -> int | None:
    end = offset + shown
    return end if end < total else None


async def listeners(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ListenersQuery)
    part = await engine.list_listeners(topic=q.topic, template=q.template, limit=q.limit, offset=q.offset)
    return JSONResponse(ListenerPage(items=part.items, total=part.total, limit=q.limit, offset=q.offset,
                                     next_offset=_next(q.offset, len(part.items), part.total),
                                     topics=part.topics))  # fmt: skip


async def timers(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, TimersQuery)
    part = await engine.list_timers(overdue=q.overdue, limit=q.limit, offset=q.offset)
    return JSONResponse(TimerPage(items=part.items, total=part.total, limit=q.limit, offset=q.offset,
                                  next_offset=_next(q.offset, len(part.items), part.total)))  # fmt: skip


async def overview(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    o = await engine.overview()
    return JSONResponse(Overview(
        at=o.at, counts=o.counts, failed_last_hour=o.failed_last_hour, listeners_open=o.listeners_open,
        oldest_listeners=o.oldest_listeners, timers_overdue=o.timers_overdue, oldest_overdue=o.oldest_overdue,
        throughput=o.throughput, workers=o.workers,
    ))  # fmt: skip


async def workers(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    found, partitions = await engine.workers()
    return JSONResponse(Workers(workers=found, partitions=partitions))


async def node_counts(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, NodeCountsQuery)
    name: str = request.path_params["name"]
    part = await engine.node_counts(name, version=q.version, limit=q.limit)
    return JSONResponse(NodeCounts(template=name, version=q.version, scanned=part.scanned,
                                   truncated=part.truncated, nodes=part.nodes))  # fmt: skip
