"""Records in and out of Kafka: consumed records as the pipeline's ``Message``, and the one
outgoing-record type (``OutRecord``) that every producer path sends: outbox messages, dead
letters, forwards to other partitions' owners (``ForwardEncoder``), listener routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
from aiokafka import TopicPartition

from ..model.instance import Correlation
from ..model.records import Message, Outgoing
from ..pipeline.items import Forward, ForwardEvent, ForwardIndex, ForwardRouted
from . import codec
from .admin import InternalTopics


class OutRecord(msgspec.Struct, frozen=True):
    """A record to produce. ``partition`` None: Kafka's default partitioner for a keyed
    record (where any Kafka client would put it), the producer's own choice for one without
    a key. A msgspec struct: built once per outgoing record, it must stay cheap."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] | None = None


#: Delivery futures of ``send_many``: one per (topic, partition) batch, with its record count.
Sent = list[tuple[asyncio.Future[Any], int]]


def as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def as_text(value: bytes | None) -> str | bytes | None:
    """Message values as the embedded runtime hands them to user code: text when UTF-8."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def text_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in headers or ()}


def outgoing_record(out: Outgoing) -> OutRecord:
    headers = [(k, v.encode()) for k, v in out.headers.items()] or None
    return OutRecord(out.topic, as_bytes(out.key), as_bytes(out.value), None, headers)


def message_of(tp: TopicPartition, record: Any) -> Message:
    """A consumed record as the runtime's ``Message`` (values as text when UTF-8)."""
    key = None if record.key is None else record.key.decode("utf-8", "replace")
    return Message(tp.topic, record.offset, key, as_text(record.value), text_headers(record.headers),
                   record.timestamp / 1000, tp.partition)  # fmt: skip


def last_offset(sent: Sent, topic: str, partition: int) -> int:
    """The offset of the last record sent to ``topic``/``partition`` (deliveries done)."""
    last = -1
    for fut, count in sent:
        meta = fut.result()
        if meta.topic == topic and meta.partition == partition:
            last = max(last, meta.offset + count - 1)
    return last


class ForwardEncoder:
    """A batch's forwards (``pipeline.items.Forward``) as records of the internal topics,
    on the partition that owns their instance or correlation value."""

    def __init__(self, topics: InternalTopics, partitions: int) -> None:
        self.events = topics.events.name
        self.correlation = topics.correlation.name
        self.partitions = partitions

    def record(self, forward: Forward) -> OutRecord:
        match forward:
            case ForwardEvent(instance, event, trace):
                return OutRecord(self.events, instance.encode(), codec.encode(event),  # type: ignore[arg-type]
                                 codec.partition_for(instance, self.partitions),
                                 None if trace is None else [("traceparent", trace.encode())])  # fmt: skip
            case ForwardIndex(at, instance, node, put, only_one):
                op = codec.IndexOp(at, instance, node, put, only_one)
                return OutRecord(self.correlation, codec.correlation_key(at).encode(), codec.encode(op),
                                 codec.partition_of_correlation(at, self.partitions))  # fmt: skip
            case ForwardRouted(partition, routed):
                return self.routed(partition, routed)
        raise TypeError(f"not a forward: {forward!r}")

    def routed(self, partition: int, routed: codec.Routed) -> OutRecord:
        """A listener message for correlation partition ``partition`` (keyed by its first pair)."""
        first = Correlation(routed.topic, *routed.mappings[0])
        return OutRecord(
            self.correlation, codec.correlation_key(first).encode(), codec.encode(routed), partition
        )
