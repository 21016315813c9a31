"""The login form and logout (``session`` explains what the cookie holds)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..client import ApiError
from ..session import TOKEN_COOKIE, check_csrf, read_form, request_token
from .common import console_of, form_text, url


def _next(raw: str | None) -> str:
    """Where to go after the login: a path of this console only (never another site)."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/"


def _form(request: Request, next_path: str, error: str | None, status: int = 200) -> Response:
    console = console_of(request)
    return console.renderer.page(request, "login.html", {"next": next_path, "error": error, "notice": None}, None, status)


async def login_form(request: Request) -> Response:
    next_path = _next(request.query_params.get("next"))
    try:
        await console_of(request).api(request_token(request)).get("/api/v1/whoami")
    except ApiError as exc:
        if exc.status != 401:
            raise
        message = request.query_params.get("why")
        return _form(request, next_path, message)
    return RedirectResponse(url(request, next_path), status_code=303)  # already in (or no tokens)


async def login(request: Request) -> Response:
    await check_csrf(request)
    form = await read_form(request)
    next_path = _next(form_text(form, "next"))
    token = form_text(form, "token")
    if not token:
        return _form(request, next_path, "Enter an API token.", 400)
    console = console_of(request)
    try:
        await console.api(token).get("/api/v1/whoami")
    except ApiError as exc:
        if exc.status != 401:
            raise
        return _form(request, next_path, "That token is not valid for this worker.", 401)
    response = RedirectResponse(url(request, next_path), status_code=303)
    response.set_cookie(
        TOKEN_COOKIE, token, path=url(request, "/"), httponly=True, samesite="strict",
        secure=console.settings.secure_cookies,
    )  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    await check_csrf(request)
    response = RedirectResponse(url(request, "/login"), status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path=url(request, "/"), httponly=True, samesite="strict")
    return response


ROUTES = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
