"""The main group's poll phase: fetch the co-partitioned inputs of every task this worker
owns and hand each task its items (``{app}-events``, ``{app}-correlation`` and the listener
topics read directly).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from ..machine.events import Deliver
from ..model.bulk import BulkSpec
from ..model.records import Message
from ..pipeline.ingress import dead_letter
from ..pipeline.items import BulkStart, Incoming, IndexChange, InstanceEvent, Item
from ..pipeline.observe import PipelineObserver
from ..pipeline.partition import PartitionTask
from . import codec
from .compat import partition_state
from .guard import AssignmentGuard
from .listeners import ListenerRouting
from .records import message_of

log = logging.getLogger("daggerflow.kafka")

#: Inputs a task may hold before the fetch loop waits for it (memory bound, backpressure).
MAX_QUEUED = 5000
#: Seconds between two consumer-lag readings (each goes over the assigned partitions).
LAG_INTERVAL = 5.0


def consumer_lag(consumer: Any) -> dict[str, int] | None:
    """Records between each assigned partition's position and its end, summed by topic (the
    positions and ends the consumer already knows: no request to the broker). None when the
    assignment changed while it was read (read it again later)."""
    lag: dict[str, int] = {}
    try:
        for tp in consumer.assignment():
            end, position = consumer.highwater(tp), _position(consumer, tp)
            if end is None or position is None:
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - position)
    except Exception:
        log.debug("consumer lag not read", exc_info=True)
        return None
    return lag


def _position(consumer: Any, tp: TopicPartition) -> int | None:
    """The next offset ``consumer`` returns of assigned ``tp``; None while it has none.
    Raises if ``tp`` is not assigned."""
    state = partition_state(consumer, tp)
    return state.position if state is not None and state.has_valid_position else None


class FetchLoop:
    def __init__(
        self,
        consumer: Any,
        guard: AssignmentGuard,
        task_of: Callable[[int], PartitionTask | None],
        routing: ListenerRouting,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.consumer = consumer
        self.observer = observer
        self._lag_due = 0.0
        self.guard = guard
        self.task_of = task_of
        self.routing = routing
        self.events = routing.topics.events.name
        self.dead_letter = routing.topics.dead_letter.name
        # True while the loop waits in ``getmany``: everything the consumer returned before
        # has been handed to the tasks then (``getmany`` moves the position and returns
        # without yielding in between).
        self._polling = False
        self._waiters: list[tuple[TopicPartition, int, asyncio.Future[None]]] = []

    async def handed_over(self, tp: TopicPartition, end: int) -> None:
        """Return once every record of ``tp`` below offset ``end`` has been handed to its
        task (or skipped as the guard's stale input). A caller bounds the wait: a partition
        that is no longer assigned never gets there."""
        if self._polling and self._reached(tp, end):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((tp, end, fut))
        await fut

    def _release(self) -> None:
        waiting = []
        for tp, end, fut in self._waiters:
            if fut.done():
                continue  # (its caller gave up)
            if self._reached(tp, end):
                fut.set_result(None)
            else:
                waiting.append((tp, end, fut))
        self._waiters = waiting

    def _reached(self, tp: TopicPartition, end: int) -> bool:
        try:
            position = _position(self.consumer, tp)
        except Exception:  # (not assigned any more)
            return False
        return position is not None and position >= end

    async def run(self) -> None:
        guard, direct, task_of = self.guard, self.routing.direct, self.task_of
        while True:
            if self._waiters:
                self._release()
            self._polling = True
            try:
                batch = await self.consumer.getmany(timeout_ms=100, max_records=2000)
            finally:
                self._polling = False
            if self.observer is not None and (now := time.monotonic()) >= self._lag_due:
                if self.report_lag(self.observer):  # (else: no end known yet, try next time)
                    self._lag_due = now + LAG_INTERVAL
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

    def report_lag(self, observer: PipelineObserver) -> bool:
        lag = consumer_lag(self.consumer)
        for topic, behind in (lag or {}).items():
            observer.consumer_lag(topic, behind)
        return bool(lag)

    def decode_record(self, tp: TopicPartition, record: Any) -> Item:
        """An internal topic's record as the item it carries (a dead letter if unreadable)."""
        source = (tp, record.offset)
        try:
            if tp.topic == self.events:
                event = codec.decode_event(record.value)
                if isinstance(event, BulkSpec):
                    return BulkStart(event, tp.partition, source=source)
                if record.headers and isinstance(event, Deliver):  # (a forwarded delivery's trace)
                    trace = next((v.decode() for k, v in record.headers if k == "traceparent"), None)
                    return InstanceEvent(record.key.decode(), event, source=source, trace=trace)
                return InstanceEvent(record.key.decode(), event, source=source)
            routed = codec.decode_correlation(record.value)
            if isinstance(routed, codec.IndexOp):
                return IndexChange(routed.at, routed.instance, routed.node, routed.put, source=source,
                                   only_one=routed.only_one)  # fmt: skip
            message = Message(
                routed.topic, routed.offset, routed.key, routed.value, routed.trace or {}, record.timestamp / 1000,
                routed.partition,
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
