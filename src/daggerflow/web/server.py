"""Runs the REST API with uvicorn inside the engine's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from .app import create_app

if TYPE_CHECKING:
    from ..engine import Dagger


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the engine owns SIGINT/SIGTERM and drains."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    def __init__(self, engine: Dagger, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_app(engine), host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.url: str | None = None
        self.host = host

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="daggerflow-web")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error, e.g. port in use
                raise RuntimeError("web server exited during start")
            await asyncio.sleep(0.01)
        sock = self.server.servers[0].sockets[0]
        port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
