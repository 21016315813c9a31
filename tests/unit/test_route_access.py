"""The access each route documents in the OpenAPI table (``web.routes.ENDPOINTS``) is the access
the token middleware (``web.auth.TokenAuth``) enforces: the two are written in different
modules, and a route whose document says "public" while the middleware wants a token (or the
reverse) would mislead every client generated from the document."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daggerflow.web.auth import ApiToken, TokenAuth
from daggerflow.web.routes import ENDPOINTS

ADMIN = "admin-token-0123456789"
READ = "read-token-0123456789ab"


async def _passed(metrics_public: bool, path: str, method: str, token: str | None) -> int:
    """The status the middleware answers, or 0 when it let the request through."""
    reached: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    auth = TokenAuth(inner, [ApiToken("admin", ADMIN), ApiToken("read", READ)], metrics_public=metrics_public)
    await auth({"type": "http", "path": path, "method": method, "headers": headers}, receive, send)
    return 0 if reached else int(sent[0]["status"])


def _cases() -> list[tuple[str, str, str]]:
    return [
        (endpoint.path.replace("{id}", "order-1").replace("{name}", "pizza").replace("{asset}", "docs.js"),
         op.method, op.access)
        for endpoint in ENDPOINTS
        for op in endpoint.operations
    ]  # fmt: skip


@pytest.mark.parametrize(("path", "method", "access"), _cases())
def test_documented_access_is_enforced(path: str, method: str, access: str) -> None:
    def status(token: str | None, metrics_public: bool = False) -> int:
        return asyncio.run(_passed(metrics_public, path, method, token))

    if access == "public":
        assert status(None) == 0
    elif access == "metrics":
        assert status(None) == 401
        assert status(None, metrics_public=True) == 0
        assert status(READ) == 0
    elif access == "read":
        assert method in ("GET", "HEAD")
        assert status(None) == 401
        assert status(READ) == 0
        assert status(ADMIN) == 0
    else:
        assert access == "admin"
        assert status(None) == 401
        assert status(READ) == 403
        assert status(ADMIN) == 0
