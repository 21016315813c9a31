"""The REST API as a starlette application.

Dagger's routes keep their shapes (``/service/ready``, ``/tasks/instances``,
``/tasks/instance/{id}``); ``/api/v1`` adds filtering, paging, creation and stop; the
``/topics`` routes append to and read the embedded topics. Every error is JSON.

The instance routes answer for every instance of the application, wherever it is owned: they
call the engine's async reads, which on the Kafka runtime forward to the owners. The
``/internal/v1`` routes are what they forward to: this process's own partitions only, instances
as msgpack (``daggerflow.kafka.remote``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

from ..errors import (
    DaggerError,
    ForwardError,
    InvalidInput,
    NotOwner,
    NotSerializable,
    TemplateDoesNotExist,
    TooLarge,
)
from ..model.instance import encode_instance
from ..model.snapshot import snapshot, summary
from ..model.status import TaskStatusEnum
from ..topics import encode_value
from .wire import INTERNAL_HEADER, MISDIRECTED, MSGPACK

if TYPE_CHECKING:
    from .api import EngineAPI

MAX_LIMIT = 1000
MAX_OFFSET = 2**63 - 1  # SQLite's largest INTEGER: bigger offsets would be a 500, not a 400
_STATUSES = {s.value for s in TaskStatusEnum}


class JSONResponse(_StarletteJSONResponse):
    """Encoded with msgspec, the encoder that decided the state was JSON-serialisable: a
    runtime parameter like bytes (base64) must not turn a listing into a 500."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _int_param(
    request: Request, name: str, default: int, *, minimum: int = 0, maximum: int = MAX_OFFSET
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if value < minimum or value > maximum:
        bound = f"between {minimum} and {maximum}"
        raise BadRequest(f"query parameter {name!r} must be {bound}, got {value}")
    return value


def _filters(request: Request, max_limit: int = MAX_LIMIT) -> tuple[str | None, str | None, int, int]:
    status = request.query_params.get("status") or None
    if status is not None:
        status = status.upper()
        if status not in _STATUSES:
            raise BadRequest(f"unknown status {status!r}; one of {sorted(_STATUSES)}")
    template = request.query_params.get("template") or None
    limit = _int_param(request, "limit", 100, minimum=1, maximum=max_limit)
    offset = _int_param(request, "offset", 0)
    return status, template, limit, offset


def _internal(body: bytes, status: int = 200, media_type: str = MSGPACK) -> Response:
    """An answer of an internal route, marked as such for the forwarding side."""
    return Response(body, status_code=status, media_type=media_type, headers={INTERNAL_HEADER: "1"})


async def _json_body(request: Request) -> Any:
    body = await request.body()
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def create_app(engine: EngineAPI) -> Starlette:
    async def ready(request: Request) -> Response:
        return JSONResponse({"is_ready": engine.running})

    async def instances(request: Request) -> Response:
        status, template, limit, offset = _filters(request)
        found = await engine.list_instances_async(
            status=status, template=template, limit=limit, offset=offset
        )
        return JSONResponse([snapshot(i) for i in found])

    async def instance(request: Request) -> Response:
        iid = request.path_params["id"]
        inst = await engine.get_instance_state(iid)
        if inst is None:
            raise BadRequest(f"no workflow instance {iid!r}", 404)
        return JSONResponse(snapshot(inst))

    async def v1_instances(request: Request) -> Response:
        status, template, limit, offset = _filters(request)
        # Both ask every worker on Kafka: in parallel.
        found, total = await asyncio.gather(
            engine.list_instances_async(status=status, template=template, limit=limit, offset=offset),
            engine.count_instances_async(status=status, template=template),
        )
        next_offset = offset + len(found) if offset + len(found) < total else None
        return JSONResponse(
            {
                "items": [summary(i) for i in found],
                "total": total,
                "limit": limit,
                "offset": offset,
                "next_offset": next_offset,
            }
        )

    async def v1_stop(request: Request) -> Response:
        iid = request.path_params["id"]
        result = await engine.stop_instance(iid)
        if result is None:
            raise BadRequest(f"no workflow instance {iid!r}", 404)
        inst = await engine.get_instance_state(iid)
        return JSONResponse(snapshot(inst) if inst else {"id": iid, "deleted": True})

    async def v1_templates(request: Request) -> Response:
        return JSONResponse([{"name": t.name, "version": t.version} for t in engine.template_dags.values()])

    async def v1_create(request: Request) -> Response:
        name = request.path_params["name"]
        body = await _json_body(request) if await request.body() else {}
        if not isinstance(body, dict):
            raise BadRequest('body must be a JSON object: {"id"?, "runtime_parameters"?, "submit"?}')
        params = body.get("runtime_parameters", {})
        if not isinstance(params, dict):
            raise BadRequest("runtime_parameters must be a JSON object")
        iid = body.get("id")
        if iid is not None and not isinstance(iid, (str, int)):
            raise BadRequest('"id" must be a string or an integer')
        if iid is None:
            import uuid

            iid = str(uuid.uuid4())
        template = engine.get_template(name)
        # The parameters as a dict, not keywords: every name is a parameter (``id``, ``seed``...).
        view = await engine.create_instance(
            template,
            iid,
            params,
            submit_task=bool(body.get("submit", True)),
            partition_key_lookup=body.get("partition_key_lookup"),
        )
        inst = await engine.get_instance_state(view.id)
        return JSONResponse(snapshot(inst) if inst else {"id": view.id}, status_code=201)

    async def post_message(request: Request) -> Response:
        topic = request.path_params["name"]
        body = await _json_body(request)
        if not isinstance(body, dict) or "value" not in body:
            raise BadRequest('body must be a JSON object with "value" (and optional "key")')
        key = body.get("key")
        if key is not None and not isinstance(key, str):
            raise BadRequest('"key" must be a string or null')
        headers = body.get("headers")
        if headers is not None and not (
            isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
        ):
            raise BadRequest('"headers" must be an object of strings')
        value = encode_value(body["value"])
        offset = await engine.append(topic, key, value, headers)
        return JSONResponse({"topic": topic, "offset": offset}, status_code=202)

    async def get_messages(request: Request) -> Response:
        topic = request.path_params["name"]
        start = _int_param(request, "from", 0)
        limit = _int_param(request, "limit", 100, minimum=1, maximum=MAX_LIMIT)
        messages = engine.read_topic(topic, start, limit)
        out = []
        for m in messages:
            value = m.value.decode("utf-8", "replace") if isinstance(m.value, bytes) else m.value
            out.append(
                {
                    "offset": m.offset,
                    "key": m.key,
                    "value": value,
                    "timestamp": m.timestamp,
                    "headers": m.headers,
                }
            )
        next_offset = messages[-1].offset + 1 if messages else start
        return JSONResponse({"messages": out, "next": next_offset})

    async def topic_messages(request: Request) -> Response:
        return await (post_message if request.method == "POST" else get_messages)(request)

    async def topics(request: Request) -> Response:
        return JSONResponse(engine.topic_names())

    async def stats(request: Request) -> Response:
        return JSONResponse(engine.stats())

    async def metrics(request: Request) -> Response:
        from .metrics import render

        body, content_type = render(engine)
        return Response(body, media_type=content_type)

    # Internal routes: what other processes forward to. This process's partitions only.

    async def internal_instance(request: Request) -> Response:
        iid = request.path_params["id"]
        try:
            # Only what this process holds: never forward a forwarded request again.
            inst = engine.local_instance(iid)
        except NotOwner as exc:
            return _internal(str(exc).encode(), MISDIRECTED, "text/plain")
        if inst is None:
            return _internal(b"", 404)
        return _internal(encode_instance(inst))

    async def internal_instances(request: Request) -> Response:
        # A merged page needs each worker's first offset+limit: no MAX_LIMIT here.
        status, template, limit, offset = _filters(request, max_limit=MAX_OFFSET)
        found = engine.list_instances(status=status, template=template, limit=limit, offset=offset)
        return _internal(msgspec.msgpack.encode(found))

    async def internal_count(request: Request) -> Response:
        status, template, _limit, _offset = _filters(request)
        count = engine.count_instances(status=status, template=template)
        return _internal(msgspec.json.encode({"count": count}), media_type="application/json")

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        return JSONResponse({"error": str(exc), "status": exc.status}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": exc.detail, "status": exc.status_code},
            status_code=exc.status_code,
            headers=exc.headers,  # e.g. Allow on a 405
        )

    async def dagger_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ForwardError):
            status = 503  # the owner of the instance did not answer: worth retrying, not a conflict
        elif isinstance(exc, TemplateDoesNotExist):
            status = 404
        else:
            status = 422 if isinstance(exc, (NotSerializable, InvalidInput)) else 409
            status = 413 if isinstance(exc, TooLarge) else status
        return JSONResponse(
            {"error": str(exc), "type": type(exc).__name__, "status": status}, status_code=status
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}", "status": 500}, status_code=500)

    routes = [
        Route("/service/ready", ready),
        Route("/tasks/instances", instances),
        Route("/tasks/instance/{id}", instance),
        Route("/api/v1/instances", v1_instances),
        Route("/api/v1/instances/{id}", instance),
        Route("/api/v1/instances/{id}/stop", v1_stop, methods=["POST"]),
        Route("/api/v1/templates", v1_templates),
        Route("/api/v1/templates/{name}/instances", v1_create, methods=["POST"]),
        Route("/api/v1/stats", stats),
        Route("/topics", topics),
        # One route for both methods, so a 405 lists both in its Allow header.
        Route("/topics/{name}/messages", topic_messages, methods=["GET", "POST"]),
        Route("/metrics", metrics),
        Route("/internal/v1/instances", internal_instances),
        # :path, so that an id with a "/" (sent as %2F, decoded by the server) still matches.
        Route("/internal/v1/instances/{id:path}", internal_instance),
        Route("/internal/v1/count", internal_count),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: bad_request,
            HTTPException: http_error,
            DaggerError: dagger_error,
            Exception: server_error,
        },
    )
