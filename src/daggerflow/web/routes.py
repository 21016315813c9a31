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

from ..model.messages import Explanation
from . import console_routes, docs, handlers, message_routes, schedule_routes
from .history import instance_history
from .schemas import (
    ActionQuery,
    Appended,
    BulkAnswer,
    BulkJobInfo,
    BulkListQuery,
    BulkRequest,
    CreateInstanceRequest,
    DeletedInstance,
    DeletedSchedule,
    HistoryPage,
    HistoryQuery,
    InstancePage,
    InstanceRef,
    InstanceSnapshot,
    ListQuery,
    MessagesPage,
    MessagesQuery,
    MigrationRequest,
    MigrationResult,
    NoQuery,
    PostMessageRequest,
    Ready,
    RetryRequest,
    ScheduleInfo,
    ScheduleList,
    ScheduleRequest,
    Stats,
    TemplateInfo,
    WhoAmI,
)
from .schemas_console import (
    ListenerPage,
    ListenersQuery,
    NodeCounts,
    NodeCountsQuery,
    Overview,
    TimerPage,
    TimersQuery,
    Workers,
)
from .schemas_messages import (
    DeadLetterList,
    DeadLettersQuery,
    MessageList,
    MessageQuery,
    MessagesListQuery,
    Replayed,
    ReplayQuery,
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
_SCHEDULES_FORWARD = "On the Kafka runtime every worker is asked for the schedules of its partitions."
_EVERY_WORKER = "On the Kafka runtime every worker is asked and the answers are merged (one that does not answer is left out)."

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
                query=ListQuery, errors=(503,),
                description=_FORWARDS + " 400 for an unknown or malformed filter (InvalidFilter, naming it).",
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
        "/api/v1/bulk",
        (
            Operation(
                "GET", handlers.bulk_jobs, "listBulkJobs",
                "The newest bulk jobs, newest first, each with its state and counts", list[BulkJobInfo],
                query=BulkListQuery, description="On the Kafka runtime every worker is asked.",
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
        "/api/v1/instances/{id}/history",
        (
            Operation(
                "GET", instance_history, "getInstanceHistory",
                "What happened to a workflow, oldest first: each applied event and the status changes it caused",
                HistoryPage, query=HistoryQuery, errors=(404, 503),
                description="Paged: pass a page's `next` as `after` for the next one. The newest "
                "`history_limit` entries are kept; a first entry with event `dropped` says how many older "
                "ones were dropped. " + _FORWARDS,
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
                "GET", handlers.templates, "listTemplates",
                "Every version of every template, with its count of running instances", list[TemplateInfo],
                errors=(503,), tag="templates",
                description=(
                    "The version a worker registers is marked current; older versions are listed while "
                    "instances of them run (embedded: as long as the store keeps them), with the task "
                    "types and listener topics those instances need that a worker lacks. On the Kafka "
                    "runtime every worker is asked and the counts are added."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/templates/{name}/node-counts",
        (
            Operation(
                "GET", console_routes.node_counts, "getTemplateNodeCounts",
                "How many nodes of each dotted name are in each status, over a template's newest instances",
                NodeCounts, query=NodeCountsQuery, errors=(404,), tag="templates",
                description=(
                    "An instance's nodes are counted by their `task_name`, the dotted name the template's "
                    "nodes (GET /api/v1/templates) and a migration's node_map use: `<template>.<process>` for a "
                    "process, `<template>.<process>.<task>` for a task (a successor shared by two branches "
                    "is one name, counted once per node); an instance's node ids differ from instance to "
                    "instance, its names do not. The workflow itself (the root) is not counted. `limit`: how "
                    "many of the newest instances are scanned (`truncated` says there were more); `version` "
                    "narrows to one version. On the Kafka runtime the newest `limit` are those of all workers "
                    "together (instances created at the very time of the `limit`-th newest are all "
                    "counted: `scanned` may exceed `limit` by such ties). 404 for a template no worker registers nor has a version of."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/listeners",
        (
            Operation(
                "GET", console_routes.listeners, "listListeners",
                "Every open listener (the correlation index), oldest first, with counts per topic",
                ListenerPage, query=ListenersQuery, tag="console",
                description=(
                    "A listener is open while its node waits indexed under (topic, key, value); `since` is "
                    "when it started waiting (the node's time_submitted, else time_created). `topics` counts "
                    "the open listeners per topic over the whole filter. " + _EVERY_WORKER
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/timers",
        (
            Operation(
                "GET", console_routes.timers, "listTimers", "Pending timers, soonest first", TimerPage,
                query=TimersQuery, tag="console",
                description=(
                    "A node's timer: `due` (a trigger's or monitor's time), `timeout`, `max_run` (a "
                    "process's run limit), `retry:<job>` (the next attempt). `overdue_by` is now - due, 0 if "
                    "not due yet. " + _EVERY_WORKER
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/messages",
        (
            Operation(
                "GET", message_routes.list_messages, "listMessages",
                "A topic's newest messages, newest first (reading is not consuming)", MessageList,
                query=MessagesListQuery, errors=(404,), tag="messages",
                description=(
                    "Values are cut to their first 500 characters (`truncated`); a value that is not UTF-8 "
                    "is shown as hex (`binary`). On the Kafka runtime the worker reads the topic itself, "
                    "from every partition (or `partition`), without a consumer group; it reads only the "
                    "application's topics and its dead-letter topic (404 for another)."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/messages/{topic}/{offset}",
        (
            Operation(
                "GET", message_routes.explain_message, "explainMessage",
                "One message, whole, and what became of it: the instances it reached, or why none",
                Explanation, query=MessageQuery, errors=(422,), tag="messages",
                description=(
                    "`verdict`: matched, dead_lettered, parse_error (the listener classes cannot map it), "
                    "unread (not read yet), duplicate (its message id was seen before), key_mismatch "
                    "(listeners wait on the topic under other values: `near` lists the closest), "
                    "no_waiter, agent (read by an agent), not_read (no reader), or letter (a record of the "
                    "dead-letter topic). Worked out when asked: the listener classes map the message "
                    "again, and the histories of the instances under its correlation values are searched "
                    "for its delivery (`notes` says where a search stopped short). On the Kafka runtime "
                    "`partition` is required for a topic of several partitions (422)."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/dead-letters",
        (
            Operation(
                "GET", message_routes.dead_letters, "listDeadLetters",
                "The newest dead letters, newest first: the message, who gave up on it and why",
                DeadLetterList, query=DeadLettersQuery, tag="messages",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/dead-letters/{offset}/replay",
        (
            Operation(
                "POST", message_routes.replay, "replayDeadLetter",
                "Append a dead letter's message to its topic again, as it was", Replayed,
                status=202, access="admin", query=ReplayQuery, errors=(404, 413), tag="messages",
                description=(
                    "The key and the exact value bytes are appended again, with the header "
                    "`daggerflow-replay-of: <dead-letter topic>@<offset>`; the original headers are not "
                    "kept in a dead letter. It is read like any new message: a listener's message id "
                    "still deduplicates it, so a replay of a message that was delivered is ignored."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/overview",
        (
            Operation(
                "GET", console_routes.overview, "getOverview",
                "The dashboard in one read: counts by template and status, failures, waiting, throughput",
                Overview, tag="console",
                description=(
                    "Counts come from the store's indexes (no instance is read); the listeners and timers "
                    "from the instances that have one. " + _EVERY_WORKER
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/workers",
        (
            Operation(
                "GET", console_routes.workers, "listWorkers",
                "The workers: each one's partitions and counters; on Kafka, who owns each partition",
                Workers, tag="console",
                description=(
                    "Every worker that owns a partition is asked (a worker that does not answer is left out "
                    "of `workers`, and its partitions say `no_answer`). Embedded: this process, and "
                    "`partitions` is null."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/migrations",
        (
            Operation(
                "POST", handlers.migrate, "migrateInstances",
                "Move running instances of a template to another version (or, dry, report what would happen)",
                MigrationResult, access="admin", query=ActionQuery, body=MigrationRequest,
                errors=(404, 413, 422, 503), tag="templates",
                description=(
                    "Node states are carried over by name, or by node_map (old name -> new name); new "
                    "nodes start NOT_STARTED. An instance is refused, with the reason, while a task of it "
                    "runs user code, when a waiting listener or the node the workflow is at has no "
                    "counterpart in the target version. The target is the version the worker registers. "
                    "400 for an unknown or malformed filter (as in the listing and bulk actions); every "
                    "match is looked at, a page at a time."
                ),
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
        "/api/v1/schedules",
        (
            Operation(
                "GET", schedule_routes.list_schedules, "listSchedules",
                "Every schedule, with its next fire times, paused flag and last fired tick", ScheduleList,
                errors=(503,), tag="schedules", description=_SCHEDULES_FORWARD,
            ),
            Operation(
                "POST", schedule_routes.put_schedule, "putSchedule",
                "Create or update a schedule by name (an identical definition changes nothing)", ScheduleInfo,
                access="admin", query=ActionQuery, body=ScheduleRequest, errors=(400, 404, 413, 422, 503),
                tag="schedules", description=(
                    "400 for a cron expression, interval, time zone, catch-up mode or name that cannot run; "
                    "404 for a template that is not registered. A schedule defined in code "
                    "(engine.schedule) is applied again at every start and wins over this."
                ),
            ),
        ),
    ),
    Endpoint(
        "/api/v1/schedules/{name}",
        (
            Operation(
                "GET", schedule_routes.get_schedule, "getSchedule", "One schedule", ScheduleInfo,
                errors=(400, 404, 503), tag="schedules", description=_SCHEDULES_FORWARD,
            ),
            Operation(
                "DELETE", schedule_routes.delete_schedule, "deleteSchedule",
                "Delete a schedule (the instances it created stay)", DeletedSchedule, access="admin",
                query=ActionQuery, errors=(400, 404, 503), tag="schedules",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/schedules/{name}/pause",
        (
            Operation(
                "POST", schedule_routes.pause_schedule, "pauseSchedule", "Pause a schedule: no tick fires",
                ScheduleInfo, access="admin", query=ActionQuery, errors=(400, 404, 503), tag="schedules",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/schedules/{name}/resume",
        (
            Operation(
                "POST", schedule_routes.resume_schedule, "resumeSchedule",
                "Resume a schedule; the ticks that came due while paused follow its catch_up mode",
                ScheduleInfo, access="admin", query=ActionQuery, errors=(400, 404, 503), tag="schedules",
            ),
        ),
    ),
    Endpoint(
        "/api/v1/whoami",
        (
            Operation(
                "GET", handlers.whoami, "whoami", "The caller's scope and what kind of worker this is",
                WhoAmI, tag="service",
                description="Any valid token may ask (401 without one when the worker checks tokens). "
                "The console calls it to decide what to show.",
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
