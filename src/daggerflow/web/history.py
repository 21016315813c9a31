"""The history route: ``GET /api/v1/instances/{id}/history``, a page of entries, oldest
first (on Kafka the engine reads it from the owning worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..model.history import Entry
from .errors import JSONResponse
from .inputs import decode_query
from .schemas import HistoryItem, HistoryPage, HistoryQuery, SentMessage, StatusChange

if TYPE_CHECKING:
    from .api import EngineAPI


def item(entry: Entry) -> HistoryItem:
    changes = [StatusChange(node=n, from_=a, to=b) for n, a, b in entry.changes]
    fields = msgspec.structs.asdict(entry)
    fields["changes"] = changes
    fields["sent"] = [SentMessage(topic=t, key=k, size=n, value=v) for t, k, n, v in entry.sent]
    return HistoryItem(**fields)


async def instance_history(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, HistoryQuery)
    page = await engine.history(request.path_params["id"], limit=q.limit, after=q.after)
    return JSONResponse(HistoryPage(items=[item(e) for e in page.items], next=page.next))
