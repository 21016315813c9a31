"""Live pages: a Server-Sent Events stream that re-renders a page's parts and sends the
ones that changed.

The console is a client of the REST API, which has no push channel, and on Kafka an instance
lives on whichever worker owns it; so the stream asks the API again every ``interval``
seconds, on the server, and sends a part only when its HTML differs from what the page last
received. A browser tab costs one API read per interval however often the instance changes,
and nothing when nothing changed on the wire. The htmx SSE extension swaps each named event
into the element with the same ``sse-swap`` name, and reconnects by itself after a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse

from .client import ApiError

#: A comment line every so often, so that proxies do not close an idle stream.
HEARTBEAT = 15.0

Parts = Callable[[], Awaitable[dict[str, str]]]


def event(name: str, html: str) -> str:
    """One SSE event: a multi-line value becomes several ``data:`` lines (joined by newlines
    on the other side)."""
    lines = html.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def changes(parts: Parts, interval: float, closing: asyncio.Event) -> AsyncIterator[str]:
    """The events of a page's stream until ``closing`` is set (the server stops) or the
    client goes away (the server cancels the stream)."""
    sent: dict[str, str] = {}
    last_write = time.monotonic()
    while not closing.is_set():
        try:
            current = await parts()
        except ApiError as exc:
            # The page keeps what it shows and says why it stopped changing; the next
            # round tries again (a worker restarting answers again soon).
            current = {"live-status": f"not live: {exc.message}"}
        else:
            current.setdefault("live-status", "live")
        for name, html in current.items():
            if sent.get(name) != html:
                sent[name] = html
                last_write = time.monotonic()
                yield event(name, html)
        if time.monotonic() - last_write >= HEARTBEAT:
            last_write = time.monotonic()
            yield ": keep-alive\n\n"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), timeout=interval)


def stream(parts: Parts, interval: float, closing: asyncio.Event) -> StreamingResponse:
    return StreamingResponse(
        changes(parts, interval, closing),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
