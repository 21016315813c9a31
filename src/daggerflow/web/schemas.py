"""The REST API's wire shapes: every request body, query string and response as a msgspec
Struct. The handlers decode into and encode from these, and ``web.openapi`` derives the
OpenAPI document from the same classes, so the contract cannot drift from the code.

Request shapes refuse unknown fields and wrong types (``forbid_unknown_fields``, msgspec's
strict JSON decoding); query strings are converted from text (``strict=False``) into the
same kind of struct, so ``limit=abc`` and ``statuss=`` are refused, not ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from ..model.status import TaskStatusEnum

MAX_LIMIT = 1000
MAX_OFFSET = 2**63 - 1  # SQLite's largest INTEGER: bigger offsets would be a 500, not a 400
STATUSES = tuple(s.value for s in TaskStatusEnum)

Limit = Annotated[
    int, Meta(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}")
]
Offset = Annotated[int, Meta(ge=0, le=MAX_OFFSET, description="how many items to skip")]
StatusFilter = Annotated[
    str,
    Meta(
        description="only instances in this status (case-insensitive)",
        extra_json_schema={"enum": [*STATUSES, *(s.lower() for s in STATUSES)]},
    ),
]


def _status(status: str | None) -> str | None:
    if status is None:
        return None
    upper = status.upper()
    if upper not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    return upper


# Query strings -------------------------------------------------------------------------


Time = Annotated[str, Meta(description="epoch seconds, or an ISO-8601 time (UTC without a zone)")]
SORTS = ("-created", "created", "-updated", "updated")


class ListQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    """Filters and paging of the instance listings; every filter given must hold (AND).
    Besides these, ``param.NAME=VALUE`` (repeatable for different names) keeps instances
    whose runtime parameter NAME equals VALUE (``web.openapi`` documents it)."""

    status: StatusFilter | None = None
    template: Annotated[str, Meta(description="only instances of this template")] | None = None
    version: Annotated[str, Meta(description="only instances of this template version")] | None = None
    waiting_on: Annotated[str, Meta(description="only instances with a listener waiting on this topic")] | None = None
    correlation: (
        Annotated[str, Meta(description="only instances with a waiting listener indexed under this value")] | None
    ) = None
    created_after: Annotated[Time, Meta(description="created at or after this time")] | None = None
    created_before: Annotated[Time, Meta(description="created before this time")] | None = None
    updated_after: Annotated[Time, Meta(description="last changed at or after this time")] | None = None
    sort: (
        Annotated[str, Meta(description="the order: newest first by default", extra_json_schema={"enum": list(SORTS)})]
        | None
    ) = None
    limit: Limit = 100
    offset: Offset = 0

    def __post_init__(self) -> None:
        self.status = _status(self.status)


class InternalListQuery(ListQuery, forbid_unknown_fields=True, kw_only=True):
    """A merged page needs each worker's first offset+limit: no MAX_LIMIT here."""

    limit: Annotated[int, Meta(ge=1, le=MAX_OFFSET)] = 100


class CountQuery(ListQuery, forbid_unknown_fields=True, kw_only=True):
    """The filters of a listing (paging is accepted and ignored)."""


class InternalBulkQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    active: bool = False
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50


class MessagesQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    from_: Annotated[int, Meta(ge=0, le=MAX_OFFSET, description="first offset to read")] = field(
        name="from", default=0
    )
    limit: Limit = 100


class HistoryQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    """Paging of an instance's history, oldest first."""

    limit: Limit = 100
    after: Annotated[
        int, Meta(ge=-1, le=MAX_OFFSET, description="only entries with a seq above this one (the previous page's next)")
    ] = -1


class NoQuery(Struct, forbid_unknown_fields=True):
    """A route that takes no query parameters."""


# Request bodies ------------------------------------------------------------------------


class CreateInstanceRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/templates/{name}/instances``; an empty body means all defaults."""

    id: (
        Annotated[
            str,
            Meta(
                description="the instance id (1 to 255 bytes of UTF-8, printable, no '/', not '.' or "
                "'..'; README, Limits); a UUID is generated when absent"
            ),
        ]
        | int
        | None
    ) = None
    runtime_parameters: Annotated[
        dict[str, Any],
        Meta(description="the workflow's runtime parameters: any names, any JSON values"),
    ] = field(default_factory=dict)
    submit: Annotated[bool, Meta(description="start the workflow at once (else NOT_STARTED)")] = True
    partition_key_lookup: (
        Annotated[str, Meta(description="the runtime parameter whose value places the instance")] | None
    ) = None


class RetryRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/instances/{id}/retry``; an empty body retries with the parameters as they are."""

    runtime_parameters: (
        Annotated[dict[str, Any], Meta(description="merged into the runtime parameters before the retry")] | None
    ) = None


class ActionQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    """Who asks for an operator's action, for the instance's history."""

    actor: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$",
                               description="who acts (default: api)")] = "api"  # fmt: skip


class BulkRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/instances/bulk``: stop or retry every instance the filter matches."""

    action: Annotated[Literal["stop", "retry"], Meta(description="what to do to each matched instance")]
    filter: Annotated[
        dict[str, Any],
        Meta(description="the list query's filters as one JSON object: status, template, version, "
             "param.NAME, waiting_on, correlation, created_after, created_before, updated_after"),
    ] = field(default_factory=dict)  # fmt: skip
    dry_run: Annotated[bool, Meta(description="only count the matched instances")] = False
    batch_size: Annotated[
        int, Meta(ge=1, le=1000, description="instance events per pipeline batch and partition")
    ] | None = None
class ScheduleRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/schedules``: create or update a schedule by name (exactly one of
    ``cron`` and ``every``)."""

    name: Annotated[str, Meta(description="the schedule's name (1 to 200 bytes, printable, no '/'); its "
                                          "instances are NAME-YYYYmmddTHHMMSSZ (the tick in UTC)")]  # fmt: skip
    template: Annotated[str, Meta(description="the name of a registered template")]
    cron: Annotated[str, Meta(description="a five-field cron expression, e.g. '*/5 * * * *', in timezone")] | None = None
    every: Annotated[int, Meta(description="seconds between ticks, aligned to the Unix epoch")] | None = None
    timezone: Annotated[str, Meta(description="an IANA time zone the cron expression is read in")] = "UTC"
    catch_up: Annotated[str, Meta(description="ticks missed while no worker ran it or it was paused: skip "
                                              "them, fire the latest one, or fire all (at most 100)",
                                  extra_json_schema={"enum": ["skip", "one", "all"]})] = "skip"  # fmt: skip
    runtime_parameters: Annotated[dict[str, Any], Meta(description="each instance's runtime parameters")] = field(
        default_factory=dict
    )
    paused: Annotated[bool, Meta(description="pause or resume it; absent: as it is (new: running)")] | None = None


class PostMessageRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /topics/{name}/messages``: a string value is stored as given, any other JSON
    value as its JSON text."""

    value: Annotated[Any, Meta(description="the message value: a string, or any JSON value")]
    key: str | None = None
    headers: dict[str, str] | None = None


# Responses -----------------------------------------------------------------------------


class ErrorBody(Struct, kw_only=True):
    """Every error answer: a message, the HTTP status, and the engine error's class name
    when an engine error caused it; ``filter`` names the instance filter an
    ``InvalidFilter`` (400) is about."""

    error: str
    status: int
    type: str | UnsetType = UNSET
    filter: str | UnsetType = UNSET


class Ready(Struct):
    is_ready: bool


class WhoAmI(Struct, kw_only=True):
    """What the caller may do here, and what kind of worker this is (the console asks)."""

    auth: Annotated[bool, Meta(description="whether this worker checks API tokens")]
    scope: Annotated[str, Meta(description="the caller's scope: admin or read (admin when auth is off)")]
    runtime: Annotated[str, Meta(description="embedded or kafka")]
    version: Annotated[str, Meta(description="the daggerflow version of the worker")]
    test_messages: Annotated[
        bool, Meta(description="whether the console offers to send test messages (console_test_messages)")
    ]


class Status(Struct):
    code: str
    value: str


class NodeTimer(Struct, kw_only=True):
    purpose: Annotated[str, Meta(description="what the timer is for: due, timeout, max_run, retry:<job>...")]
    due: Annotated[float, Meta(description="epoch seconds")]


class TaskSnapshot(Struct, kw_only=True):
    """One node of a workflow's tree, in Dagger's field names."""

    id: str
    task_name: str
    task_type: str
    kind: str
    type_name: str | None
    parent_id: str | None
    status: Status
    time_created: float
    time_submitted: float
    time_completed: float
    next_dags: list[str]
    root_dag: str | None
    attempts: int
    parallel_child_task_list: list[str] | UnsetType = UNSET
    operator_type: str | UnsetType | None = UNSET
    process_name: str | UnsetType = UNSET
    topic: str | UnsetType = UNSET
    correlatable_key: str | UnsetType = UNSET
    time_to_execute: float | UnsetType = UNSET
    error: str | UnsetType = UNSET
    traceback: str | UnsetType | None = UNSET
    correlation_value: Annotated[
        str, Meta(description="the value a waiting listener is indexed under (with its correlatable_key)")
    ] | UnsetType = UNSET
    timers: Annotated[list[NodeTimer], Meta(description="the node's pending timers")] | UnsetType = UNSET


class InstanceSnapshot(TaskSnapshot, kw_only=True):
    """A workflow: its root node's fields plus the instance's, and every other node."""

    template_name: str
    template_version: str
    partition_key_lookup: str | None
    runtime_parameters: dict[str, Any]
    update_count: int
    lastupdated: float
    tasks: dict[str, TaskSnapshot]
    history_seq: Annotated[
        int, Meta(description="the seq the next history entry will have: it grows whenever something happens")
    ] = 0


class InstanceSummary(Struct, kw_only=True):
    id: str
    template_name: str
    status: Status
    time_created: float
    time_completed: float
    lastupdated: float
    update_count: int


class InstancePage(Struct, kw_only=True):
    items: list[InstanceSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class InstanceRef(Struct, kw_only=True):
    """The answer of a create when the instance cannot be read back at once (deleted on
    completion already, or not yet readable from the worker that owns it)."""

    id: str


class DeletedInstance(Struct, kw_only=True):
    """The answer of a stop when the instance was deleted on completion."""

    id: str
    deleted: bool


class TemplateNode(Struct, kw_only=True, omit_defaults=True):
    name: Annotated[str, Meta(description="the node's dotted name, as instances name it (and node_map uses)")]
    kind: str
    type: Annotated[str, Meta(description="the registered task type")] | None = None
    topic: str | None = None
    parent: Annotated[str | None, Meta(description="the dotted name of the process or parallel it is in")]
    next: Annotated[list[str], Meta(description="its successors' dotted names")]
    children: Annotated[list[str], Meta(description="a process's first task, a parallel's members")]
    operator: Annotated[str, Meta(description="a parallel's operator type")] | None = None
    correlatable_key: Annotated[str, Meta(description="a listener's correlatable key")] | None = None
    process: Annotated[str | None, Meta(description="the dotted name of the process it belongs to")]


class TemplateInfo(Struct, kw_only=True):
    """One version of a template: the registered one (``current``) or one that running
    instances (or, embedded, the store) still know."""

    name: str
    version: Annotated[str, Meta(description="the content hash of the template's definition")]
    current: Annotated[bool, Meta(description="the version this worker's code registers")] = False
    running: Annotated[int, Meta(description="instances of this version that have not ended (every worker)")] = 0
    nodes: list[TemplateNode] = field(default_factory=list)
    missing_task_types: Annotated[
        list[str], Meta(description="task types its running instances need that a worker does not register")
    ] = field(default_factory=list)
    missing_topics: Annotated[
        list[str], Meta(description="listener topics its running instances wait on that a worker does not read")
    ] = field(default_factory=list)


class MigrationRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/migrations``: move running instances to another version of their template."""

    template: Annotated[str, Meta(min_length=1, description="the template's name")]
    from_version: Annotated[str, Meta(min_length=1, description="the version the instances are at")]
    to_version: (
        Annotated[str, Meta(description="the target version (default and only choice: the registered one)")] | None
    ) = None
    node_map: Annotated[
        dict[str, str], Meta(description="old node name -> new node name, where names differ")
    ] = field(default_factory=dict)
    filter: Annotated[
        dict[str, Any], Meta(description="only instances that match (the keys of the instance listing)")
    ] = field(default_factory=dict)
    dry_run: Annotated[bool, Meta(description="report what would happen, change nothing")] = False


class MigrationInstance(Struct, kw_only=True, omit_defaults=True):
    id: str
    action: Annotated[str, Meta(extra_json_schema={"enum": ["migrate", "refuse"]})]
    reason: Annotated[str, Meta(description="why it is refused")] | None = None
    sent: Annotated[bool, Meta(description="handed to the worker that owns it (Kafka)")] = False


class MigrationResult(Struct, kw_only=True):
    template: str
    from_version: str
    to_version: str
    dry_run: bool
    matched: int
    migrated: int
    refused: int
    instances: list[MigrationInstance]


class ScheduleInfo(Struct, kw_only=True):
    """A schedule: its definition, whether it is paused, its next ticks and its last one."""

    name: str
    template: str
    cron: str | None
    every: int | None
    timezone: str
    catch_up: str
    runtime_parameters: dict[str, Any]
    paused: bool
    next_fire_times: Annotated[list[str], Meta(description="the next ticks (ISO 8601, in timezone); none "
                                                           "while paused")]  # fmt: skip
    next_due: Annotated[float, Meta(description="the first tick not fired yet (epoch seconds)")] | None
    last_fired: Annotated[str, Meta(description="the last tick fired (ISO 8601, in timezone)")] | None
    last_instance: Annotated[str, Meta(description="the instance the last fired tick created")] | None
    fired: Annotated[int, Meta(description="instances created")]
    missed: Annotated[int, Meta(description="ticks passed over by catch_up")]
    last_error: str | None
    created: float
    updated: float
    updated_by: Annotated[str, Meta(description="who last changed it (api, cli, code, ...)")] | None


class ScheduleList(Struct, kw_only=True):
    items: list[ScheduleInfo]


class DeletedSchedule(Struct, kw_only=True):
    name: str
    deleted: bool


class Stats(Struct, kw_only=True):
    running: bool
    transitions: int
    batches: int
    queued: int
    jobs_running: int
    timers: int
    partitions: list[int] | UnsetType = UNSET  # the Kafka runtime's assigned partitions


class BulkAnswer(Struct, kw_only=True, omit_defaults=True):
    """A dry run's count, or the job a real run started (its progress: ``/api/v1/bulk/{job}``)."""

    matched: int
    job: str | None = None


class BulkShareInfo(Struct, kw_only=True):
    partition: int
    matched: int
    done: int
    failed: int
    remaining: int
    finished: float | None


class BulkJobInfo(Struct, kw_only=True):
    """A bulk job's progress, added up over the partitions that reported (``shares``)."""

    job: str
    action: str
    filter: dict[str, Any]
    actor: str | None
    state: Annotated[str, Meta(
        description="incomplete: some partitions have no share a minute after the start (partitions_missing); "
                    "the same bulk call sends the start again",
        extra_json_schema={"enum": ["starting", "running", "done", "incomplete"]},
    )]  # fmt: skip
    created: float
    finished: float | None
    matched: int
    done: int
    failed: int
    remaining: int
    errors: Annotated[list[str], Meta(description="why some instances were not acted on (a sample)")]
    partitions: int
    shares: list[BulkShareInfo]
    partitions_missing: Annotated[int, Meta(description="partitions with no share of the job (yet)")] = 0


class BulkListQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=1000, description="how many of the newest jobs")] = 50


class Appended(Struct, kw_only=True):
    topic: str
    offset: int


class TopicMessage(Struct, kw_only=True):
    offset: int
    key: str | None
    value: Any
    timestamp: float
    headers: dict[str, str]


class MessagesPage(Struct, kw_only=True):
    messages: list[TopicMessage]
    next: int


class StatusChange(Struct, kw_only=True):
    node: str
    from_: str = field(name="from")
    to: str


class SentMessage(Struct, kw_only=True):
    """A message a job sent, as its history entry keeps it."""

    topic: str
    key: str | None
    size: Annotated[int, Meta(description="the value's size in bytes")]
    value: Annotated[str, Meta(description="the value's first 200 characters")]


class HistoryItem(Struct, kw_only=True, omit_defaults=True):
    """One entry of an instance's history: an applied event and the status changes it
    caused. ``event`` is the kind (create, submit, stop, deliver, done, failed, timer, retry,
    skip, complete, patch), or ``dropped`` for the marker that says how many older entries
    were dropped (``dropped``)."""

    seq: int
    time: float
    event: str
    node: str | None = None
    changes: list[StatusChange] = field(default_factory=list)
    job: Annotated[str, Meta(description="the user call that ended (execute, on_message, ...)")] | None = None
    attempt: Annotated[int, Meta(description="the attempts of the event's node after it")] | None = None
    error: Annotated[str, Meta(description="the error's first line")] | None = None
    actor: Annotated[str, Meta(description="who asked for a manual action")] | None = None
    topic: str | None = None
    offset: Annotated[int, Meta(description="the offset of the listener message that matched")] | None = None
    partition: Annotated[int, Meta(description="its partition (Kafka)")] | None = None
    detail: Annotated[str, Meta(description="a timer's purpose, the patched parameter names")] | None = None
    dropped: int = 0
    sent: Annotated[
        list[SentMessage], Meta(description="the messages the job sent (done), each value cut to 200 characters")
    ] = field(default_factory=list)


class HistoryPage(Struct, kw_only=True):
    items: list[HistoryItem]
    next: Annotated[int, Meta(description="the `after` of the next page; null on the last")] | None


def as_struct(data: Any, kind: type[Any]) -> Any:
    """A snapshot dict as its response struct: what does not fit the contract fails here."""
    return msgspec.convert(data, kind)
