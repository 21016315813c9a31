"""The console's only way to the engine: the REST API, over HTTP.

A worker's own console reaches its API in-process (``httpx.ASGITransport`` around the API
application, token check included), ``daggerflow ui --url`` reaches a remote worker over
the network; both go through ``Api``, so the console sees exactly what any API client sees:
the same scopes, the same errors, and on Kafka the same fan-out to every worker.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

#: How long one API call may take before the console shows the worker as not answering.
TIMEOUT = 15.0

Params = Mapping[str, Any] | list[tuple[str, Any]] | None


class ApiError(Exception):
    """An answer of the API that is not a success (``status``), or no answer (``status`` 502),
    with the API's own message (its error bodies are JSON with ``error``)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


@dataclass(frozen=True)
class Target:
    """Where the API is: an ASGI application in this process, or a URL."""

    app: Any = None
    url: str | None = None
    verify: ssl.SSLContext | bool = True

    def client(self) -> httpx.AsyncClient:
        if self.app is not None:
            # The host is never resolved: the transport hands requests to the app.
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="http://worker", timeout=TIMEOUT
            )
        assert self.url is not None
        return httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=TIMEOUT, verify=self.verify)

    def describe(self) -> str:
        return "this worker" if self.app is not None else str(self.url)


class Api:
    """One session's calls: every request carries that session's token (if any)."""

    def __init__(self, http: httpx.AsyncClient, token: str | None, where: str) -> None:
        self._http = http
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self.where = where

    async def get(self, path: str, params: Params = None) -> Any:
        return await self._call("GET", path, params=params)

    async def post(self, path: str, body: Any = None, params: Params = None) -> Any:
        return await self._call("POST", path, params=params, body=body)

    async def patch(self, path: str, body: Any = None, params: Params = None) -> Any:
        return await self._call("PATCH", path, params=params, body=body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self._call("PUT", path, body=body)

    async def delete(self, path: str) -> Any:
        return await self._call("DELETE", path)

    async def _call(self, method: str, path: str, *, params: Params = None, body: Any = None) -> Any:
        try:
            answer = await self._http.request(
                method, path, params=_clean(params), json=body, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(502, f"the worker at {self.where} did not answer: {type(exc).__name__}") from exc
        if answer.status_code >= 400:
            raise _error(answer)
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError as exc:
            raise ApiError(502, f"the worker at {self.where} sent an answer that is not JSON") from exc


def _clean(params: Params) -> Any:
    """Query parameters without the empty ones (an empty filter field means no filter)."""
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    return [(k, _text(v)) for k, v in items if v is not None and v != ""]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(answer: httpx.Response) -> ApiError:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return ApiError(answer.status_code, body["error"], body)
    return ApiError(answer.status_code, f"the API answered {answer.status_code} {answer.reason_phrase}", body)
