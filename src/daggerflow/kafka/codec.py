"""What the Kafka runtime's internal topics carry, and which partition a key belongs to.

Plain msgspec structs, encoded as MessagePack at the edge (design: data as typed structs,
encoders at the edges). No aiokafka here, so the processor can use it without the extra.

- ``{app}-events``, keyed by instance id: the instance-addressed events any process may send
  (``Create``, ``Submit``, ``Stop``, the operators' ``Retry``, ``Skip``, ``Complete`` and
  ``PatchParameters``, and ``Deliver`` from an index owner), and a bulk job's ``BulkSpec``,
  sent to every partition (keyed ``bulk:<job>``), for each to start its share.
- ``{app}-correlation``, partitioned by correlation (topic, key, value): ``Routed`` listener
  messages (from the listener routers, with their correlation pairs already computed by user
  code) and ``IndexOp`` index changes (from instance owners).

The runtime chooses partitions itself (``partition_for``) and sends with an explicit
partition. The hash is Kafka's default partitioner (murmur2 of the key), the one every Kafka
client uses for keyed messages: a listener topic whose producers key it by the correlation
value, with the application's partition count, is then co-partitioned with the correlation
index, and the worker reads it directly in the partition's task (no routing hop).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..machine.events import Complete, Create, Deliver, PatchParameters, Retry, Skip, Stop, Submit
from ..model.bulk import BulkSpec
from ..model.instance import Correlation
from .partitioner import partition_for_key


def partition_for(key: str, partitions: int) -> int:
    """The partition of an instance id or correlation value: where Kafka's default
    partitioner puts a message keyed by it."""
    return partition_for_key(key.encode(), partitions)


def correlation_key(at: Correlation) -> str:
    # \x1f cannot collide with the fields' own separators in any realistic topic/key name.
    return f"{at.topic}\x1f{at.key}\x1f{at.value}"


def partition_of_correlation(at: Correlation, partitions: int) -> int:
    """By the correlation *value* alone: workflows usually correlate on their own business
    id (the pizza's order id is its instance id), and then the index entry, the listener's
    messages and the instance share a partition, so a match is applied in the same
    transaction instead of being forwarded through the events topic."""
    return partition_for(at.value, partitions)


class Routed(msgspec.Struct, tag="msg", frozen=True):
    """A listener message for the index owner of its ``mappings`` (all on one partition)."""

    topic: str
    partition: int  # of the listener topic: (topic, partition, offset) names the message
    offset: int
    key: str | None
    value: Any
    mappings: list[tuple[str, str]]
    # (match_only_one is a listener's: its index entries carry it, ``IndexOp.only_one``; the
    # field that records of older workers have is ignored, a map struct skipping unknowns)
    message_id: str | None = None


class IndexOp(msgspec.Struct, tag="index", frozen=True):
    """An instance owner adds (``put``) or removes a correlation index entry."""

    at: Correlation
    instance: str
    node: str
    put: bool
    only_one: bool = False  # the node's listener is match_only_one


EventRecord = Create | Submit | Stop | Deliver | Retry | Skip | Complete | PatchParameters | BulkSpec
CorrelationRecord = Routed | IndexOp

_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(EventRecord)
_correlation_decoder = msgspec.msgpack.Decoder(CorrelationRecord)


def encode(record: EventRecord | CorrelationRecord) -> bytes:
    return _encoder.encode(record)


def decode_event(data: bytes) -> EventRecord:
    return _event_decoder.decode(data)


def decode_correlation(data: bytes) -> CorrelationRecord:
    return _correlation_decoder.decode(data)
