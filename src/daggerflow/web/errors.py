"""Exceptions as JSON answers: one body shape (``schemas.ErrorBody``) for every error.

An engine error maps to the status that says what the caller can do about it:

=============================================  ======
``InvalidInput`` (``InvalidInstanceId``),      422    the request is well-formed but cannot
``NotSerializable``                                   be stored as given
``InvalidFilter``                              400    an unknown or malformed instance filter
                                                      (the body's ``filter`` names it)
``InvalidSchedule``                            400    a schedule that cannot run as defined
``TooLarge``                                   413    over a configured size limit
``TemplateDoesNotExist``, ``UnknownInstance``, 404
``UnknownSchedule``, ``UnknownMessage``
``ForwardError``                               503    the owning worker did not answer: retry
any other ``DaggerError``                      409    e.g. a state that forbids the call
anything else                                  500
=============================================  ======
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response

from ..errors import (
    DaggerError,
    ForwardError,
    InvalidFilter,
    InvalidInput,
    InvalidSchedule,
    NotSerializable,
    TemplateDoesNotExist,
    TooLarge,
    UnknownInstance,
    UnknownMessage,
    UnknownSchedule,
)
from .schemas import ErrorBody


class JSONResponse(_StarletteJSONResponse):
    """Encoded with msgspec: structs as they are, and a runtime parameter such as bytes
    (base64) must not turn a listing into a 500."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class ApiError(Exception):
    """A request refused by the REST layer itself (a bad query string or body)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error_response(
    message: str, status: int, kind: str | None = None, headers: Any = None, filter: str | None = None
) -> Response:
    body = ErrorBody(error=message, status=status, type=msgspec.UNSET if kind is None else kind,
                     filter=msgspec.UNSET if filter is None else filter)  # fmt: skip
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: DaggerError) -> int:
    if isinstance(exc, ForwardError):
        return 503
    if isinstance(exc, (TemplateDoesNotExist, UnknownInstance, UnknownSchedule, UnknownMessage)):
        return 404
    if isinstance(exc, (InvalidSchedule, InvalidFilter)):
        return 400
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, (InvalidInput, NotSerializable)):
        return 422
    return 409


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(str(exc), exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # e.g. Allow on a 405
    return error_response(str(exc.detail), exc.status_code, headers=exc.headers)


async def _dagger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DaggerError)
    named = exc.filter if isinstance(exc, InvalidFilter) else None
    return error_response(str(exc), status_of(exc), type(exc).__name__, filter=named)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback after this answer (ServerErrorMiddleware re-raises).
    return error_response(f"{type(exc).__name__}: {exc}", 500)


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    DaggerError: _dagger_error,
    Exception: _server_error,
}
