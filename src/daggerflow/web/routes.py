"""The public routes as data: path, method, handler, and the structs and statuses of each.

``web.app`` builds the starlette routes from this table and ``web.openapi`` the OpenAPI
document, so a route cannot exist without being documented, nor be documented otherwise than
it decodes and answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from . import docs, handlers
from .schemas import (
    ActionQuery,
    Appended,
    BulkAnswer,
    BulkJobInfo,
    BulkRequest,
    CreateInstanceRequest,
    DeletedInstance,
    InstancePage,
    InstanceRef,
    InstanceSnapshot,
    ListQuery,
    MessagesPage,
    MessagesQuery,
    NoQuery,
    PostMessageRequest,
    Ready,
    RetryRequest,
    Stats,
    TemplateInfo,
)

if TYPE_CHECKING:
    from .api import EngineAPI

Handler = Callable[["EngineAPI", Request], Awaitable[Response]]

#: Who may call a route once the worker has API tokens: ``public`` always; ``metrics``
#: unless the worker is configured to protect it; ``read`` with any token; ``admin`` with a
#: token of the admin scope (every route that changes something).
ACCESS = ("public", "metrics", "read", "admin")


@dataclass(frozen=True)
class Operation:
    method: str
    handler: Handler
    operation_id: str
    summary: str
    #: The 2xx answer: a type (struct, ``list[...]``), a tuple of alternatives, or None for
    #: a non-JSON answer of ``media_type``.
    response: Any
    status: int = 200
    access: str = "read"
    query: type[Any] | None = NoQuery
    body: type[Any] | None = None
    body_required: bool = True
    #: Error statuses beyond the ones every route of its kind can give (see ``web.openapi``).
    errors: tuple[int, ...] = ()
    media_type: str | tuple[str, ...] = "application/json"
    description: str = ""
    tag: str = "instances"


@dataclass(frozen=True)
class Endpoint:
    path: str
    operations: tuple[Operation, ...]


_FORWARDS = "On the Kafka runtime the read is forwarded to the owning worker (503 if it does not answer)."

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/service/ready",
        (
            Operation(
                "GET", handlers.ready, "ready", "Whether the engine has started (Dagger's route)",
                Ready, access="public", query=None, tag="service",
            ),
        ),
    ),
    Endpoint(
        "/tasks/instances",
        (
            Operation(
                "GET", handlers.dagger_instances, "listDaggerInstances",
                "Workflow snapshots, filtered and paged (Dagger's route)", list[InstanceSnapshot],
                query=ListQuery, errors=(503,), description=_FORWARDS,
            ),
        ),
    ),
    Endpoint(
        "/tasks/instance/{id}",
        (
            Operation(
                "GET", handlers.instance, "getDaggerInstance", "One workflow's snapshot (Dagger's route)",
                InstanceSnapshot, errors=(404, 503), description=_FORWARDS,
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances",
        (
            Operation(
                "GET", handlers.list_instances, "listInstances",
                "Instance summaries with the total count and the next page's offset", InstancePage,
                query=ListQuery, errors=(503,), description=_FORWARDS,
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/bulk",
        (
            Operation(
                "POST", handlers.bulk_instances, "bulkInstances",
                "Stop or retry every instance a filter matches, as a job (a dry run only counts them)",
                BulkAnswer, access="admin", query=ActionQuery, body=BulkRequest, errors=(409, 413, 503),
                description=(
                    "A real run answers at once with the job's id; its progress is at /api/v1/bulk/{job}. "
                    "The matched instances are those that match when each partition starts the job; each "
                    "is acted on once. 400 for an unknown or malformed filter, 409 while a job with the "
                    "same action and filter runs."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/bulk/{job}",
        (
            Operation(
                "GET", handlers.bulk_job, "getBulkJob",
                "A bulk job's progress: matched, done, failed and remaining, over every partition",
                BulkJobInfo, errors=(404,), description="On the Kafka runtime every worker is asked.",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}",
        (
            Operation(
                "GET", handlers.instance, "getInstance", "One workflow's snapshot", InstanceSnapshot,
                errors=(404, 503), description=_FORWARDS,
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}/stop",
        (
            Operation(
                "POST", handlers.stop_instance, "stopInstance",
                "Stop a workflow: every non-terminal node becomes STOPPED (a no-op when terminal)",
                (InstanceSnapshot, DeletedInstance), access="admin", errors=(404, 409, 503),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}/submit",
        (
            Operation(
                "POST", handlers.submit_instance, "submitInstance",
                "Start a created (NOT_STARTED) workflow; a no-op when it runs already",
                (InstanceSnapshot, DeletedInstance), access="admin", query=ActionQuery, errors=(404, 409, 503),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}/retry",
        (
            Operation(
                "POST", handlers.retry_instance, "retryInstance",
                "Run a FAILURE workflow again from its failed tasks (completed tasks do not run again)",
                (InstanceSnapshot, DeletedInstance), access="admin", query=ActionQuery, body=RetryRequest,
                body_required=False, errors=(404, 409, 413, 422, 503),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}/tasks/{node_id}/skip",
        (
            Operation(
                "POST", handlers.skip_task, "skipTask",
                "End a task the workflow waits at as SKIPPED; the workflow goes on from it",
                (InstanceSnapshot, DeletedInstance), access="admin", query=ActionQuery, errors=(404, 409, 503),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}/tasks/{node_id}/complete",
        (
            Operation(
                "POST", handlers.complete_task, "completeTask",
                "End a waiting listener, sensor or trigger as COMPLETED; the workflow goes on from it",
                (InstanceSnapshot, DeletedInstance), access="admin", query=ActionQuery, errors=(404, 409, 503),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/instances/{id}/parameters",
        (
            Operation(
                "PATCH", handlers.patch_parameters, "patchParameters",
                "Merge a JSON object into the runtime parameters of a workflow that has not ended",
                (InstanceSnapshot, DeletedInstance), access="admin", query=ActionQuery, body=dict[str, Any],
                errors=(404, 409, 413, 422, 503),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/templates",
        (
            Operation(
                "GET", handlers.templates, "listTemplates", "The registered templates and their versions",
                list[TemplateInfo], tag="templates",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/templates/{name}/instances",
        (
            Operation(
                "POST", handlers.create_instance, "createInstance",
                "Create a workflow instance of a template, and start it unless submit is false",
                (InstanceSnapshot, InstanceRef), status=201, access="admin",
                body=CreateInstanceRequest, body_required=False, errors=(404, 409, 413, 422, 503),
                description=(
                    "An empty body means every default. Re-creating an existing id returns it "
                    "unchanged. The runtime parameters are one JSON object: any name is a "
                    "parameter. 422 for an id or parameters that cannot be stored, 413 for a "
                    "body over max_request_bytes or parameters over the engine's size limit."
                ),
                tag="templates",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/stats",
        (Operation("GET", handlers.stats, "stats", "The engine's counters", Stats, tag="service"),),
    ),
    Endpoint(
        "/topics",
        (Operation("GET", handlers.topics, "listTopics", "The topic names, sorted", list[str], tag="topics"),),
    ),
    Endpoint(
        "/topics/{name}/messages",
        (
            Operation(
                "GET", handlers.get_messages, "readMessages",
                "Read a topic from an offset (reading is not consuming)", MessagesPage,
                query=MessagesQuery, tag="topics",
            ),
            Operation(
                "POST", handlers.post_message, "postMessage", "Append a message to a topic", Appended,
                status=202, access="admin", body=PostMessageRequest, errors=(409, 413, 422), tag="topics",
            ),
        ),
    ),
    Endpoint(
        "/metrics",
        (
            Operation(
                "GET", handlers.metrics, "metrics", "Prometheus metrics", None, access="metrics",
                query=None, media_type="text/plain", tag="service",
            ),
        ),
    ),
    Endpoint(
        "/openapi.json",
        (
            Operation(
                "GET", docs.openapi_json, "openapi", "This document", None, access="public",
                query=None, media_type="application/json", tag="service",
            ),
        ),
    ),
    Endpoint(
        "/docs",
        (
            Operation(
                "GET", docs.page, "docs", "The API docs page (Swagger UI, served by the worker)",
                None, access="public", query=None, media_type="text/html", tag="service",
            ),
        ),
    ),
    Endpoint(
        "/docs/{asset}",
        (
            Operation(
                "GET", docs.asset, "docsAsset", "A static file of the docs page", None,
                access="public", query=None, errors=(304, 404), media_type=docs.ASSET_MEDIA_TYPES,
                tag="service",
            ),
        ),
    ),
)
