"""The instances list: filters in the URL (each one a query parameter of ``GET /api/v1/instances``),
pages newest first, live.

The first page follows the store live: new instances appear at the top and statuses change in
place. A later page is pinned to the instances created before it was opened (its offsets would
shift under the reader otherwise) and says how many arrived since, with a link to the first page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..client import ApiError
from ..session import Session
from .common import console_of, fragment, live, page, session, url

#: The list API's plain filters, in the order the form shows them.
FILTERS = (
    "status", "template", "version", "created_after", "created_before", "updated_after", "waiting_on", "correlation",
)  # fmt: skip
STATUSES = ("NOT_STARTED", "SUBMITTED", "EXECUTING", "COMPLETED", "FAILURE", "SKIPPED", "STOPPED")
PARAM = "param."
#: Rows per page unless ``?limit=`` says otherwise (the API allows at most 1000).
PAGE = 50
MAX_PAGE = 1000


@dataclass
class Listing:
    """One page of the list as the templates show it."""

    filters: dict[str, str]
    params: list[tuple[str, str]]
    instance_id: str
    limit: int
    offset: int
    opened: float
    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    next_offset: int | None = None
    error: str = ""
    error_filter: str = ""
    new_since: int = 0

    def api_filters(self) -> list[tuple[str, str]]:
        """The filters as the API (and ``BulkRequest.filter``) spells them."""
        return [*self.filters.items(), *((PARAM + k, v) for k, v in self.params)]

    def query(self, **changes: Any) -> str:
        """This page's URL query with ``changes`` (``None`` drops a key), for links."""
        items: list[tuple[str, Any]] = self.api_filters()
        if self.instance_id:
            items.append(("id", self.instance_id))
        paging = {"limit": self.limit if self.limit != PAGE else None, "offset": self.offset or None}
        paging.update(changes)
        items.extend((k, v) for k, v in paging.items() if v is not None)
        return urlencode(items)

    @property
    def filtered(self) -> bool:
        return bool(self.filters or self.params or self.instance_id)


class BadPaging(ValueError):
    pass


def _int(raw: str | None, default: int, low: int, high: int, name: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadPaging(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise BadPaging(f"{name} must be between {low} and {high}")
    return value


def read_listing(query: QueryParams, now: float) -> Listing:
    filters = {k: query[k].strip() for k in FILTERS if query.get(k, "").strip()}
    params = [(k[len(PARAM):], v) for k, v in query.multi_items() if k.startswith(PARAM) and k != PARAM]
    # The form's repeatable name/value pair (pn, pv) is folded into param.NAME by ``instances``.
    listing = Listing(filters, params, query.get("id", "").strip(), PAGE, 0, now)
    try:
        listing.limit = _int(query.get("limit"), PAGE, 1, MAX_PAGE, "limit")
        listing.offset = _int(query.get("offset"), 0, 0, 10**9, "offset")
        listing.opened = float(query.get("opened") or now)
    except (BadPaging, ValueError) as exc:
        listing.error = str(exc)
    return listing


async def fill(s: Session, listing: Listing, *, pin: bool) -> None:
    """Read the page from the API. ``pin``: only instances created before the page was opened."""
    if listing.error:
        return
    try:
        if listing.instance_id:
            await _one(s, listing)
            return
        params = [*listing.api_filters(), ("limit", str(listing.limit)), ("offset", str(listing.offset))]
        # A user's own created_before already holds the set still; otherwise pin it to the opening.
        pin = pin and "created_before" not in listing.filters
        if pin:
            params.append(("created_before", repr(listing.opened)))
        answer = await s.api.get("/api/v1/instances", params)
        listing.items, listing.total, listing.next_offset = answer["items"], answer["total"], answer["next_offset"]
        if pin:
            newer = [p for p in listing.api_filters() if p[0] != "created_after"]
            newer += [("created_after", repr(listing.opened)), ("limit", "1")]
            listing.new_since = (await s.api.get("/api/v1/instances", newer))["total"]
    except ApiError as exc:
        if exc.status != 400:
            raise
        body = exc.body if isinstance(exc.body, dict) else {}
        listing.error, listing.error_filter = exc.message, str(body.get("filter", ""))


async def _one(s: Session, listing: Listing) -> None:
    try:
        item = await s.api.get("/api/v1/instances/" + quote(listing.instance_id, safe=""))
    except ApiError as exc:
        if exc.status == 404:
            return
        raise
    listing.items = [{
        "id": item["id"], "template_name": item.get("task_name", ""), "status": item["status"],
        "time_created": item.get("time_created", 0.0), "time_completed": item.get("time_completed", 0.0),
        "lastupdated": item.get("lastupdated", item.get("time_submitted", 0.0)),
    }]  # fmt: skip
    listing.total = 1


async def instances(request: Request) -> Response:
    query = request.query_params
    if "pn" in query:
        return _fold_pairs(request, query)
    s = await session(request)
    listing = read_listing(query, console_of(request).settings.clock())
    await fill(s, listing, pin=False)
    context = {"listing": listing, "statuses": STATUSES, "nav": "instances"}
    return await page(request, "instances.html", context)


def _fold_pairs(request: Request, query: QueryParams) -> Response:
    """The filter form's parameter pairs (``pn``/``pv``, repeatable) -> ``param.NAME=VALUE``, so the
    URL holds the filter as the API spells it; empty fields are dropped (an empty filter is none)."""
    items = [(k, v) for k, v in query.multi_items() if k not in ("pn", "pv") and v.strip()]
    names, values = query.getlist("pn"), query.getlist("pv")
    items += [(PARAM + n.strip(), v) for n, v in zip(names, values, strict=False) if n.strip()]
    return RedirectResponse(url(request, "/instances") + ("?" + urlencode(items) if items else ""), status_code=303)


async def instances_live(request: Request) -> Response:
    s = await session(request)
    query = request.query_params

    async def parts() -> dict[str, str]:
        listing = read_listing(query, console_of(request).settings.clock())
        await fill(s, listing, pin=listing.offset > 0)
        context = {"listing": listing}
        return {
            "rows": fragment(request, "_instances_table.html", context, s),
            "summary": fragment(request, "_instances_summary.html", context, s),
        }

    return live(request, parts)


ROUTES = [
    Route("/instances", instances, methods=["GET"]),
    Route("/live/instances", instances_live, methods=["GET"]),
]
