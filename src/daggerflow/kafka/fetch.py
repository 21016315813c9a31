"""The main group's poll phase: fetch the co-partitioned inputs of every task this worker
owns and hand each task its items (``{app}-events``, ``{app}-correlation`` and the listener
topics read directly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from ..model.bulk import BulkSpec
from ..model.records import Message
from ..pipeline.ingress import dead_letter
from ..pipeline.items import BulkStart, Incoming, IndexChange, InstanceEvent, Item
from ..pipeline.partition import PartitionTask
from . import codec
from .guard import AssignmentGuard
from .listeners import ListenerRouting
from .records import message_of

log = logging.getLogger("daggerflow.kafka")

#: Inputs a task may hold before the fetch loop waits for it (memory bound, backpressure).
MAX_QUEUED = 5000


class FetchLoop:
    def __init__(
        self,
        consumer: Any,
        guard: AssignmentGuard,
        task_of: Callable[[int], PartitionTask | None],
        routing: ListenerRouting,
    ) -> None:
        self.consumer = consumer
        self.guard = guard
        self.task_of = task_of
        self.routing = routing
        self.events = routing.topics.events.name
        self.dead_letter = routing.topics.dead_letter.name

    async def run(self) -> None:
        guard, direct, task_of = self.guard, self.routing.direct, self.task_of
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=2000)
            # Listener topics last: a task's correlation records of this fetch go to it first
            # (``ListenerRouting.direct_items`` checks that it has every index change already).
            for fetched in sorted(guard.stamp(batch), key=lambda f: f.tp.topic in direct):
                records = guard.admit(fetched)
                if not records:
                    continue
                task = task_of(fetched.tp.partition)
                if task is None:
                    continue  # being re-activated: it seeks back to its committed offsets
                mapper = direct.get(fetched.tp.topic)
                if mapper is not None:
                    for item in await self.routing.direct_items(mapper, fetched.tp, records):
                        task.submit(item)
                    continue
                for record in records:
                    task.submit(self.decode_record(fetched.tp, record))
                if task.processor.queue.qsize() > MAX_QUEUED:
                    await task.processor.wait_idle()

    def decode_record(self, tp: TopicPartition, record: Any) -> Item:
        """An internal topic's record as the item it carries (a dead letter if unreadable)."""
        source = (tp, record.offset)
        try:
            if tp.topic == self.events:
                event = codec.decode_event(record.value)
                if isinstance(event, BulkSpec):
                    return BulkStart(event, tp.partition, source=source)
                return InstanceEvent(record.key.decode(), event, source=source)
            routed = codec.decode_correlation(record.value)
            if isinstance(routed, codec.IndexOp):
                return IndexChange(routed.at, routed.instance, routed.node, routed.put, source=source,
                                   only_one=routed.only_one)  # fmt: skip
            message = Message(
                routed.topic, routed.offset, routed.key, routed.value, {}, record.timestamp / 1000
            )
            # (the key is informational: correlation uses the mappings)
            mappings = [(str(k), str(v)) for k, v in routed.mappings]
            return Incoming("", message, mappings, routed.message_id, source=source)
        except Exception as exc:
            # Only daggerflow writes these topics; a record it cannot read is kept for a
            # human in the dead-letter topic and skipped, so the partition keeps going.
            log.error("dead-lettering %s@%d: %r", tp, record.offset, exc)
            message = message_of(tp, record)
            letter = dead_letter(self.dead_letter, message, self.routing.app,
                                 f"{type(exc).__name__}: {exc}", "", partition=tp.partition)  # fmt: skip
            return Incoming("", message, [], dead_letter=letter, source=source)
