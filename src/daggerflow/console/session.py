"""Who is using the console, and the checks that keep another site from acting for them.

The login form takes an API token, asks the API's ``whoami`` with it, and on success keeps
it in an HttpOnly, SameSite=Strict cookie limited to ``/ui``: page scripts cannot read it,
and other sites' requests do not carry it. Each request's API calls carry that token, so the
API's own check (and its read/admin scopes) decides what the console may do; the console only
hides what the scope would refuse.

Every state-changing request must also carry the CSRF token: the value of a second cookie,
echoed in a form field or an ``X-CSRF-Token`` header (htmx sends it from the page's
``hx-headers``). A request with an ``Origin`` of another host is refused outright.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData
from starlette.requests import Request

from .client import Api, ApiError

TOKEN_COOKIE = "df_token"
CSRF_COOKIE = "df_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
#: Where ``ConsoleMiddleware`` leaves the request's CSRF token (``request.state``).
CSRF_STATE = "csrf"


#: The largest form the console reads: its forms hold a token, filters, or a JSON patch.
MAX_FORM_BYTES = 256 * 1024
MAX_FORM_FIELDS = 200


class BadForm(Exception):
    """A console form that cannot be read (too large, not a form): a 400 page."""


class LoginRequired(Exception):
    """The API wants a token this request does not have (or no longer a valid one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CsrfRefused(Exception):
    """A state-changing request without the CSRF token, or from another origin."""


@dataclass(frozen=True)
class Session:
    """One request's view of the console: its API client and what ``whoami`` said."""

    api: Api
    who: dict[str, Any]
    csrf: str

    @property
    def can_act(self) -> bool:
        return bool(self.who.get("scope") == "admin")

    @property
    def test_messages(self) -> bool:
        return bool(self.who.get("test_messages")) and self.can_act


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def request_token(request: Request) -> str | None:
    return request.cookies.get(TOKEN_COOKIE) or None


async def open_session(request: Request, api: Api) -> Session:
    """The session of ``request``: ``LoginRequired`` when the API refuses its token."""
    try:
        who = await api.get("/api/v1/whoami")
    except ApiError as exc:
        if exc.status == 401:
            raise LoginRequired(exc.message) from exc
        raise
    return Session(api=api, who=who, csrf=getattr(request.state, CSRF_STATE, ""))


async def check_csrf(request: Request) -> None:
    """Refuse (``CsrfRefused``) a state-changing request that does not prove it comes from
    a console page: same origin, and the CSRF cookie's value in a field or header."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            raise CsrfRefused(f"a request from {origin} may not act on this console")
    expected = request.cookies.get(CSRF_COOKIE, "")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None:
        field = (await read_form(request)).get(CSRF_FIELD)
        presented = field if isinstance(field, str) else ""
    if not expected or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise CsrfRefused("the form is out of date or did not come from this console: reload the page and try again")


async def read_form(request: Request) -> FormData:
    """The request's URL-encoded form (the only kind the console's pages send), read once.

    The standard library parses it: the console accepts no file upload, so it needs no
    multipart parser."""
    cached: FormData | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise BadForm(f"the console reads URL-encoded forms, not {kind}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(f"the form cannot be read: {exc}") from exc
    form = FormData(list[tuple[str, Any]](pairs))
    request.state.form = form
    return form
