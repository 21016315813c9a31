"""The internal routes: what other workers forward reads to (``daggerflow.kafka.remote``).

They answer from this process's own partitions only, never forwarding again, with instances
as msgpack. They are not part of the public contract (``/openapi.json`` leaves them out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotOwner
from ..model.instance import encode_instance
from ..model.versions import encode_versions
from .inputs import decode_list_query, decode_query
from .schemas import (
    CountQuery,
    HistoryQuery,
    InternalBulkQuery,
    InternalListQuery,
    NoQuery,
)
from .schemas_console import InternalListenersQuery, InternalNodeCountsQuery, InternalTimersQuery
from .schemas_messages import InternalSeenQuery
from .wire import INTERNAL_HEADER, MISDIRECTED, MSGPACK

if TYPE_CHECKING:
    from .api import EngineAPI


def _internal(body: bytes, status: int = 200, media_type: str = MSGPACK) -> Response:
    """An answer of an internal route, marked as such for the forwarding side."""
    return Response(body, status_code=status, media_type=media_type, headers={INTERNAL_HEADER: "1"})


async def instance(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    iid: str = request.path_params["id"]
    try:
        found = engine.local_instance(iid)
    except NotOwner as exc:
        return _internal(str(exc).encode(), MISDIRECTED, "text/plain")
    if found is None:
        return _internal(b"", 404)
    return _internal(encode_instance(found))


async def history(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, HistoryQuery)
    iid: str = request.path_params["id"]
    try:
        page = engine.local_history(iid, after=q.after, limit=q.limit)
    except NotOwner as exc:
        return _internal(str(exc).encode(), MISDIRECTED, "text/plain")
    if page is None:
        return _internal(b"", 404)
    return _internal(msgspec.msgpack.encode(page))


async def instances(engine: EngineAPI, request: Request) -> Response:
    q, query = decode_list_query(request, InternalListQuery)
    found = engine.list_instances(query, limit=q.limit, offset=q.offset)
    return _internal(msgspec.msgpack.encode(found))


async def schedules(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return _internal(msgspec.msgpack.encode(engine.local_schedules()))


async def count(engine: EngineAPI, request: Request) -> Response:
    _, query = decode_list_query(request, CountQuery)
    total = engine.count_instances(query)
    return _internal(msgspec.json.encode({"count": total}), media_type="application/json")


async def bulk_shares(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return _internal(msgspec.msgpack.encode(engine.bulk_local_shares(request.path_params["job"])))


async def bulk_jobs(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, InternalBulkQuery)
    return _internal(msgspec.msgpack.encode(engine.bulk_jobs_local_shares(active=q.active, limit=q.limit)))


async def versions(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return _internal(encode_versions(engine.local_versions()), media_type="application/json")


# The console's reads (``daggerflow.console_reads``): this process's share of each.


async def listeners(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, InternalListenersQuery)
    return _internal(msgspec.msgpack.encode(engine.local_listeners(topic=q.topic, template=q.template, first=q.first)))


async def timers(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, InternalTimersQuery)
    return _internal(msgspec.msgpack.encode(engine.local_timers(overdue=q.overdue, first=q.first)))


async def overview(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return _internal(msgspec.msgpack.encode(engine.local_overview()))


async def worker(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return _internal(msgspec.msgpack.encode(engine.local_worker()))


async def node_counts(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, InternalNodeCountsQuery)
    found = engine.local_node_counts(
        q.template, version=q.version, limit=q.limit, created_after=q.created_after, times=q.times
    )
    return _internal(msgspec.msgpack.encode(found))


async def seen(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, InternalSeenQuery)
    return _internal(msgspec.json.encode({"seen": engine.local_seen(q.topic, q.id)}), media_type="application/json")
