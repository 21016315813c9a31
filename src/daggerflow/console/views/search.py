"""The top bar's search box: one string, decided in this order — an instance id that exists (its
page), ``topic:offset`` or ``topic:partition:offset`` on a known topic (that message's page), else
a correlation value (the list filtered by it). When the string could also have meant something
else, the target page says what the box matched and links the other reading."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..client import ApiError
from ..session import Session
from .common import session, set_notice, url


async def _instance_exists(s: Session, q: str) -> bool:
    try:
        await s.api.get("/api/v1/instances/" + quote(q, safe=""))
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def _topics(s: Session) -> set[str]:
    topics: set[str] = set(await s.api.get("/topics"))
    listeners = await s.api.get("/api/v1/listeners", {"limit": 1})
    topics.update(t["topic"] for t in listeners["topics"])
    return topics


def message_ref(q: str) -> tuple[str, int | None, int] | None:
    """``topic:offset`` / ``topic:partition:offset`` -> (topic, partition, offset); a topic name may
    itself hold colons, so the numbers are read from the right."""
    parts = q.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and parts[0]:
        return parts[0], int(parts[1]), int(parts[2])
    head, _, tail = q.rpartition(":")
    if head and tail.isdigit():
        return head, None, int(tail)
    return None


async def _correlated(s: Session, q: str) -> int:
    total: int = (await s.api.get("/api/v1/instances", {"correlation": q, "limit": 1}))["total"]
    return total


async def search(request: Request) -> Response:
    s = await session(request)
    q = request.query_params.get("q", "").strip()
    if not q:
        return RedirectResponse(url(request, "/instances"), status_code=303)
    by_correlation = url(request, "/instances") + "?" + urlencode({"correlation": q})
    if await _instance_exists(s, q):
        response = RedirectResponse(url(request, "/instances/" + quote(q, safe="")), status_code=303)
        also = await _correlated(s, q)
        if also:
            set_notice(request, response, "ok", f"Search “{q}” matched this instance's id; it is also the correlation "
                       f"value of {also} waiting instance{'s' if also != 1 else ''} (Instances, correlation={q}).")  # fmt: skip
        return response
    ref = message_ref(q)
    if ref is not None and ref[0] in await _topics(s):
        topic, partition, offset = ref
        target = f"/messages/{quote(topic, safe='')}/{offset}"
        if partition is not None:
            target += f"?partition={partition}"
        response = RedirectResponse(url(request, target), status_code=303)
        if await _correlated(s, q):
            set_notice(request, response, "ok", f"Search “{q}” matched topic {topic}, offset {offset}; it is also a "
                       f"correlation value (Instances, correlation={q}).")  # fmt: skip
        return response
    note = f"Search “{q}”: no instance has that id"
    note += f" and no topic is named {ref[0]}" if ref is not None else ""
    note += "; showing the instances waiting with it as their correlation value."
    response = RedirectResponse(by_correlation, status_code=303)
    set_notice(request, response, "ok", note)
    return response


ROUTES = [Route("/search", search, methods=["GET"])]
