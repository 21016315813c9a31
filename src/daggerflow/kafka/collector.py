"""Sending a commit's records with its input offsets (Kafka Streams' RecordCollector and the
commit of a task).

``RecordCollector.send_and_commit`` is the one place that knows the two guarantees, for the
partition tasks and the topic loops alike:

- exactly-once: one transaction of the partition's own producer holds the records and the
  offsets (``PartitionProducer.commit``); a failure other than a fence aborts it;
- at-least-once: the records go through the partition's plain producer, then the offsets are
  committed by the group's consumer once every delivery is acknowledged.

``PartitionCommitter`` is a partition task's ``Committer``: the batch's changelog records,
outbox messages and forwards go out with its input offsets, and only then does the local
store commit, so the store is never ahead of the log (its checkpoint is the offset of the
batch's last changelog record).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from ..errors import TaskMigrated
from ..store.base import Store, WriteBatch
from ..store.changelog import batch_records
from .client_options import Connection
from .records import ForwardEncoder, OutRecord, Sent, last_offset, outgoing_record
from .settings import PRODUCER_SETTINGS, new_producer
from .transactions import COMMIT_TIMEOUT_S, KeyedRecords, PartitionTransactions, send_many

#: How long aborting a failed transaction may take before the producer is left to the fence.
ABORT_TIMEOUT_S = 5.0


@dataclass
class CommitStats:
    commits: int = 0
    kafka_seconds: float = 0.0  # in transactions (or sends + offset commits)
    store_seconds: float = 0.0  # in local store commits
    records: int = 0  # records produced
    stateless: int = 0  # commits with no state change (offsets and messages only)
    # exactly-once: seconds enqueueing records; delivering them with the offsets and EndTxn
    phases: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def brief(self) -> str:
        n = max(1, self.commits)
        return f"{self.commits} commits, {self.records / n:.1f} records and {1000 * self.kafka_seconds / n:.1f} ms each"

    def summary(self) -> str:
        n = max(1, self.commits)
        ms = [f"{1000 * x / n:.1f}" for x in self.phases]
        return (f"{self.commits} commits ({self.stateless} without state), {self.records / n:.1f} records and {1000 * self.kafka_seconds / n:.1f} ms "
                f"Kafka (send {ms[0]}, deliver+offsets+commit {ms[1]}) + "
                f"{1000 * self.store_seconds / n:.1f} ms store each")  # fmt: skip


@dataclass(frozen=True)
class GroupClients:
    """A consumer group's clients: its consumer (at-least-once offsets commit through it) and
    its partitions' transactional producers (which also fence, under either guarantee)."""

    name: str
    consumer: Any
    transactions: PartitionTransactions


class RecordCollector:
    """The worker's producing side of every commit."""

    def __init__(self, broker: Connection | str, *, exactly_once: bool) -> None:
        self.broker = broker
        self.exactly_once = exactly_once
        # At-least-once: a plain producer per (consumer group, partition), so that partitions
        # commit side by side rather than queue behind each other on one producer.
        self._plain: dict[tuple[str, int], Any] = {}
        self._last_buffer_id = 0

    async def plain_producer(self, group: str, partition: int) -> Any:
        """The at-least-once producer of a partition of a consumer group (made on first use)."""
        producer = self._plain.get((group, partition))
        if producer is None:
            producer = new_producer(self.broker, enable_idempotence=True, acks="all", linger_ms=0,
                                    max_batch_size=PRODUCER_SETTINGS["max_batch_size"])  # fmt: skip
            await producer.start()
            self._plain[(group, partition)] = producer
        return producer

    async def send_and_commit(
        self,
        group: GroupClients,
        partition: int,
        records: list[OutRecord],
        offsets: dict[TopicPartition, int],
        stats: CommitStats,
        keyed: KeyedRecords | None = None,
    ) -> Sent:
        """Send ``keyed`` and ``records`` and commit ``offsets`` ({tp: next offset}) of
        ``partition`` of ``group``, under the worker's guarantee, within ``COMMIT_TIMEOUT_S``.
        Raises ``TaskMigrated`` when the partition has no usable producer (fenced, revoked)."""
        started = time.perf_counter()
        try:
            if not self.exactly_once:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    sent = await send_many(await self.plain_producer(group.name, partition), records, keyed)
                    await asyncio.gather(*(fut for fut, _ in sent))
                    if offsets:
                        await group.consumer.commit(offsets)
                return sent
            producer = group.transactions.get(partition)
            if producer is None:
                raise TaskMigrated(
                    partition, group.transactions.transactional_id(partition), "no producer (revoked)"
                )
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    await producer.begin()
                    sent = await producer.send_many(records, keyed)
                    enqueued = time.perf_counter()
                    await producer.commit(offsets)  # deliveries and offsets at once, then EndTxn
                stats.phases[0] += enqueued - started
                stats.phases[1] += time.perf_counter() - enqueued
                return sent
            except TaskMigrated:
                raise
            except BaseException:
                if producer.in_transaction:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(ABORT_TIMEOUT_S):
                            await producer.abort()
                raise
        finally:
            stats.kafka_seconds += time.perf_counter() - started

    def next_buffer_ids(self, count: int) -> list[int]:
        """Ids for buffered messages, unique within a partition across its owners:
        microseconds since the epoch, moving on (never reused within this process)."""
        start = max(time.time_ns() // 1000, self._last_buffer_id + 1)
        self._last_buffer_id = start + count - 1
        return list(range(start, start + count))

    async def close(self) -> None:
        for plain in self._plain.values():
            with contextlib.suppress(Exception):
                await plain.stop()
        self._plain.clear()


@dataclass(eq=False)
class PartitionCommitter:
    """The ``Committer`` of partition task ``partition``: its batch in one commit of the
    collector (changelog records, outbox messages, forwards, input offsets), then the local
    store, with the checkpoint of the changelog records it wrote."""

    collector: RecordCollector
    group: GroupClients
    partition: int
    store: Store
    changelog: str
    forwards: ForwardEncoder
    stats: CommitStats

    async def __call__(self, batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        p, stats = self.partition, self.stats
        if batch.buffer_put and not batch.buffer_ids:
            batch.buffer_ids = self.collector.next_buffer_ids(len(batch.buffer_put))
        changes = batch_records(batch, ts)
        outs = [outgoing_record(o) for o in batch.appends]
        if batch.forwards:
            encode = self.forwards.record
            outs.extend([encode(f) for f in batch.forwards])
        offsets = dict(batch.input_offsets)
        if changes or outs or offsets:
            sent = await self.collector.send_and_commit(
                self.group, p, outs, offsets, stats, (self.changelog, p, changes)
            )
            if changes:
                batch.changelog_offsets[p] = last_offset(sent, self.changelog, p)
        kafka_done = time.perf_counter()
        batch.appends = []  # they went to Kafka; the local store keeps no topics
        batch.positions.clear()
        result = self.store.commit(batch, ts)
        stats.commits += 1
        stats.store_seconds += time.perf_counter() - kafka_done
        stats.records += len(changes) + len(outs)
        if not changes:
            stats.stateless += 1
        return result
