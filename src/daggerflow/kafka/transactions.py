"""Exactly-once building blocks for the Kafka runtime, with aiokafka 0.14 (no KIP-447).

The scheme is Kafka Streams' first one ("eos-alpha"): **one transactional producer per input
partition** (``transactional_id = f"{app}-{partition}"``). A task's transaction holds its outputs
(changelog, outbox, re-routed messages) and its input offsets (``send_offsets_to_transaction``);
a new owner's ``producer.start()`` (InitProducerId) fences the previous owner and aborts its open
transaction. It is exactly-once only with three rules, measured in ``docs/kafka-runtime-notes.md``
(§1-§3) and encoded in this module, ``guard`` and ``task_manager``:

1. **Fence, then read the committed offset.** aiokafka's OffsetFetch has no ``require_stable``: an
   offset read before the fence can be moved on by the zombie's pending commit.
   ``TaskManager`` activates a partition in that order (``PartitionTransactions.start`` first).
2. **Never trust records getmany() returned around a rebalance.** aiokafka starts fetching a new
   assignment from the offset *it* read before our callback runs, and a later ``seek()`` rewinds
   under records already in hand (300-400 duplicates per run without a guard). ``AssignmentGuard``
   drops them: records are stamped with their partition's epoch right after ``getmany()`` and
   admitted only if the epoch is unchanged and their offset is not below the next expected one.
3. **Keep ``on_partitions_assigned`` short.** aiokafka sends no heartbeats until it returns; a
   callback longer than the session timeout loops forever (evicted, rejoin, callback again).
   ``TaskManager.handle_assigned`` only pauses and records there, and fences/restores/seeks in
   a background task, resuming the partitions when they are ready.

A fenced producer raises ``ProducerFenced`` once and ``AssertionError`` (or ``IllegalOperation``)
from every later call; a transaction aborted by the broker for exceeding
``transaction_timeout_ms`` looks the same. ``PartitionProducer`` turns all of these into one
exception, ``TaskMigrated`` (Kafka Streams' TaskMigratedException): the task was lost; close it as
a zombie (drop its uncommitted state, never acknowledge the batch) and let the rebalance or
``TaskManager.handle_migrated`` re-activate it.

Processing loop, as these pieces are meant to be used (``tests/kafka/eos_worker.py`` is a complete
example)::

    batch = await consumer.getmany(timeout_ms=..., max_records=...)
    for fetched in guard.stamp(batch):          # synchronously, right after getmany()
        ...                                     # (any await, e.g. the task's lock)
        records = guard.admit(fetched)          # [] if the partition was revoked/re-activated
        producer = transactions.get(fetched.tp.partition)
        await producer.begin()
        for r in records: await producer.send(...)
        await producer.commit({fetched.tp: records[-1].offset + 1})
        # on TaskMigrated: drop the task's state, await task_manager.handle_migrated(partition)
        # on another KafkaError: await producer.abort(); guard.rewind(tp, next); consumer.seek(tp, next)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from ..errors import TaskMigrated
from .client_options import Connection
from .compat import (
    _producer_is_fatal,
    _sender_is_dead,
    default_partition,
    producer_identity,
    producer_in_transaction,
    tune_aiokafka,
    wait_on_metadata,
)
from .partitioner import partition_for_key
from .records import OutRecord, Sent
from .settings import PRODUCER_SETTINGS, new_producer

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long stopping a producer may take before it is abandoned (its broker may be gone).
STOP_TIMEOUT_S = 5.0
#: Bound on one commit's Kafka work (sends, deliveries, offsets, EndTxn): past it the task is
#: closed and re-activated, as after a fence. The transaction timeout aborts the rest.
COMMIT_TIMEOUT_S = 30.0

#: Records all for one (topic, partition), as (key, value) pairs: a commit's changelog records,
#: appended to their batches as they are (no ``OutRecord`` is built for each).
KeyedRecords = tuple[str, int, Sequence[tuple[bytes, bytes | None]]]

_Row = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]


async def send_many(producer: Any, records: Iterable[OutRecord], keyed: KeyedRecords | None = None) -> Sent:
    """Send records as one batch per (topic, partition): one future per batch instead of per
    record (``send`` costs ~70 us a record, most of the producer's CPU time otherwise).

    Records without a partition get Kafka's default partitioner when keyed (``partitioner``:
    murmur2 of the key), so they land where any Kafka client would put them, and the
    producer's own choice when not. ``keyed`` records go first. Returns ``(future, count)``
    per batch; the future's RecordMetadata has the batch's base offset. Uses aiokafka's
    ``create_batch``/``send_batch``."""
    sent: Sent = []
    if keyed is not None:
        keyed_topic, keyed_partition, pairs = keyed
        if pairs:
            await _send_batches(
                producer, keyed_topic, keyed_partition, ((k, v, None) for k, v in pairs), sent
            )
    groups: dict[tuple[str, int], list[_Row]] = {}
    cluster = producer.client.cluster
    counts: dict[str, int] = {}  # partitions per topic, looked up once per call
    for record in records:
        topic, key, partition = record.topic, record.key, record.partition
        if partition is None:
            count = counts.get(topic)
            if count is None:
                if cluster.partitions_for_topic(topic) is None:
                    await wait_on_metadata(producer.client, topic)
                count = counts[topic] = len(cluster.partitions_for_topic(topic) or ())
            if key is None:
                partition = default_partition(producer, topic, key, record.value)
            else:
                partition = partition_for_key(key, count)
        groups.setdefault((topic, partition), []).append((key, record.value, record.headers))
    for (topic, partition), rows in groups.items():
        await _send_batches(producer, topic, partition, rows, sent)
    return sent


async def _send_batches(producer: Any, topic: str, partition: int, rows: Iterable[_Row], sent: Sent) -> None:
    """Append ``rows`` to batches of ``topic``/``partition``, sending each batch when full."""
    batch = producer.create_batch()
    count = 0
    for key, value, headers in rows:
        if batch.append(key=key, value=value, timestamp=None, headers=list(headers or ())) is None:
            if count == 0:
                raise ValueError(f"a record for {topic} is larger than the producer's max_batch_size")
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch = producer.create_batch()
            count = 0
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers or ())) is None:
                raise ValueError(f"a record for {topic} is larger than the producer's max_batch_size")
        count += 1
    sent.append((await producer.send_batch(batch, topic, partition=partition), count))


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a delivery future's exception as retrieved (no 'Future exception was never retrieved')."""
    if not fut.cancelled():
        fut.exception()


class PartitionProducer:
    """The transactional producer of one task (input partition). Created by ``PartitionTransactions``.

    Every call raises ``TaskMigrated`` once the producer is fenced, whatever aiokafka raises
    (``ProducerFenced``, then ``AssertionError``/``IllegalOperation`` from its FATAL_ERROR state).
    """

    def __init__(self, partition: int, transactional_id: str, producer: Any, group_id: str) -> None:
        self.partition = partition
        self.transactional_id = transactional_id
        self._producer = producer
        self._group_id = group_id
        self._pending: list[asyncio.Future[Any]] = []
        self._migrated: TaskMigrated | None = None
        self._stopped = False

    @property
    def migrated(self) -> bool:
        """True once a call raised ``TaskMigrated``: the producer must be stopped and replaced."""
        return self._migrated is not None

    def identity(self) -> tuple[int, int] | None:
        """(producer id, epoch) from the InitProducerId that fenced the previous owner, or None
        if not known."""
        return producer_identity(self._producer)

    @property
    def in_transaction(self) -> bool:
        return producer_in_transaction(self._producer)

    def _as_migrated(self, exc: BaseException) -> TaskMigrated | None:
        if (
            isinstance(exc, ProducerFenced)
            or _producer_is_fatal(self._producer)
            or _sender_is_dead(self._producer)
        ):
            if self._migrated is None:
                self._migrated = TaskMigrated(
                    self.partition, self.transactional_id, f"{type(exc).__name__}: {exc}".rstrip(": ")
                )
            return self._migrated
        return None

    def _check(self) -> None:
        if self._stopped:
            raise RuntimeError(f"producer of task {self.partition} is stopped")
        if self._migrated is not None:
            raise self._migrated
        if _producer_is_fatal(self._producer):
            self._migrated = TaskMigrated(
                self.partition, self.transactional_id, "producer in FATAL_ERROR state"
            )
            raise self._migrated
        if _sender_is_dead(self._producer):
            # Not a fence, but the producer is as unusable: the task is re-activated with a
            # new one (which fences this one's open transaction).
            self._migrated = TaskMigrated(self.partition, self.transactional_id, "producer's sender stopped")
            raise self._migrated

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        self._check()
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            migrated = self._as_migrated(exc)
            if migrated is not None:
                raise migrated from exc
            raise

    async def begin(self) -> None:
        """Begin a transaction (local only: a fence shows up at the first send or at commit)."""
        await self._call(self._producer.begin_transaction)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Enqueue a record in the open transaction; ``commit`` awaits its delivery.

        Returns the delivery future (RecordMetadata); its failure is reported by ``commit``.
        """
        fut: asyncio.Future[Any] = await self._call(
            lambda: self._producer.send(
                topic, value, key=key, partition=partition, headers=list(headers) if headers else None
            )
        )
        fut.add_done_callback(_retrieve)
        self._pending.append(fut)
        return fut

    async def send_many(self, records: Iterable[OutRecord], keyed: KeyedRecords | None = None) -> Sent:
        """``send_many`` in the open transaction; ``commit`` awaits the deliveries."""
        sent: Sent = await self._call(lambda: send_many(self._producer, records, keyed))
        for fut, _ in sent:
            fut.add_done_callback(_retrieve)
            self._pending.append(fut)
        return sent

    async def flush(self) -> None:
        """Await the delivery of every record sent in the open transaction (they are then in the
        log, uncommitted). A fence comes out of the deliveries as ``TaskMigrated``; any other
        delivery error is raised as is (the transaction is still open: ``abort()`` it)."""
        self._check()
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            migrated = self._as_migrated(err)
            if migrated is not None:
                raise migrated from err
        if errors:
            raise errors[0]

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit the open transaction with the input ``offsets`` ({tp: next offset to read}).

        Awaits every delivery first (``flush``: so a fence comes out of the deliveries as
        ProducerFenced, not as an AssertionError from commit), then ``send_offsets_to_transaction``
        and ``commit_transaction``. On ``TaskMigrated`` nothing was committed. On any other error
        the transaction is still open: ``abort()`` it, rewind the guard and seek back.
        """
        await self.flush()
        if offsets:
            await self._call(
                lambda: self._producer.send_offsets_to_transaction(dict(offsets), self._group_id)
            )
        await self._call(self._producer.commit_transaction)

    async def abort(self) -> None:
        """Abort the open transaction (raises ``TaskMigrated`` if fenced: the fence aborted it)."""
        self._pending = []  # their outcome no longer matters (exceptions are retrieved by _retrieve)
        await self._call(self._producer.abort_transaction)

    async def stop(self) -> None:
        """Stop the producer (works in any state; an open transaction is aborted by the next owner's
        fence or by the transaction timeout)."""
        if self._stopped:
            return
        self._stopped = True
        self._pending = []
        stopping = asyncio.ensure_future(self._producer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_TIMEOUT_S)
        if not done:  # a producer whose connections are gone: abandon it
            log.warning(
                "the producer of task %d did not stop in %.0f s; abandoned", self.partition, STOP_TIMEOUT_S
            )
            stopping.cancel()
        elif stopping.exception() is not None:  # fenced or disconnected: nothing left to release
            log.warning("stopping the producer of task %d failed: %r", self.partition, stopping.exception())


class PartitionTransactions:
    """One transactional producer per assigned input partition (task), ``transactional_id =
    f"{app}-{partition}"``.

    ``start(p)`` creates and starts p's producer: that InitProducerId fences every earlier producer
    of the id (a zombie owner) and aborts its open transaction. Call it **before** reading p's
    committed offsets (rule 1). Starting a partition that already has a producer replaces it (it
    fences it too): an eager rebalance that gives a partition straight back re-fences it, which
    costs 5-40 ms but never lets a stale producer read offsets.
    """

    def __init__(
        self,
        broker: Connection | str,
        app: str,
        group_id: str,
        *,
        producer_settings: Mapping[str, Any] | None = None,
    ) -> None:
        tune_aiokafka()
        self.broker = broker
        self.app = app
        self.group_id = group_id
        self.producer_settings: dict[str, Any] = {**PRODUCER_SETTINGS, **(producer_settings or {})}
        self._producers: dict[int, PartitionProducer] = {}

    def transactional_id(self, partition: int) -> str:
        return f"{self.app}-{partition}"

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._producers)

    def get(self, partition: int) -> PartitionProducer | None:
        return self._producers.get(partition)

    def __getitem__(self, partition: int) -> PartitionProducer:
        return self._producers[partition]

    def __contains__(self, partition: object) -> bool:
        return partition in self._producers

    async def start(self, partition: int) -> PartitionProducer:
        """Start (fence) the producer of ``partition``, replacing an existing one."""
        await self.stop(partition)
        tid = self.transactional_id(partition)
        producer = new_producer(self.broker, transactional_id=tid, **self.producer_settings)
        try:
            await producer.start()  # InitProducerId: the fence
        except BaseException:
            await producer.stop()
            raise
        handle = PartitionProducer(partition, tid, producer, self.group_id)
        self._producers[partition] = handle
        return handle

    async def stop(self, partition: int) -> None:
        handle = self._producers.pop(partition, None)
        if handle is not None:
            await handle.stop()

    async def close(self) -> None:
        for partition in list(self._producers):
            await self.stop(partition)
