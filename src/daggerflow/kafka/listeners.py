"""Listener messages on Kafka: matched by the index owners (design.md §3, two hops).

A listener topic co-partitioned with the correlation index is read by the main group: the
task of its partition matches the pairs it indexes itself and forwards the others
(``direct_items``). Any other listener topic has a consumer group of its own whose stateless
loop (``route_handler``) sends each message to the correlation partitions indexing its pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import TopicPartition

from ..model.instance import Correlation
from ..model.records import Message
from ..pipeline.ingress import ListenerMapper, map_messages
from ..pipeline.items import ForwardRouted, Incoming, Item
from . import codec
from .admin import InternalTopics
from .compat import partition_state
from .records import ForwardEncoder, OutRecord, message_of, outgoing_record

log = logging.getLogger("daggerflow.kafka")

#: Headers a routed copy of a listener message keeps (its consumer span links to them).
_TRACE_HEADERS = ("traceparent", "tracestate")

#: A stateless loop's work on one fetched chunk of a partition: the records to commit with it.
ChunkHandler = Callable[[TopicPartition, list[Any]], Awaitable[list[OutRecord]]]


def listener_group(app: str, topic: str) -> str:
    """The consumer group of a listener topic's router (and the consumer its dead letters name)."""
    return f"{app}.listener.{topic}"


class ListenerRouting:
    def __init__(self, app: str, topics: InternalTopics, partitions: int, forwards: ForwardEncoder) -> None:
        self.app = app
        self.topics = topics
        self.partitions = partitions
        self.forwards = forwards
        self.consumer: Any = None  # the main group's (direct topics only), once started
        #: listener topics co-partitioned with the correlation index, read by the main group
        self.direct: dict[str, ListenerMapper] = {}

    async def choose_direct(
        self, producer: Any, listeners: Mapping[str, list[type]], auto_offset_reset: str
    ) -> list[str]:
        """Pick the listener topics the main group reads; return the others (routed).

        A listener topic with the application's partition count is co-partitioned with the
        correlation index (both use Kafka's default partitioner): the main group reads it, and
        a message keyed by its correlation value is matched without a routing hop. (The main
        group starts new partitions at the earliest offset, so with "latest" the topics keep
        their own groups.)"""
        for topic, classes in listeners.items():
            if (
                auto_offset_reset == "earliest"
                and len(await producer.partitions_for(topic)) == self.partitions
            ):
                self.direct[topic] = ListenerMapper(topic, classes)
        if self.direct:
            log.info("listener topics read by the partition tasks: %s", sorted(self.direct))
        return [t for t in listeners if t not in self.direct]

    def routes(
        self, mapper: ListenerMapper, msg: Message, pairs: list[tuple[str, str]], message_id: str | None
    ) -> dict[int, codec.Routed]:
        """The message for each correlation partition that indexes some of its pairs."""
        n = self.partitions
        by_partition: dict[int, list[tuple[str, str]]] = {}
        for pair in pairs:
            at = Correlation(mapper.topic, pair[0], pair[1])
            by_partition.setdefault(codec.partition_of_correlation(at, n), []).append(pair)
        assert msg.partition is not None
        topic = mapper.topic
        trace = {k: v for k in _TRACE_HEADERS if (v := msg.headers.get(k)) is not None} or None
        return {
            part: codec.Routed(topic, msg.partition, msg.offset, msg.key, msg.value, found, message_id, trace)
            for part, found in by_partition.items()
        }

    async def direct_items(
        self, mapper: ListenerMapper, tp: TopicPartition, records: list[Any]
    ) -> list[Item]:
        """A listener topic read directly by the task of its partition (co-partitioned with
        the correlation index): this partition's pairs are matched here, the others go to
        their index owners as forwards in the same transaction, with the input offset."""
        items: list[Item] = []
        group = listener_group(self.app, mapper.topic)
        current = self.index_current(tp)
        messages = [message_of(tp, r) for r in records]
        for msg, mapped in zip(messages, await map_messages(mapper, messages), strict=True):
            source = (tp, msg.offset)
            if mapped.error is not None:
                letter = mapped.letter(self.topics.dead_letter.name, msg, group, partition=tp.partition)
                items.append(Incoming("", msg, [], dead_letter=letter, source=source))
                continue
            routed = self.routes(mapper, msg, mapped.pairs, mapped.message_id)
            # This partition's own pairs are matched here only if every index change sent to
            # it before this message was read is applied (else they take the routed way).
            own = routed.pop(tp.partition, None) if current else None
            routes = [ForwardRouted(part, r) for part, r in routed.items()]
            # (no pair of its own: nothing to deduplicate here; the owners do, with the routes)
            items.append(Incoming("", msg, list(own.mappings) if own else [],
                                  mapped.message_id if own else None, source=source, routes=routes,
                                  unmatched_route=None if own is None else ForwardRouted(tp.partition, own)))  # fmt: skip
        return items

    def index_current(self, listener: TopicPartition) -> bool:
        """Whether task p has been handed every record of its correlation partition that was
        committed before the listener records just fetched from ``listener`` were produced.

        A listener topic read directly and the correlation topic are two inputs of one task,
        with no order between them: an index change committed before a message was sent can
        still be unread. It is read when the correlation partition's position is at its last
        stable offset, and that offset was polled no earlier than the listener partition was
        (so after the message was produced)."""
        consumer = self.consumer
        index = TopicPartition(self.topics.correlation.name, listener.partition)
        try:
            lso = consumer.last_stable_offset(index)
            polled = consumer.last_poll_timestamp(index)
            listener_polled = consumer.last_poll_timestamp(listener)
            if lso is None or polled is None or listener_polled is None or polled < listener_polled:
                return False
            # The fetch position, without waiting: ``consumer.position()`` waits (up to the
            # request timeout) for a position being reset, and this runs in the fetch loop of
            # every task. (aiokafka's subscription state, as ``consumer.position`` reads it.)
            state = partition_state(consumer, index)
            return bool(state is not None and state.has_valid_position and state.position >= lso)
        except Exception:  # not assigned (moving): route
            return False

    def route_handler(self, topic: str, classes: list[type]) -> ChunkHandler:
        """A listener topic that is not co-partitioned with the correlation index (another
        partition count): its own consumer group re-routes each message to the index owners."""
        mapper = ListenerMapper(topic, classes)
        dead = self.topics.dead_letter.name
        group = listener_group(self.app, topic)
        routed_record = self.forwards.routed

        async def route(tp: TopicPartition, records: list[Any]) -> list[OutRecord]:
            outs: list[OutRecord] = []
            messages = [message_of(tp, r) for r in records]
            for msg, mapped in zip(messages, await map_messages(mapper, messages), strict=True):
                if mapped.error is not None:
                    outs.append(outgoing_record(mapped.letter(dead, msg, group, partition=tp.partition)))
                    continue
                for part, routed in self.routes(mapper, msg, mapped.pairs, mapped.message_id).items():
                    outs.append(routed_record(part, routed))
            return outs

        return route
