"""Reading requests into their structs (``web.schemas``): the body under a size limit, then
decoded strictly; the query string checked for unknown and repeated names, then converted."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from ..errors import InvalidFilter, InvalidInput, TooLarge
from ..model.query import FILTER_NAMES, PARAM_PREFIX, InstanceQuery, query_from_pairs
from .errors import ApiError
from .schemas import ListQuery

T = TypeVar("T")
L = TypeVar("L", bound=ListQuery)

DEFAULT_MAX_REQUEST_BYTES = 2 * 1024 * 1024
_LIMIT_HINT = " (the worker's max_request_bytes option)"


def accepted_names(kind: type[Any]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(kind)]


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit``: from
    Content-Length before reading, else while counting the streamed chunks."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise TooLarge("request body", size, limit, _LIMIT_HINT)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge("request body", received, limit, f"{_LIMIT_HINT}; stopped reading there")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        fields = ", ".join(accepted_names(kind))
        raise ApiError(f"invalid request body: {exc} (fields: {fields})") from None
    except msgspec.DecodeError as exc:
        raise ApiError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        # A value nested this deep could not be stored and read back either.
        raise InvalidInput("request body is nested too deeply to be decoded") from None


PARAM_FILTER = "param.NAME"


def decode_list_query(request: Request, kind: type[L]) -> tuple[L, InstanceQuery]:
    """A listing's query string: ``kind`` (a ``ListQuery``) for the named filters and
    paging, plus ``param.NAME`` filters; the instance query they make together. Unknown
    names and malformed filters are a 400 that names them."""
    pairs = request.query_params.multi_items()
    params = [(k, v) for k, v in pairs if k.startswith(PARAM_PREFIX)]
    named = [(k, v) for k, v in pairs if not k.startswith(PARAM_PREFIX)]
    struct = _decode_pairs(named, kind, extra=(PARAM_FILTER,), filters=True)
    filters = [(name, getattr(struct, name)) for name in FILTER_NAMES if getattr(struct, name) is not None]
    if struct.sort is not None:
        filters.append(("sort", struct.sort))
    # An InvalidFilter is a 400 naming the filter (``web.errors``).
    return struct, query_from_pairs([*filters, *params])


def decode_query(request: Request, kind: type[T]) -> T:
    """The query string as ``kind``: unknown or repeated names are refused with the list of
    accepted ones; an empty value means the default, as before the structs."""
    return _decode_pairs(request.query_params.multi_items(), kind)


def _decode_pairs(
    pairs: list[tuple[str, str]], kind: type[T], extra: tuple[str, ...] = (), *, filters: bool = False
) -> T:
    """``filters``: a listing's query string, where an unknown name is an unknown filter and
    a repeated or invalid filter an ``InvalidFilter`` (the same 400 as in a JSON filter)."""
    names = accepted_names(kind)
    keys = [k for k, _ in pairs]
    unknown = sorted(set(keys) - set(names))
    if unknown:
        shown = [*names, *extra]
        accepted = f"accepted: {', '.join(shown)}" if shown else "this route takes none"
        listed = ", ".join(repr(n) for n in unknown)
        if filters:
            raise InvalidFilter(f"unknown filter {listed}; {accepted}", ", ".join(unknown))
        raise ApiError(f"unknown query parameter(s) {listed}; {accepted}")
    repeated = sorted(k for k in set(keys) if keys.count(k) > 1)
    if repeated:
        message = f"query parameter(s) given more than once: {', '.join(repr(n) for n in repeated)}"
        if filters and set(repeated) & _FILTER_FIELDS:
            raise InvalidFilter(message, ", ".join(repeated))
        raise ApiError(message)
    values = {k: v for k, v in pairs if v != ""}
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "query parameter `").replace(" - at ", " - ")
        field = re.search(r"`\$\.([A-Za-z_]+)`", str(exc)) or re.match(r"unknown (status)", str(exc))
        if filters and field is not None and field.group(1) in _FILTER_FIELDS:
            raise InvalidFilter(f"invalid query string: {message}", field.group(1)) from None
        raise ApiError(f"invalid query string: {message}") from None


_FILTER_FIELDS = {*FILTER_NAMES, "sort"}
