"""How the REST layer answers each kind of exception: one JSON body shape, and the status that
tells the caller what to do (web/errors.py). Driven through the real starlette application
with an engine stand-in that raises."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from daggerflow.errors import (
    ForwardError,
    InvalidFilter,
    InvalidInput,
    InvalidInstanceId,
    NotSerializable,
    StoreError,
    TaskInvalidState,
    TemplateDoesNotExist,
    TooLarge,
)
from daggerflow.web.app import create_app


class Raising:
    """The members the create route calls; get_template raises the exception under test."""

    max_request_bytes = 1024

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def get_template(self, name: str) -> Any:
        raise self.exc


CASES: list[tuple[BaseException, int]] = [
    (InvalidInput("runtime parameter 'n' is 2**70"), 422),
    (InvalidInstanceId("instance id '' is empty"), 422),
    (InvalidFilter("unknown filter colour", "colour"), 400),
    (NotSerializable("runtime parameter 'blob' is bytes"), 422),
    (TooLarge("runtime parameters", 2000, 1000), 413),
    (TemplateDoesNotExist("no template 'x'"), 404),
    (ForwardError("http://w2", "connection refused"), 503),
    (TaskInvalidState("the engine is not running"), 409),
    (StoreError("disk full"), 409),
    (RuntimeError("kitchen on fire"), 500),
    (KeyError("k"), 500),
]


@pytest.mark.parametrize(("exc", "status"), CASES, ids=[type(e).__name__ for e, _ in CASES])
async def test_exception_to_status(exc: BaseException, status: int) -> None:
    app = create_app(Raising(exc))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post("/api/v1/templates/x/instances", json={})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == status
    assert str(exc.args[0]) in body["error"]
    if status == 500:
        assert set(body) == {"error", "status"} and type(exc).__name__ in body["error"]
    elif isinstance(exc, InvalidFilter):  # names the filter
        assert body == {"error": str(exc), "status": status, "type": "InvalidFilter", "filter": exc.filter}
    else:
        assert body == {"error": str(exc), "status": status, "type": type(exc).__name__}
