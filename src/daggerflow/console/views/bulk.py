"""Bulk actions from the instances list and their jobs.

"Stop all matching" / "Retry all matching" on the list lead to ``/bulk/new`` with the list's
filters: it shows how many instances match now (a dry run of ``POST /api/v1/instances/bulk``) and
only its confirmation starts the job; the browser then goes to the job's page, whose progress is
live (``GET /api/v1/bulk/{job}``). ``/bulk`` lists the recent jobs (``GET /api/v1/bulk``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..client import ApiError
from ..session import Session, check_csrf, read_form
from .common import console_of, form_text, fragment, live, page, session, set_notice, url
from .instances import Listing, read_listing

ACTIONS = {"stop": "Stop", "retry": "Retry"}
#: Who the instances' history names for a bulk action started here.
ACTOR = "console"
JOBS = 50


def _action(raw: str) -> str:
    if raw not in ACTIONS:
        raise ApiError(400, f"a bulk action is stop or retry, not {raw!r}")
    return raw


def _listing(request: Request) -> Listing:
    listing = read_listing(request.query_params, console_of(request).settings.clock())
    if listing.error:
        raise ApiError(400, listing.error)
    if listing.instance_id:
        raise ApiError(400, "a bulk action applies to a filter, not to one instance id: use the instance's page")
    return listing


def _request(action: str, listing: Listing, dry_run: bool) -> dict[str, Any]:
    return {"action": action, "filter": dict(listing.api_filters()), "dry_run": dry_run}


async def new(request: Request) -> Response:
    """The confirmation: what will be done to how many instances (a dry run), then a button."""
    s = await session(request)
    action = _action(request.query_params.get("action", ""))
    listing = _listing(request)
    answer = await s.api.post("/api/v1/instances/bulk", _request(action, listing, True), {"actor": ACTOR})
    context = {"action": action, "verb": ACTIONS[action], "listing": listing, "matched": answer["matched"],
               "nav": "instances"}  # fmt: skip
    return await page(request, "bulk_new.html", context)


async def start(request: Request) -> Response:
    """Start the job the confirmation page showed (its filters are in this URL too)."""
    await check_csrf(request)
    s = await session(request)
    form = await read_form(request)
    action = _action(form_text(form, "action"))
    listing = _listing(request)
    try:
        answer = await s.api.post("/api/v1/instances/bulk", _request(action, listing, False), {"actor": ACTOR})
    except ApiError as exc:
        back = RedirectResponse(url(request, "/instances?" + listing.query(limit=None, offset=None)), 303)
        set_notice(request, back, "error", exc.message)
        return back
    job = answer.get("job")
    if not job:  # nothing matched by the time it started: no job was made
        back = RedirectResponse(url(request, "/instances?" + listing.query(limit=None, offset=None)), 303)
        set_notice(request, back, "ok", "No instance matched any more: nothing to do.")
        return back
    response = RedirectResponse(url(request, "/bulk/" + quote(job, safe="")), status_code=303)
    set_notice(request, response, "ok", f"{ACTIONS[action]} of {answer['matched']} instances started.")
    return response


async def _jobs(s: Session) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = await s.api.get("/api/v1/bulk", {"limit": JOBS})
    return jobs


async def jobs(request: Request) -> Response:
    s = await session(request)
    return await page(request, "bulk.html", {"jobs": await _jobs(s), "nav": "bulk"})


async def jobs_live(request: Request) -> Response:
    s = await session(request)

    async def parts() -> dict[str, str]:
        return {"jobs": fragment(request, "_bulk_jobs.html", {"jobs": await _jobs(s)}, s)}

    return live(request, parts)


async def _job(s: Session, job: str) -> dict[str, Any]:
    info: dict[str, Any] = await s.api.get("/api/v1/bulk/" + quote(job, safe=""))
    return info


async def job(request: Request) -> Response:
    s = await session(request)
    return await page(request, "bulk_job.html", {"job": await _job(s, request.path_params["job"]), "nav": "bulk"})


async def job_live(request: Request) -> Response:
    s = await session(request)
    name = request.path_params["job"]

    async def parts() -> dict[str, str]:
        return {"job": fragment(request, "_bulk_job.html", {"job": await _job(s, name)}, s)}

    return live(request, parts)


ROUTES = [
    Route("/bulk", jobs, methods=["GET"]),
    Route("/bulk", start, methods=["POST"]),
    Route("/bulk/new", new, methods=["GET"]),
    Route("/live/bulk", jobs_live, methods=["GET"]),
    Route("/live/bulk/{job}", job_live, methods=["GET"]),
    Route("/bulk/{job}", job, methods=["GET"]),
]
