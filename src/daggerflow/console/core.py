"""The console's shared state: where the API is, how pages are rendered, its settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .client import Api, Target
from .render import Renderer


@dataclass(frozen=True)
class ConsoleSettings:
    #: Mark the cookies Secure (the console is served over https).
    secure_cookies: bool = False
    #: Seconds between two reads of a live page's data (``live``).
    live_interval: float = 1.0
    #: "Now" for the ages and the "last hour" a page shows (tests fix it).
    clock: Callable[[], float] = field(default=time.time)


class Console:
    """One console: one HTTP client to the API for all sessions (each call carries its
    session's token), the renderer, and the event that ends the live streams on shutdown."""

    def __init__(self, target: Target, settings: ConsoleSettings) -> None:
        self.target = target
        self.settings = settings
        self.renderer = Renderer(settings.clock)
        self._http: httpx.AsyncClient | None = None
        self._closing: asyncio.Event | None = None

    @property
    def closing(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    def api(self, token: str | None) -> Api:
        if self._http is None:
            self._http = self.target.client()
        return Api(self._http, token, self.target.describe())

    def close(self) -> None:
        """End every live stream now (the server is stopping: an open stream would hold it)."""
        self.closing.set()

    async def aclose(self) -> None:
        self.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
