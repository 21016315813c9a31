"""Runs the REST API with uvicorn inside the engine's event loop.

With API tokens the application is wrapped in ``auth.TokenAuth``; with a certificate and key
uvicorn serves https. Exposing the API beyond loopback without either is logged loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from ..errors import ConfigurationError
from ..logs import uvicorn_options
from .app import create_app
from .auth import TOKEN_ENV, TokenAuth, WebSecurity, is_loopback

if TYPE_CHECKING:
    from .api import EngineAPI

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the engine owns SIGINT/SIGTERM and drains."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def worker_app(engine: EngineAPI, security: WebSecurity, *, console: bool = True, refresh: float = 1.0) -> Any:
    """A worker's ASGI application: the REST API behind its token check, and the console at
    ``/ui``, which reaches that same API in-process (so it passes the same check)."""
    api: Any = create_app(engine)
    if security.tokens:
        api = TokenAuth(api, security.tokens, metrics_public=security.metrics_public)
    if not console:
        return api
    from ..console.app import ConsoleSettings, create_console, with_console
    from ..console.client import Target

    settings = ConsoleSettings(secure_cookies=security.tls, live_interval=refresh)
    return with_console(create_console(Target(app=api), settings), api)


class WebServer:
    """uvicorn serving ``app`` on ``host:port`` inside the running event loop."""

    def __init__(
        self, app: Any, host: str, port: int, security: WebSecurity | None = None, *, warn_exposed: bool = True
    ) -> None:
        self.security = security or WebSecurity()
        self.warn_exposed = warn_exposed
        self.app = app
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            ssl_certfile=self.security.certfile,
            ssl_keyfile=self.security.keyfile,
            **uvicorn_options(),
        )
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.url: str | None = None
        self.host = host
        self.port = port

    async def start(self) -> None:
        # Bind here rather than in uvicorn, which calls sys.exit() when the port is taken.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets whose proto says TCP, and
        # with Nagle on, each answer on a kept-alive connection waited ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        self.url = f"{'https' if self.security.tls else 'http'}://{self.host}:{port}"
        if self.warn_exposed:
            self._warn_if_exposed(port)

    def _warn_if_exposed(self, port: int) -> None:
        if is_loopback(self.host):
            return
        where = f"{self.host}:{port}"
        if not self.security.tokens:
            log.warning(
                "THE REST API ON %s IS OPEN TO ANYONE WHO CAN REACH THIS ADDRESS: no API token is set, so "
                "any client can create, stop and read workflows. Set api_token=... (or --api-token, or "
                "$%s), or bind web_host to 127.0.0.1",
                where, TOKEN_ENV,
            )  # fmt: skip
        elif not self.security.tls:
            log.warning(
                "the REST API on %s requires API tokens but serves plain http: tokens travel in clear "
                "text; set web_tls_certfile and web_tls_keyfile (--web-tls-cert/--web-tls-key), or "
                "terminate TLS in front of it",
                where,
            )

    async def stop(self) -> None:
        # An application with long-lived answers (the console's live streams) ends them
        # first: uvicorn waits for open answers before it stops.
        close = getattr(self.app, "close", None)
        if callable(close):
            close()
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
