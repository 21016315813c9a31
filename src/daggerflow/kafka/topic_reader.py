"""Reading a topic for the console and the REST API: its newest messages, or one message by
partition and offset. Reading is not consuming: the reader has no group and commits nothing,
so it never moves the runtime's consumers.

One consumer, made when first asked and closed with the runtime; the reads share it one at a
time (a lock), as each one assigns and seeks it. ``read_committed``: what an aborted
transaction wrote is never shown, and the end offsets are the last stable offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..errors import InvalidInput
from ..model.records import Message
from .client_options import Connection
from .records import message_of

#: How long a read waits for the records it was told are there (a slow broker, a restart).
READ_TIMEOUT = 10.0


class TopicReader:
    def __init__(self, connection: Connection | str) -> None:
        self.connection = connection
        self._consumer: Any = None
        self._lock = asyncio.Lock()

    async def _started(self) -> Any:
        if self._consumer is None:
            from .settings import groupless_consumer

            consumer = groupless_consumer(self.connection, fetch_max_wait_ms=100)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        async with self._lock:
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._consumer.stop()
                self._consumer = None

    async def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` (none for a topic that does not exist: asking the
        metadata of every topic, since asking for a named one may create it)."""
        from .compat import consumer_client

        async with self._lock:
            consumer = await self._started()
            cluster = await consumer_client(consumer).fetch_all_metadata()
            return sorted(cluster.partitions_for_topic(topic) or ())

    async def newest(
        self, topic: str, *, limit: int, partition: int | None, before: int | None
    ) -> list[Message]:
        """The ``limit`` newest messages of ``topic`` (of one ``partition``, or of each, then
        the newest ``limit`` of them all by time), newest first. ``before``: only offsets below
        it (with ``partition``: the next page of one partition)."""
        from aiokafka import TopicPartition

        partitions = await self.partitions(topic)
        if partition is not None:
            partitions = [p for p in partitions if p == partition]
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in partitions]
        async with self._lock:
            consumer = await self._started()
            # End offsets before the assignment: they must not queue behind a long poll.
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            ranges: dict[Any, tuple[int, int]] = {}
            for tp in tps:
                end = int(ends[tp]) if before is None else min(int(ends[tp]), before)
                start = max(int(starts[tp]), end - limit)
                if start < end:
                    ranges[tp] = (start, end)
            found = await self._fetch(consumer, ranges)
        found.sort(key=lambda m: (m.timestamp, m.offset), reverse=True)
        return found[:limit]

    async def one(self, topic: str, partition: int | None, offset: int) -> Message | None:
        """The message at ``offset`` of ``topic``/``partition``, None if there is none (not
        written yet, removed by retention, a transaction marker or aborted). ``partition``
        None: the topic's only one (``InvalidInput`` for a topic of several)."""
        from aiokafka import TopicPartition

        partitions = await self.partitions(topic)
        if partition is None and len(partitions) > 1:
            raise InvalidInput(f"topic {topic!r} has {len(partitions)} partitions: say which one (partition)")
        if partition is None and partitions:
            partition = partitions[0]
        if partition not in partitions:
            return None
        tp = TopicPartition(topic, partition)
        async with self._lock:
            consumer = await self._started()
            end = int((await consumer.end_offsets([tp]))[tp])
            if offset >= end:
                return None
            found = await self._fetch(consumer, {tp: (offset, min(end, offset + 1))})
        return next((m for m in found if m.offset == offset), None)

    async def _fetch(self, consumer: Any, ranges: dict[Any, tuple[int, int]]) -> list[Message]:
        """Every record of each partition's [start, end) range."""
        if not ranges:
            return []
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        out: list[Message] = []
        left = dict(ranges)
        deadline = time.monotonic() + READ_TIMEOUT
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {sorted(str(tp) for tp in left)} took over {READ_TIMEOUT} s")
            batches = await consumer.getmany(*left, timeout_ms=100)
            for tp, records in batches.items():
                end = left[tp][1] if tp in left else -1
                out.extend(message_of(tp, r) for r in records if r.offset < end)
            for tp in list(left):
                # The position passes the end over transaction markers and aborted records too.
                if await consumer.position(tp) >= left[tp][1]:
                    del left[tp]
        return out
