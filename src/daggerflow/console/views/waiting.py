"""Waiting: every open listener grouped by topic (counts per topic, then each topic's listeners
oldest first, paged per topic), live; and, where the worker allows test messages
(``whoami.test_messages``) and the token is admin, a form per topic that posts a message through
``POST /topics/{name}/messages``, prefilled to match a waiting listener."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..client import ApiError
from ..render import dom_id
from ..session import Session
from .common import act, form_text, fragment, live, page, session
from .instances import BadPaging, _int

#: Listeners shown per topic and page.
PAGE = 20


@dataclass
class Group:
    topic: str
    count: int
    items: list[dict[str, Any]]
    offset: int
    next_offset: int | None

    @property
    def prev_offset(self) -> int:
        return max(self.offset - PAGE, 0)

    def prefill(self) -> str:
        """The test message's value: the oldest listener's correlatable key and value."""
        return self.message_for(self.items[0]) if self.items else "{}"

    @staticmethod
    def message_for(listener: dict[str, Any]) -> str:
        """A value that the listener's correlation would match (its key holding its value)."""
        return json.dumps({listener["key"]: listener["value"]})


def _offsets(request: Request) -> tuple[str, int]:
    """The topic being paged (``?topic=``) and its offset; other topics show their first page."""
    topic = request.query_params.get("topic", "")
    try:
        return topic, _int(request.query_params.get("offset"), 0, 0, 10**9, "offset")
    except BadPaging:
        return topic, 0


async def groups(s: Session, paged: str, offset: int) -> list[Group]:
    summary = await s.api.get("/api/v1/listeners", {"limit": 1})
    out: list[Group] = []
    for entry in summary["topics"]:
        topic = entry["topic"]
        at = offset if topic == paged else 0
        answer = await s.api.get("/api/v1/listeners", {"topic": topic, "limit": PAGE, "offset": at})
        out.append(Group(topic, int(entry["count"]), answer["items"], at, answer["next_offset"]))
    return out


async def waiting(request: Request) -> Response:
    s = await session(request)
    paged, offset = _offsets(request)
    context = {"groups": await groups(s, paged, offset), "nav": "waiting"}
    return await page(request, "waiting.html", context)


async def waiting_live(request: Request) -> Response:
    s = await session(request)
    paged, offset = _offsets(request)

    async def parts() -> dict[str, str]:
        found = await groups(s, paged, offset)
        out = {"summary": fragment(request, "_waiting_summary.html", {"groups": found}, s)}
        for group in found:
            out["rows-" + dom_id(group.topic)] = fragment(request, "_waiting_rows.html", {"g": group}, s)
        return out

    return live(request, parts)


async def send(request: Request) -> Response:
    topic = request.path_params["topic"]

    async def run(s: Session, form: FormData) -> str:
        raw = form_text(form, "value")
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the value is not JSON: {exc}") from None
        body: dict[str, Any] = {"value": value}
        key = form_text(form, "key")
        if key:
            body["key"] = key
        answer = await s.api.post(f"/topics/{quote(topic, safe='')}/messages", body)
        return f"Test message sent to {topic} at offset {answer['offset']}."

    return await act(request, run, "/waiting?" + urlencode({"topic": topic}))


ROUTES = [
    Route("/waiting", waiting, methods=["GET"]),
    Route("/live/waiting", waiting_live, methods=["GET"]),
    Route("/waiting/{topic}/send", send, methods=["POST"]),
]
