"""What a processor reads: the items of its queue, and the settings it runs with.

An item is an event for one instance (``InstanceEvent``), a listener message with its
correlation pairs (``Incoming``), an index change from another partition (``IndexChange``),
an agent's output to commit (``AgentCommit``) or a purge of expired rows (``Purge``). Items
read from a log carry their ``source`` (input partition, offset), committed with the batch.

What a batch sends to the owners of other partitions (Kafka runtime) are ``Forward`` records
in ``WriteBatch.forwards``: an event for an instance (``ForwardEvent``), an index change
(``ForwardIndex``) or a listener message routed to an index owner (``ForwardRouted``). The
stores ignore them; the Kafka runtime turns each into one record of its transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..machine.events import Event
from ..model.bulk import BulkShare, BulkSpec
from ..model.instance import Correlation, Instance
from ..model.records import Message, Outgoing
from ..store.base import WriteBatch
from .observe import PipelineObserver


class ForwardEvent(msgspec.Struct, frozen=True):
    """An event for an instance another partition owns (its ``{app}-events`` partition)."""

    instance: str
    event: Event
    # A forwarded ``Deliver`` when tracing: the ``traceparent`` of the consumer span of the
    # message that matched it, so that the owner's span of the delivery joins that trace.
    trace: str | None = None


class ForwardIndex(msgspec.Struct, frozen=True):
    """An index entry put (``put``) or removed on the partition that owns ``at``."""

    at: Correlation
    instance: str
    node: str
    put: bool
    only_one: bool = False  # the node's listener is match_only_one (``IndexPut.only_one``)


class ForwardRouted(msgspec.Struct, frozen=True):
    """A listener message for correlation partition ``partition`` (``routed`` is the
    runtime's wire record, opaque here), whose index holds some of its pairs."""

    partition: int
    routed: Any


Forward = ForwardEvent | ForwardIndex | ForwardRouted


@dataclass
class InstanceEvent:
    """An event for one instance; ``outbox`` holds what a job sent while it ran."""

    instance: str
    event: Event
    future: asyncio.Future[Any] | None = None
    outbox: list[Outgoing] | None = None
    source: tuple[Any, int] | None = None  # (input partition, offset) it was read from
    trace: str | None = None  # a forwarded delivery's ``ForwardEvent.trace``


@dataclass
class Incoming:
    """A listener message with its correlation pairs already computed by the consumer."""

    consumer: str
    message: Message
    mappings: list[tuple[str, str]]
    message_id: str | None = None
    dead_letter: Outgoing | None = None
    future: asyncio.Future[Any] | None = None
    source: tuple[Any, int] | None = None
    # Kafka runtime, a listener topic read directly: the message's correlation pairs that
    # other partitions index, as forwards (``mappings`` holds this partition's own pairs).
    # They go out in this batch, whatever happens here.
    routes: list[ForwardRouted] = field(default_factory=list)
    # ...and the forward that carries this partition's own pairs through the correlation
    # topic if none of them matches here: an index entry for them may still be on its way
    # in that topic (read in its order, the routed copy finds it). Nothing is recorded for
    # the message here then (no dedupe id, no buffering): its routed copy does that.
    unmatched_route: ForwardRouted | None = None


@dataclass
class IndexChange:
    """A correlation index entry added or removed by an instance owner on another partition
    (Kafka runtime: the index is partitioned by correlation, instances by id)."""

    at: Correlation
    instance: str
    node: str
    put: bool
    source: tuple[Any, int] | None = None
    future: asyncio.Future[Any] | None = None
    only_one: bool = False  # the node's listener is match_only_one (``IndexPut.only_one``)


@dataclass
class AgentCommit:
    """An agent handled messages up to ``next_offset``; commit what it sent with that."""

    consumer: str
    next_offset: int
    outbox: list[Outgoing]
    future: asyncio.Future[Any] | None = None


@dataclass
class Purge:
    """Forget expired dedupe ids and buffered messages in a batch of their own kind, so that
    a changelog gets their tombstones (Kafka runtime; the embedded store purges in place).
    At most ``limit`` of each per batch: the next purge takes the rest."""

    now: float
    seen_ttl: float
    limit: int = 10_000
    future: asyncio.Future[Any] | None = None
    source: None = None


@dataclass
class BulkStart:
    """Start this partition's share of a bulk job: the ids that match its filter now are
    stored with it (``pipeline.bulk``). The future gets the share (an existing one if the
    job was started here already)."""

    spec: BulkSpec
    partition: int = 0
    future: asyncio.Future[BulkShare] | None = None
    source: tuple[Any, int] | None = None


@dataclass
class BulkStep:
    """Act on the next instances of the active bulk jobs (at most each job's batch size),
    beside whatever else the batch holds; queued again after the commit while work is left."""

    future: None = None
    source: None = None


Item = InstanceEvent | Incoming | AgentCommit | IndexChange | Purge | BulkStart | BulkStep

#: Commits a batch somewhere other than the local store alone (the Kafka runtime's
#: transaction); returns what ``Store.commit`` returns.
Committer = Callable[[WriteBatch, float], Awaitable[list[tuple[str, int]]]]


@dataclass(frozen=True)
class Limits:
    """Size limits in bytes (``EngineConfig``'s ``max_*_bytes``, capped on Kafka)."""

    message: int = 1024 * 1024
    parameters: int = 1024 * 1024
    instance: int = 1024 * 1024

    def capped(self, most: int) -> Limits:
        return Limits(min(self.message, most), min(self.parameters, most), min(self.instance, most))


@dataclass
class Settings:
    delete_on_complete: bool = False
    task_update_topic: str | None = None
    unmatched_ttl: Callable[[str], float] = lambda topic: 0.0
    max_batch: int = 1000
    cache_size: int = 20000
    # Seconds between the starts of two commits (Kafka: each is a transaction, whose fixed
    # cost is spread over the batch); 0: commit as soon as the previous commit is done.
    commit_interval: float = 0.0
    # Kafka runtime: which instances and index entries this processor's partition holds.
    # What it does not hold becomes a forward (``WriteBatch.forwards``) to the owner.
    # None (embedded): everything is local.
    owns_instance: Callable[[str], bool] | None = None
    owns_correlation: Callable[[Correlation], bool] | None = None
    limits: Limits = field(default_factory=Limits)
    # Builds the instance a schedule's tick creates (``pipeline.schedules.Instantiate``:
    # template name, instance id, runtime parameters, now); None: ticks create nothing.
    instantiate: Callable[[str, str, dict[str, Any], float], Instance] | None = None
    # The version of a template the engine registers (``machine.Context.registered_version``).
    registered_version: Callable[[str], str | None] | None = None
    # Entries of each instance's history a read shows (``model.history``); 0: none kept.
    history_limit: int = 100
    # Traces and metrics (``telemetry``); None: nothing observes, nothing is recorded.
    observer: PipelineObserver | None = None
    # Kafka runtime: the partition this processor's task holds (None: embedded).
    partition: int | None = None
