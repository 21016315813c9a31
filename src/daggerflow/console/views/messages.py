"""Messages: a topic's newest messages (live), one message with what became of it, and the
dead letters with a replay action. A client of ``GET /api/v1/messages``,
``GET /api/v1/messages/{topic}/{offset}``, ``GET /api/v1/dead-letters`` and
``POST /api/v1/dead-letters/{offset}/replay``.

The topics offered are the worker's (``GET /topics``, on Kafka the application's topics) and
the dead-letter topic; a topic that is not in the list can still be typed in the box."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..client import ApiError
from ..session import Session
from .common import act, fragment, live, page, session
from .instances import BadPaging, _int

#: Messages or dead letters per page.
PAGE = 50

#: What each verdict of ``explainMessage`` is called on the page, and its ``status-*`` class.
VERDICTS: dict[str, tuple[str, str]] = {
    "matched": ("Matched", "done"),
    "dead_lettered": ("Dead-lettered", "failed"),
    "parse_error": ("Parse error", "failed"),
    "unread": ("Not read yet", "running"),
    "duplicate": ("Duplicate", "waiting"),
    "key_mismatch": ("Key mismatch", "waiting"),
    "no_waiter": ("No waiter", "waiting"),
    "agent": ("Read by an agent", "done"),
    "not_read": ("Not read", "idle"),
    "letter": ("Dead letter", "failed"),
}


@dataclass
class Listing:
    """A page of messages (or dead letters) and where it is."""

    topic: str = ""
    partition: int | None = None
    before: int | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    next_before: int | None = None
    total: int | None = None
    error: str | None = None
    #: Whether the page's URL names the topic (the dead letters' page has one topic).
    topic_in_url: bool = True

    def query(self, **changes: Any) -> str:
        topic = self.topic if self.topic_in_url and self.topic else None
        values = {"topic": topic, "partition": self.partition, "before": self.before} | changes
        return urlencode({k: v for k, v in values.items() if v is not None})


def message_path(topic: str, offset: int, partition: int | None) -> str:
    """The console's page of one message."""
    tail = "" if partition is None else "?" + urlencode({"partition": partition})
    return f"/messages/{quote(topic, safe='')}/{offset}{tail}"


def _paging(partition: int | None, before: int | None) -> dict[str, int]:
    """The API's paging parameters that are set."""
    return {k: v for k, v in (("partition", partition), ("before", before)) if v is not None}


def _where(request: Request) -> tuple[int | None, int | None, str | None]:
    """(partition, before) of the query, or the problem with them."""
    try:
        raw = request.query_params.get("partition")
        partition = None if raw in (None, "") else _int(raw, 0, 0, 2**31 - 1, "partition")
        raw = request.query_params.get("before")
        before = None if raw in (None, "") else _int(raw, 0, 0, 2**63 - 1, "before")
    except BadPaging as exc:
        return None, None, str(exc)
    return partition, before, None


async def topics(s: Session) -> list[str]:
    names: set[str] = set(await s.api.get("/topics"))
    names.add((await s.api.get("/api/v1/dead-letters", {"limit": 1}))["topic"])
    return sorted(names)


async def read_messages(s: Session, request: Request) -> Listing:
    partition, before, problem = _where(request)
    listing = Listing(topic=request.query_params.get("topic", "").strip(), partition=partition, before=before,
                      error=problem)  # fmt: skip
    if not listing.topic or problem:
        return listing
    params: dict[str, Any] = {"topic": listing.topic, "limit": PAGE, **_paging(partition, before)}
    try:
        answer = await s.api.get("/api/v1/messages", params)
    except ApiError as exc:
        if exc.status not in (400, 404, 422):
            raise
        listing.error = exc.message
        return listing
    listing.items, listing.next_before = answer["items"], answer["next_before"]
    return listing


async def messages(request: Request) -> Response:
    s = await session(request)
    listing = await read_messages(s, request)
    context = {"listing": listing, "topics": await topics(s), "nav": "messages"}
    return await page(request, "messages.html", context)


async def messages_live(request: Request) -> Response:
    s = await session(request)

    async def parts() -> dict[str, str]:
        listing = await read_messages(s, request)
        return {"rows": fragment(request, "_messages_rows.html", {"listing": listing}, s)}

    return live(request, parts)


async def message(request: Request) -> Response:
    s = await session(request)
    topic, offset = request.path_params["topic"], request.path_params["offset"]
    partition, _, problem = _where(request)
    params = {} if partition is None else {"partition": partition}
    explained: dict[str, Any] | None = None
    error = problem
    if error is None:
        try:
            explained = await s.api.get(f"/api/v1/messages/{quote(topic, safe='')}/{offset}", params)
        except ApiError as exc:
            if exc.status not in (400, 404, 422):
                raise
            error = exc.message
    context = {"topic": topic, "offset": offset, "partition": partition, "e": explained, "error": error,
               "verdicts": VERDICTS, "nav": "messages"}  # fmt: skip
    return await page(request, "message.html", context, status=200 if error is None else 404)


async def read_letters(s: Session, request: Request) -> Listing:
    partition, before, problem = _where(request)
    listing = Listing(partition=partition, before=before, error=problem, topic_in_url=False)
    if problem:
        return listing
    params: dict[str, Any] = {"limit": PAGE, **_paging(partition, before)}
    answer = await s.api.get("/api/v1/dead-letters", params)
    listing.topic, listing.items = answer["topic"], answer["items"]
    listing.next_before, listing.total = answer["next_before"], answer["total"]
    return listing


async def dead_letters(request: Request) -> Response:
    s = await session(request)
    context = {"listing": await read_letters(s, request), "nav": "messages"}
    return await page(request, "dead_letters.html", context)


async def dead_letters_live(request: Request) -> Response:
    s = await session(request)

    async def parts() -> dict[str, str]:
        listing = await read_letters(s, request)
        return {"rows": fragment(request, "_dead_letters_rows.html", {"listing": listing}, s)}

    return live(request, parts)


async def replay(request: Request) -> Response:
    offset = request.path_params["offset"]
    partition, _, _ = _where(request)

    async def run(s: Session, form: FormData) -> str:
        params = {"actor": "console"} | ({} if partition is None else {"partition": str(partition)})
        answer = await s.api.post(f"/api/v1/dead-letters/{offset}/replay", None, params=params)
        return f"Dead letter {answer['dead_letter']} replayed to {answer['topic']} at offset {answer['offset']}."

    return await act(request, run, "/dead-letters")


ROUTES = [
    Route("/messages", messages, methods=["GET"]),
    Route("/live/messages", messages_live, methods=["GET"]),
    Route("/messages/{topic}/{offset:int}", message, methods=["GET"]),
    Route("/dead-letters", dead_letters, methods=["GET"]),
    Route("/live/dead-letters", dead_letters_live, methods=["GET"]),
    Route("/dead-letters/{offset:int}/replay", replay, methods=["POST"]),
]
