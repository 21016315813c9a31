"""The dashboard: counts by template and status (each a link to the filtered list), failures in
the last hour, the oldest waiting listeners, overdue timers, dead letters, and throughput, live.

Everything comes from ``GET /api/v1/overview`` (one read; on Kafka it covers every worker),
``GET /api/v1/workers`` (on Kafka: a warning when a partition has no owner that answers) and, if
the worker has it, ``GET /api/v1/dead-letters?limit=1`` (its ``total``). Throughput is the rate of
the overview's counters between two samples of the live stream: the first render has one sample
only, so it says that it is measuring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..client import ApiError
from ..session import Session
from .common import fragment, live, page, session
from .instances import STATUSES
from .workers import ranges, troubled

#: The counters whose rate the dashboard shows, as the overview's ``throughput`` names them.
RATES = ("created", "completed", "failed")
HOUR = 3600.0


@dataclass(frozen=True)
class Matrix:
    """Counts as a table: one row per template, one column per status that has any."""

    templates: list[str]
    statuses: list[str]
    cells: dict[tuple[str, str], int]
    by_status: dict[str, int]
    by_template: dict[str, int]
    total: int


def matrix(counts: list[dict[str, Any]]) -> Matrix:
    cells = {(c["template"], c["status"]): int(c["count"]) for c in counts if c["count"]}
    templates = sorted({t for t, _ in cells})
    present = {s for _, s in cells}
    statuses = [s for s in STATUSES if s in present] + sorted(present - set(STATUSES))
    by_status = {s: sum(n for (_, st), n in cells.items() if st == s) for s in statuses}
    by_template = {t: sum(n for (tt, _), n in cells.items() if tt == t) for t in templates}
    return Matrix(templates, statuses, cells, by_status, by_template, sum(cells.values()))


def rates(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, float] | None:
    """Per-second rates of the throughput counters between two overview samples; None without a
    previous one (or when the counters went back: a worker restarted and they began again)."""
    if previous is None:
        return None
    elapsed = float(current["at"]) - float(previous["at"])
    if elapsed <= 0:
        return None
    out: dict[str, float] = {}
    for name in RATES:
        delta = current["throughput"][name] - previous["throughput"][name]
        if delta < 0:
            return None
        out[name] = delta / elapsed
    return out


async def dead_letters(s: Session) -> dict[str, Any] | None:
    """The dead letters' count (None on Kafka, where the API cannot count them cheaply) and
    when the newest came; None where this worker has no dead-letter route (404)."""
    try:
        answer = await s.api.get("/api/v1/dead-letters", {"limit": 1})
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    total = answer.get("total")
    items = answer.get("items") or []
    return {"total": total if isinstance(total, int) else None, "newest": items[0]["timestamp"] if items else None}


async def _context(s: Session, previous: dict[str, Any] | None) -> dict[str, Any]:
    overview: dict[str, Any] = await s.api.get("/api/v1/overview")
    partitions = (await s.api.get("/api/v1/workers"))["partitions"]
    return {
        "partitions": partitions,
        "troubled": troubled(partitions),
        "ranges": ranges,
        "overview": overview,
        "matrix": matrix(overview["counts"]),
        "rates": rates(previous, overview),
        "dead_letters": await dead_letters(s),
        "failed_since": repr(round(float(overview["at"]) - HOUR, 3)),
    }


async def dashboard(request: Request) -> Response:
    s = await session(request)
    return await page(request, "dashboard.html", {**await _context(s, None), "nav": "dashboard"})


async def dashboard_live(request: Request) -> Response:
    s = await session(request)
    previous: dict[str, Any] | None = None

    async def parts() -> dict[str, str]:
        nonlocal previous
        context = await _context(s, previous)
        previous = context["overview"]
        return {
            "figures": fragment(request, "_dashboard_figures.html", context, s),
            "counts": fragment(request, "_dashboard_counts.html", context, s),
            "waiting": fragment(request, "_dashboard_waiting.html", context, s),
        }

    return live(request, parts)


ROUTES = [
    Route("/", dashboard, methods=["GET"]),
    Route("/live/dashboard", dashboard_live, methods=["GET"]),
]
