"""The console as an ASGI application, and its place at ``/ui`` beside the REST API.

``create_console`` builds it from the views' route lists; ``with_console`` puts it in front of
a worker's API (``/ui...`` to the console, the rest to the API); ``standalone`` is what
``daggerflow ui --url`` serves. ``ConsoleMiddleware`` gives every answer the security headers
(a strict Content-Security-Policy: scripts and styles only from the console's own static
files, so no inline script can run) and every visitor a CSRF cookie.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from .client import ApiError, Target
from .core import Console, ConsoleSettings
from .session import CSRF_COOKIE, CSRF_STATE, BadForm, CsrfRefused, LoginRequired, new_csrf_token
from .views import ROUTES

__all__ = ["ConsoleSettings", "create_console", "standalone", "with_console"]

PREFIX = "/ui"

Scope = MutableMapping[str, Any]
ASGIApp = Any

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class ConsoleApp:
    """The console's ASGI application (a Starlette app inside ``ConsoleMiddleware``)."""

    def __init__(self, console: Console, app: Starlette) -> None:
        self.console = console
        self._app = ConsoleMiddleware(app, console.settings.secure_cookies)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)

    def close(self) -> None:
        self.console.close()

    async def aclose(self) -> None:
        await self.console.aclose()


def create_console(target: Target, settings: ConsoleSettings | None = None) -> ConsoleApp:
    console = Console(target, settings or ConsoleSettings())
    routes: list[BaseRoute] = [
        *ROUTES,
        Mount("/static", StaticFiles(packages=[("daggerflow.console", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            LoginRequired: _login_required,
            CsrfRefused: _csrf_refused,
            BadForm: _bad_form,
            ApiError: _api_error,
            HTTPException: _http_error,
        },
    )
    app.router.redirect_slashes = False
    app.state.console = console
    return ConsoleApp(console, app)


class ConsoleMount:
    """``/ui`` and below to the console, everything else to ``api``; ``/`` points to the console."""

    def __init__(self, console: ConsoleApp, api: ASGIApp) -> None:
        self.console = console
        self.api = api

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            if path == PREFIX:
                await RedirectResponse(PREFIX + "/", status_code=307)(scope, receive, send)
                return
            await self.console({**scope, "root_path": scope.get("root_path", "") + PREFIX}, receive, send)
        elif scope["type"] == "http" and path == "/" and scope.get("method") in ("GET", "HEAD"):
            await RedirectResponse(PREFIX + "/", status_code=307)(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    def close(self) -> None:
        self.console.close()

    async def aclose(self) -> None:
        await self.console.aclose()


def with_console(console: ConsoleApp, api: ASGIApp) -> ConsoleMount:
    return ConsoleMount(console, api)


async def _not_found(scope: Scope, receive: Any, send: Any) -> None:
    response = Response(
        b'{"error": "not found: the console is at /ui/", "status": 404}', 404, media_type="application/json"
    )
    await response(scope, receive, send)


def standalone(target: Target, settings: ConsoleSettings | None = None) -> ConsoleMount:
    """The console alone (``daggerflow ui --url``): ``/ui`` as on a worker, nothing else."""
    return ConsoleMount(create_console(target, settings), _not_found)


class ConsoleMiddleware:
    def __init__(self, app: ASGIApp, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        presented = request.cookies.get(CSRF_COOKIE)
        fresh = presented is None or not 16 <= len(presented) <= 64
        token = new_csrf_token() if fresh or presented is None else presented
        scope.setdefault("state", {})[CSRF_STATE] = token
        cookie = _cookie(CSRF_COOKIE, token, scope.get("root_path", "") + "/", self.secure) if fresh else None

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if cookie is not None:
                    headers.append((b"set-cookie", cookie))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie(name: str, value: str, path: str, secure: bool) -> bytes:
    text = f"{name}={value}; Path={path}; HttpOnly; SameSite=Strict"
    return (text + "; Secure" if secure else text).encode()


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    here = request.url.path[len(_root(request)) :] or "/"
    if request.url.query:
        here += "?" + request.url.query
    target = f"{_root(request)}/login?next={quote(here, safe='')}"
    if request.headers.get("hx-request"):
        # htmx follows a redirect inside the fragment; this makes it load the login page whole.
        return Response(status_code=204, headers={"hx-redirect": target})
    if request.headers.get("accept", "").startswith("text/event-stream"):
        return Response("event: live-status\ndata: not live: log in again\n\n", media_type="text/event-stream")
    return RedirectResponse(target, status_code=303)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return _error_page(request, 403, str(exc))


async def _bad_form(request: Request, exc: Exception) -> Response:
    return _error_page(request, 400, str(exc))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_page(request, exc.status if 400 <= exc.status < 600 else 502, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    text = exc.detail if exc.detail and exc.detail != HTTPStatus(exc.status_code).phrase else "There is no such page."
    return _error_page(request, exc.status_code, text)


def _error_page(request: Request, status: int, message: str) -> Response:
    console: Console = request.app.state.console
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return console.renderer.page(
        request, "error.html", {"status": status, "phrase": phrase, "message": message, "notice": None}, None, status
    )
