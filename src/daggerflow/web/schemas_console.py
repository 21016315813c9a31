"""The request and response structs of the console's reads (``web.console_routes``): open
listeners, pending timers, the overview and a template's node counts. The items themselves
are ``model.console``'s structs, which the internal routes also carry."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from ..model.console import ListenerItem, StatusCount, Throughput, TimerItem, TopicCount
from ..model.workers import PARTITION_STATES, PartitionRow, WorkerPart
from .schemas import MAX_OFFSET, Offset

PageLimit = Annotated[int, Meta(ge=1, le=1000, description="page size (1..1000)")]
First = Annotated[int, Meta(ge=1, le=MAX_OFFSET)]
NodeCountsLimit = Annotated[int, Meta(ge=1, le=100_000, description="how many of the newest instances to scan")]


class ListenersQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    topic: Annotated[str, Meta(min_length=1, description="only listeners on this topic")] | None = None
    template: Annotated[str, Meta(min_length=1, description="only listeners of this template's instances")] | None = None
    limit: PageLimit = 100
    offset: Offset = 0


class TimersQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    overdue: Annotated[bool, Meta(description="only timers already due (due < now)")] = False
    limit: PageLimit = 100
    offset: Offset = 0


class NodeCountsQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    version: Annotated[str, Meta(min_length=1, description="only instances of this version (default: all)")] | None = None
    limit: NodeCountsLimit = 10_000


class InternalListenersQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    topic: str | None = None
    template: str | None = None
    first: First = 100


class InternalTimersQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    overdue: bool = False
    first: First = 100


class InternalNodeCountsQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    template: Annotated[str, Meta(min_length=1)]
    version: str | None = None
    limit: NodeCountsLimit = 10_000
    created_after: float | None = None  # only instances created at or after it
    times: bool = False  # with the counted instances' creation times


class ListenerPage(Struct, kw_only=True):
    """Open listeners, oldest first (by when each started waiting)."""

    items: list[ListenerItem]
    total: Annotated[int, Meta(description="open listeners that match the filter")]
    limit: int
    offset: int
    next_offset: int | None
    topics: Annotated[list[TopicCount], Meta(description="open listeners per topic, over the whole filter")]


class TimerPage(Struct, kw_only=True):
    """Pending timers, soonest first."""

    items: list[TimerItem]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class Overview(Struct, kw_only=True):
    """The dashboard in one read."""

    at: Annotated[float, Meta(description="when it was read (epoch seconds)")]
    counts: Annotated[list[StatusCount], Meta(description="instances by template and status")]
    failed_last_hour: Annotated[int, Meta(description="instances in FAILURE last updated within the hour")]
    listeners_open: int
    oldest_listeners: Annotated[list[ListenerItem], Meta(description="the 10 that have waited longest")]
    timers_overdue: int
    oldest_overdue: Annotated[list[TimerItem], Meta(description="the 10 most overdue timers")]
    throughput: Annotated[
        Throughput,
        Meta(description="counters since each worker started, summed over workers: instances started, "
             "ended COMPLETED, ended FAILURE (0 with metrics=False), and transitions applied; a rate is "
             "the difference of two samples over their `at`"),
    ]  # fmt: skip
    workers: Annotated[int, Meta(description="how many workers answered")]


class Workers(Struct, kw_only=True):
    """The workers that answered and, on Kafka, the owner of each partition."""

    workers: Annotated[
        list[WorkerPart],
        Meta(description="every worker that answered, the one asked first: its id, REST URL, runtime, version, "
             "start time, the partitions it processes now, its counters (queued inputs, running jobs, "
             "pending timers, transitions since it started) and `lag`: by topic, the messages its readers "
             "have yet to read (on Kafka from the consumers' own positions and ends, no broker request)"),
    ]  # fmt: skip
    partitions: Annotated[
        list[PartitionRow] | None,
        Meta(description="Kafka: each partition's owner as the owners topic says, and its `state`: "
             + "; ".join(f"{k} ({v})" for k, v in PARTITION_STATES.items()) + ". null embedded"),
    ]  # fmt: skip


class NodeCounts(Struct, kw_only=True):
    template: str
    version: str | None
    scanned: Annotated[int, Meta(description="instances whose nodes were counted")]
    truncated: Annotated[bool, Meta(description="the template has more instances than were scanned")]
    nodes: Annotated[dict[str, dict[str, int]], Meta(description="dotted node name -> status -> count")]
