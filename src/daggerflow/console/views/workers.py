"""Workers: each worker that answered (its partitions and counters) and, on Kafka, the owner
of each partition with a warning for those whose owner did not answer; live.

Everything comes from ``GET /api/v1/workers`` (on Kafka it asks every worker that owns a
partition)."""

from __future__ import annotations

import itertools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..session import Session
from .common import fragment, live, page, session

#: A partition's state as a status badge (class, words).
STATE_BADGES = {
    "active": ("done", "active"),
    "moving": ("waiting", "moving"),
    "no_answer": ("failed", "owner not answering"),
    "unowned": ("idle", "no owner yet"),
}


def ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0\u20132, 5, 7\u20138"`` (en dashes); ``"none"`` for none."""
    out = []
    # Consecutive numbers have the same difference to their index in the sorted list.
    for _, run in itertools.groupby(enumerate(sorted(numbers)), lambda item: item[1] - item[0]):
        first, *rest = (n for _, n in run)
        out.append(f"{first}\u2013{rest[-1]}" if rest else f"{first}")
    return ", ".join(out) or "none"


def behind(lag: dict[str, int]) -> list[tuple[str, int]]:
    """The topics a worker has messages left to read on, by name."""
    return sorted((topic, n) for topic, n in lag.items() if n > 0)


def troubled(partitions: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The partitions no owner that answered processes now (Kafka; none embedded)."""
    return [p for p in partitions or [] if p["state"] != "active"]


async def _context(s: Session) -> dict[str, Any]:
    answer = await s.api.get("/api/v1/workers")
    partitions: list[dict[str, Any]] | None = answer["partitions"]
    return {"workers": answer["workers"], "partitions": partitions, "troubled": troubled(partitions),
            "STATE_BADGES": STATE_BADGES, "ranges": ranges, "behind": behind}  # fmt: skip


async def workers(request: Request) -> Response:
    s = await session(request)
    return await page(request, "workers.html", {**await _context(s), "nav": "workers"})


async def workers_live(request: Request) -> Response:
    s = await session(request)

    async def parts() -> dict[str, str]:
        return {"workers": fragment(request, "_workers_body.html", await _context(s), s)}

    return live(request, parts)


ROUTES = [
    Route("/workers", workers, methods=["GET"]),
    Route("/live/workers", workers_live, methods=["GET"]),
]
