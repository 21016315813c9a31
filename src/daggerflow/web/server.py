"""Runs the REST API with uvicorn inside the engine's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from ..errors import ConfigurationError
from ..logs import uvicorn_options
from .app import create_app

if TYPE_CHECKING:
    from .api import EngineAPI


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the engine owns SIGINT/SIGTERM and drains."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    def __init__(self, engine: EngineAPI, host: str, port: int) -> None:
        config = uvicorn.Config(create_app(engine), host=host, port=port, lifespan="off", **uvicorn_options())
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.url: str | None = None
        self.host = host
        self.port = port

    async def start(self) -> None:
        # Bind here rather than in uvicorn, which calls sys.exit() when the port is taken.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"cannot serve the REST API on {self.host}:{self.port}: {exc.strerror or exc} "
                "(web_port=0 picks a free port; web_port=None turns the API off)"
            ) from exc
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="daggerflow-web")
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
