"""The handlers of the message routes: ``/api/v1/messages`` (a topic's newest messages),
``/api/v1/messages/{topic}/{offset}`` (what became of one), ``/api/v1/dead-letters`` and
their replay. Each decodes its query strictly (an unknown name or a bad value is a 400) and
calls the engine's ``message_reads``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ..model.messages import DeadLetter, MessageItem
from .errors import ApiError, JSONResponse
from .inputs import decode_query
from .schemas import MAX_OFFSET
from .schemas_messages import (
    DeadLetterList,
    DeadLettersQuery,
    MessageList,
    MessageQuery,
    MessagesListQuery,
    Replayed,
    ReplayQuery,
)

if TYPE_CHECKING:
    from .api import EngineAPI


def _next_before(items: Sequence[MessageItem | DeadLetter], limit: int) -> int | None:
    """The ``before`` of the next page: the oldest offset shown, when the page is full and
    holds one partition (offsets of different partitions do not page together)."""
    if len(items) < limit or len({i.partition for i in items}) != 1:
        return None
    oldest = min(i.offset for i in items)
    return oldest if oldest > 0 else None


def _offset(request: Request) -> int:
    """The path's offset; a 400 (a malformed request, as a bad query is) for anything but
    ASCII digits up to ``MAX_OFFSET``."""
    text: str = request.path_params["offset"]
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_OFFSET:
        raise ApiError(f"offset must be an integer from 0 to {MAX_OFFSET}, got {text!r}")
    return int(text)


async def list_messages(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, MessagesListQuery)
    items = await engine.newest_messages(q.topic, limit=q.limit, partition=q.partition, before=q.before)
    return JSONResponse(MessageList(topic=q.topic, items=items, next_before=_next_before(items, q.limit)))


async def explain_message(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, MessageQuery)
    found = await engine.explain_message(
        request.path_params["topic"], _offset(request), partition=q.partition
    )
    return JSONResponse(found)


async def dead_letters(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, DeadLettersQuery)
    items = await engine.dead_letters(limit=q.limit, partition=q.partition, before=q.before)
    return JSONResponse(DeadLetterList(topic=engine.dead_letter_topic, items=items, total=engine.count_dead_letters(),
                                       next_before=_next_before(items, q.limit)))  # fmt: skip


async def replay(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ReplayQuery)
    offset = _offset(request)
    topic, new = await engine.replay_dead_letter(offset, partition=q.partition, actor=q.actor)
    where = engine.dead_letter_topic + ("" if q.partition is None else f":{q.partition}") + f"@{offset}"
    return JSONResponse(Replayed(topic=topic, offset=new, dead_letter=where), status_code=202)
