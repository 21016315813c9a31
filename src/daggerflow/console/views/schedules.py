"""Schedules: each one's next fire times, last tick and its instance; pause and resume."""

from __future__ import annotations

from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..session import Session
from .common import act, fragment, live, page, session


async def _rows(s: Session) -> list[dict[str, object]]:
    answer = await s.api.get("/api/v1/schedules")
    items: list[dict[str, object]] = answer["items"]
    return items


async def schedules(request: Request) -> Response:
    s = await session(request)
    return await page(request, "schedules.html", {"schedules": await _rows(s), "nav": "schedules"})


async def schedules_live(request: Request) -> Response:
    s = await session(request)

    async def parts() -> dict[str, str]:
        return {"schedules": fragment(request, "_schedules_table.html", {"schedules": await _rows(s)}, s)}

    return live(request, parts)


#: What the page says after each switch.
_DONE = {
    "pause": "Schedule {name} paused: it fires no instance until it is resumed.",
    "resume": "Schedule {name} resumed.",
}


async def switch(request: Request) -> Response:
    """Pause or resume a schedule: the last part of the path is the verb."""
    name, verb = request.path_params["name"], request.url.path.rsplit("/", 1)[1]

    async def run(s: Session, form: FormData) -> str:
        await s.api.post(f"/api/v1/schedules/{quote(name, safe='')}/{verb}")
        return _DONE[verb].format(name=name)

    return await act(request, run, "/schedules")


ROUTES = [
    Route("/schedules", schedules, methods=["GET"]),
    Route("/live/schedules", schedules_live, methods=["GET"]),
    *(Route(f"/schedules/{{name}}/{verb}", switch, methods=["POST"]) for verb in _DONE),
]
