"""What every view does: open the session, render a page, stream a live part, run an action.

A view is an ``async def (request) -> Response`` in one of the ``views`` modules, listed in
its module's ``ROUTES``. Pages call ``session`` first (it sends a visitor without a valid
token to the login form), actions go through ``act`` (CSRF check, the API call, and a
redirect back with a notice), live parts through ``live``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from .. import live as live_module
from ..client import ApiError
from ..core import Console
from ..session import Session, check_csrf, open_session, read_form, request_token

NOTICE_COOKIE = "df_notice"


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def session(request: Request) -> Session:
    """The request's session; ``LoginRequired`` (-> the login form) without a valid token."""
    cached: Session | None = getattr(request.state, "session", None)
    if cached is None:
        console = console_of(request)
        cached = await open_session(request, console.api(request_token(request)))
        request.state.session = cached
    return cached


def url(request: Request, path: str) -> str:
    return str(request.scope.get("root_path", "")) + path


async def page(
    request: Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200
) -> HTMLResponse:
    s = await session(request)
    notice = request.cookies.get(NOTICE_COOKIE)
    values = {"notice": _read_notice(notice), **(context or {})}
    response = console_of(request).renderer.page(request, template, values, s, status)
    if notice is not None:
        response.delete_cookie(NOTICE_COOKIE, path=url(request, "/"))
    return response


def fragment(request: Request, template: str, context: Mapping[str, Any], s: Session) -> str:
    return console_of(request).renderer.html(request, template, context, s)


def live(request: Request, parts: live_module.Parts) -> StreamingResponse:
    console = console_of(request)
    return live_module.stream(parts, console.settings.live_interval, console.closing)


Action = Callable[[Session, FormData], Awaitable[str]]


async def act(request: Request, action: Action, back: str) -> Response:
    """Run a state-changing ``action`` for a console form: CSRF-checked, then a redirect
    (303) to ``back`` with the action's notice, or with the API's error when it refused."""
    await check_csrf(request)
    s = await session(request)
    form = await read_form(request)
    try:
        notice = ("ok", await action(s, form))
    except ApiError as exc:
        notice = ("error", exc.message)
    response = RedirectResponse(url(request, back), status_code=303)
    set_notice(request, response, *notice)
    return response


def set_notice(request: Request, response: Response, kind: str, text: str) -> None:
    response.set_cookie(
        NOTICE_COOKIE, quote(f"{kind}:{text}"[:600]), max_age=60, path=url(request, "/"),
        httponly=True, samesite="strict", secure=console_of(request).settings.secure_cookies,
    )  # fmt: skip


def _read_notice(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    kind, _, text = unquote(raw).partition(":")
    return {"kind": "error" if kind == "error" else "ok", "text": text}


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
