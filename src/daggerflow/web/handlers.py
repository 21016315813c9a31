"""The public routes' handlers: each decodes its query and body into a struct of
``web.schemas``, calls the engine once or twice, and answers with a response struct.

The instance routes answer for every instance of the application, wherever it is owned: they
call the engine's async reads, which on the Kafka runtime forward to the owners.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..about import package_version
from ..errors import InvalidFilter, InvalidInput
from ..model.instance import Instance
from ..model.snapshot import rest_snapshot, summary
from ..model.versions import TemplateVersion, VersionNode
from ..topics import encode_value
from .auth import ADMIN, SCOPE_STATE
from .errors import ApiError, JSONResponse
from .inputs import decode_body, decode_list_query, decode_query, read_body
from .metrics import render
from .schemas import (
    ActionQuery,
    Appended,
    BulkAnswer,
    BulkJobInfo,
    BulkListQuery,
    BulkRequest,
    CreateInstanceRequest,
    DeletedInstance,
    InstancePage,
    InstanceRef,
    InstanceSnapshot,
    InstanceSummary,
    ListQuery,
    MessagesPage,
    MessagesQuery,
    MigrationRequest,
    MigrationResult,
    NoQuery,
    PostMessageRequest,
    Ready,
    RetryRequest,
    Stats,
    TemplateInfo,
    TemplateNode,
    TopicMessage,
    WhoAmI,
    as_struct,
)

if TYPE_CHECKING:
    from .api import EngineAPI


def _snapshot(instance: Instance) -> InstanceSnapshot:
    result: InstanceSnapshot = as_struct(rest_snapshot(instance), InstanceSnapshot)
    return result


def _missing(instance_id: str) -> ApiError:
    return ApiError(f"no workflow instance {instance_id!r}", 404)


async def ready(engine: EngineAPI, request: Request) -> Response:
    # Probes may add their own query parameters: this route ignores them.
    return JSONResponse(Ready(is_ready=engine.running))


async def dagger_instances(engine: EngineAPI, request: Request) -> Response:
    q, query = decode_list_query(request, ListQuery)
    if q.sort is None:  # Dagger listed in creation order
        query = msgspec.structs.replace(query, sort="created")
    found = await engine.list_instances_async(query, limit=q.limit, offset=q.offset)
    return JSONResponse([_snapshot(i) for i in found])


async def instance(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    iid: str = request.path_params["id"]
    found = await engine.get_instance_state(iid)
    if found is None:
        raise _missing(iid)
    return JSONResponse(_snapshot(found))


async def list_instances(engine: EngineAPI, request: Request) -> Response:
    q, query = decode_list_query(request, ListQuery)
    # Both ask every worker on Kafka: in parallel.
    found, total = await asyncio.gather(
        engine.list_instances_async(query, limit=q.limit, offset=q.offset),
        engine.count_instances_async(query),
    )
    end = q.offset + len(found)
    page = InstancePage(
        items=[as_struct(summary(i), InstanceSummary) for i in found],
        total=total,
        limit=q.limit,
        offset=q.offset,
        next_offset=end if end < total else None,
    )
    return JSONResponse(page)


async def stop_instance(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    iid: str = request.path_params["id"]
    if await engine.stop_instance(iid) is None:
        raise _missing(iid)
    found = await engine.get_instance_state(iid)
    return JSONResponse(_snapshot(found) if found else DeletedInstance(id=iid, deleted=True))


async def retry_instance(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    raw = await read_body(request, engine.max_request_bytes)
    body = decode_body(raw, RetryRequest) if raw else RetryRequest()
    iid: str = request.path_params["id"]
    await engine.retry(iid, body.runtime_parameters, actor=q.actor)
    return await _after(engine, iid)


async def skip_task(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    iid: str = request.path_params["id"]
    await engine.skip_task(iid, request.path_params["node_id"], actor=q.actor)
    return await _after(engine, iid)


async def complete_task(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    iid: str = request.path_params["id"]
    await engine.complete_task(iid, request.path_params["node_id"], actor=q.actor)
    return await _after(engine, iid)


async def submit_instance(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    iid: str = request.path_params["id"]
    if await engine.get_instance_state(iid) is None:
        raise _missing(iid)
    await engine.submit(iid, actor=q.actor)
    return await _after(engine, iid)


async def patch_parameters(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    changes: Any = decode_body(await read_body(request, engine.max_request_bytes), Any)
    if not isinstance(changes, dict):
        raise ApiError(f"invalid request body: expected a JSON object, got {type(changes).__name__}")
    iid: str = request.path_params["id"]
    await engine.patch_parameters(iid, changes, actor=q.actor)
    return await _after(engine, iid)


async def _after(engine: EngineAPI, iid: str) -> Response:
    """The snapshot after an action (on Kafka, as the owner has it: an action sent to it
    may not be applied yet)."""
    found = await engine.get_instance_state(iid)
    if found is None:
        return JSONResponse(DeletedInstance(id=iid, deleted=True))
    return JSONResponse(_snapshot(found))


async def bulk_instances(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    body = decode_body(await read_body(request, engine.max_request_bytes), BulkRequest)
    try:
        result = await engine.bulk(body.action, body.filter, dry_run=body.dry_run, batch_size=body.batch_size,
                                   actor=q.actor)  # fmt: skip
    except InvalidFilter:
        raise  # a 400 naming the filter (``web.errors``)
    except InvalidInput as exc:  # the action or batch size: the request, not the state
        raise ApiError(str(exc)) from None
    answer = BulkAnswer(matched=result.matched, job=result.job)
    return JSONResponse(answer)


async def bulk_job(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    found = await engine.bulk_job(request.path_params["job"])
    return JSONResponse(as_struct(msgspec.to_builtins(found), BulkJobInfo))


async def bulk_jobs(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, BulkListQuery)
    found = await engine.bulk_jobs(q.limit)
    return JSONResponse([as_struct(msgspec.to_builtins(p), BulkJobInfo) for p in found])


async def templates(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    versions = await engine.template_versions()
    return JSONResponse([_template_info(v) for v in versions])


def _template_info(v: TemplateVersion) -> TemplateInfo:
    nodes = [] if v.definition is None else [_template_node(n) for n in v.definition.nodes]
    return TemplateInfo(name=v.template, version=v.version, current=v.current, running=v.running, nodes=nodes,
                        missing_task_types=v.missing_task_types, missing_topics=v.missing_topics)  # fmt: skip


def _template_node(n: VersionNode) -> TemplateNode:
    return TemplateNode(name=n.name, kind=n.kind, type=n.type, topic=n.topic, parent=n.parent, next=list(n.next),
                        children=list(n.children), operator=n.operator, correlatable_key=n.correlatable_key,
                        process=n.process)  # fmt: skip


async def migrate(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, ActionQuery)
    body = decode_body(await read_body(request, engine.max_request_bytes), MigrationRequest)
    report = await engine.migrate(body.template, body.from_version, body.to_version, node_map=body.node_map,
                                  filter=body.filter, dry_run=body.dry_run, actor=q.actor)  # fmt: skip
    return JSONResponse(as_struct(msgspec.to_builtins(report), MigrationResult))


async def create_instance(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    raw = await read_body(request, engine.max_request_bytes)
    body = decode_body(raw, CreateInstanceRequest) if raw else CreateInstanceRequest()
    template = engine.get_template(request.path_params["name"])
    iid = str(uuid.uuid4()) if body.id is None else str(body.id)
    # The parameters stay one dict: any name a user types ("id", "seed", ...) is a parameter.
    view = await engine.create_instance(
        template,
        iid,
        body.runtime_parameters,
        partition_key_lookup=body.partition_key_lookup,
        submit_task=body.submit,
    )
    found = await engine.get_instance_state(view.id)
    if found is None:
        # Deleted on completion already, or created by another worker not readable yet.
        return JSONResponse(InstanceRef(id=view.id), status_code=201)
    return JSONResponse(_snapshot(found), status_code=201)


async def post_message(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    topic: str = request.path_params["name"]
    body = decode_body(await read_body(request, engine.max_request_bytes), PostMessageRequest)
    offset = await engine.append(topic, body.key, encode_value(body.value), body.headers)
    return JSONResponse(Appended(topic=topic, offset=offset), status_code=202)


async def get_messages(engine: EngineAPI, request: Request) -> Response:
    q = decode_query(request, MessagesQuery)
    messages = engine.read_topic(request.path_params["name"], q.from_, q.limit)
    out = [
        TopicMessage(
            offset=m.offset,
            key=m.key,
            value=m.value.decode("utf-8", "replace") if isinstance(m.value, bytes) else m.value,
            timestamp=m.timestamp,
            headers=m.headers,
        )
        for m in messages
    ]
    return JSONResponse(MessagesPage(messages=out, next=messages[-1].offset + 1 if messages else q.from_))


async def topics(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return JSONResponse(engine.topic_names())


async def whoami(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    scope = getattr(request.state, SCOPE_STATE, None)
    return JSONResponse(
        WhoAmI(
            auth=scope is not None,
            scope=scope or ADMIN,
            runtime=engine.runtime_name,
            version=package_version(),
            test_messages=engine.console_test_messages,
        )
    )


async def stats(engine: EngineAPI, request: Request) -> Response:
    decode_query(request, NoQuery)
    return JSONResponse(as_struct(engine.stats(), Stats))


async def metrics(engine: EngineAPI, request: Request) -> Response:
    # Scrapers may add their own query parameters: this route ignores them.
    body, content_type = render(engine)
    return Response(body, media_type=content_type)
