"""Exactly-once building blocks for the Kafka runtime, with aiokafka 0.14 (no KIP-447).

The scheme is Kafka Streams' first one ("eos-alpha"): **one transactional producer per input
partition** (``transactional_id = f"{app}-{partition}"``). A task's transaction holds its outputs
(changelog, outbox, re-routed messages) and its input offsets (``send_offsets_to_transaction``);
a new owner's ``producer.start()`` (InitProducerId) fences the previous owner and aborts its open
transaction. It is exactly-once only with three rules, measured in ``docs/kafka-runtime-notes.md``
(§1-§3) and encoded here:

1. **Fence, then read the committed offset.** aiokafka's OffsetFetch has no ``require_stable``: an
   offset read before the fence can be moved on by the zombie's pending commit.
   ``RebalanceListener`` activates a partition in that order (``PartitionTransactions.start`` first).
2. **Never trust records getmany() returned around a rebalance.** aiokafka starts fetching a new
   assignment from the offset *it* read before our callback runs, and a later ``seek()`` rewinds
   under records already in hand (300-400 duplicates per run without a guard). ``AssignmentGuard``
   drops them: records are stamped with their partition's epoch right after ``getmany()`` and
   admitted only if the epoch is unchanged and their offset is not below the next expected one.
3. **Keep ``on_partitions_assigned`` short.** aiokafka sends no heartbeats until it returns; a
   callback longer than the session timeout loops forever (evicted, rejoin, callback again).
   ``RebalanceListener`` only pauses and records there, and fences/restores/seeks in a background
   task, resuming the partitions when they are ready.

A fenced producer raises ``ProducerFenced`` once and ``AssertionError`` (or ``IllegalOperation``)
from every later call; a transaction aborted by the broker for exceeding
``transaction_timeout_ms`` looks the same. ``PartitionProducer`` turns all of these into one
exception, ``TaskMigrated`` (Kafka Streams' TaskMigratedException): the task was lost; close it as
a zombie (drop its uncommitted state, never acknowledge the batch) and let the rebalance or
``RebalanceListener.task_migrated`` re-activate it.

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
        # on TaskMigrated: drop the task's state, await listener.task_migrated(partition)
        # on another KafkaError: await producer.abort(); guard.rewind(tp, next); consumer.seek(tp, next)

This module needs the ``kafka`` extra (``aiokafka``). It is not wired into the engine yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import aiokafka
import aiokafka.producer.sender as _aiokafka_sender
from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import ProducerFenced

from ..errors import TaskMigrated
from .partitioner import partition_for_key

log = logging.getLogger(__name__)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# aiokafka version and private state: the only place this package touches aiokafka internals
# ---------------------------------------------------------------------------------------------

#: aiokafka release line the private accesses below were verified with (pyproject pins the
#: ``kafka`` extra to it). On an upgrade: re-run bench/kafka_spike/perf.py and fencing.py, check
#: ``aiokafka.producer.sender.BACKOFF_OVERRIDE`` and ``AIOKafkaProducer._txn_manager`` still exist
#: and mean the same, then widen the pin and this constant together.
VERIFIED_AIOKAFKA = "0.14."
#: aiokafka waits ``BACKOFF_OVERRIDE`` (20 ms) after each commit, because the next
#: AddPartitionsToTxn gets CONCURRENT_TRANSACTIONS while the markers are written. 2 ms gives
#: 3-5x the transactions/s of one producer (notes §4: 30 -> 149 txn/s with retry_backoff_ms=10).
TXN_BACKOFF_OVERRIDE_S = 0.002
#: How long stopping a producer may take before it is abandoned (its broker may be gone).
STOP_TIMEOUT_S = 5.0
#: Bound on one commit's Kafka work (sends, deliveries, offsets, EndTxn): past it the task is
#: closed and re-activated, as after a fence. The transaction timeout aborts the rest.
COMMIT_TIMEOUT_S = 30.0


def tune_aiokafka() -> None:
    """Patch aiokafka's private ``producer.sender.BACKOFF_OVERRIDE`` (idempotent).

    Raises ``RuntimeError`` if aiokafka is not the verified release line or the constant is gone:
    the pin in pyproject's ``kafka`` extra guarantees it for normal installs.
    """
    version = str(aiokafka.__version__)
    current = getattr(_aiokafka_sender, "BACKOFF_OVERRIDE", None)
    if not version.startswith(VERIFIED_AIOKAFKA) or not isinstance(current, float):
        raise RuntimeError(
            f"daggerflow's Kafka runtime was verified with aiokafka {VERIFIED_AIOKAFKA}x, found {version} "
            f"(aiokafka.producer.sender.BACKOFF_OVERRIDE = {current!r}); install daggerflow[kafka]"
        )
    _aiokafka_sender.BACKOFF_OVERRIDE = TXN_BACKOFF_OVERRIDE_S


async def stop_consumer(consumer: Any, *, nudge_every: float = 1.0) -> None:
    """``consumer.stop()`` that cannot hang on aiokafka 0.14's fetcher.

    When the assignment goes away while fetches are in flight (the leave during ``stop``),
    the fetch routine awaits them under ``suppress(CancelledError)``, so the cancel that
    ``Fetcher.close`` sends is swallowed and the routine then waits for an assignment that
    never comes. Cancelling it again reaches it at that wait. Reads the private
    ``_fetcher._fetch_task`` (verified with ``VERIFIED_AIOKAFKA``)."""
    stopping = asyncio.ensure_future(consumer.stop())
    while True:
        done, _ = await asyncio.wait({stopping}, timeout=nudge_every)
        if done:
            exc = stopping.exception()
            if exc is not None:
                log.warning("stopping a consumer failed: %r", exc)
            return
        fetch_task = getattr(getattr(consumer, "_fetcher", None), "_fetch_task", None)
        if fetch_task is not None and not fetch_task.done():
            log.info("consumer stop is stuck in aiokafka's fetcher: cancelling it again")
            fetch_task.cancel()


def _sender_is_dead(producer: Any) -> bool:
    """True once aiokafka's sender task has ended: on a connection error during a
    transactional request it raises out of its loop and never restarts, and every later
    transactional call then waits forever (found by the broker-restart test). Reads the
    private ``_sender.sender_task`` (verified with ``VERIFIED_AIOKAFKA``)."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task is not None and task.done()


def _producer_is_fatal(producer: Any) -> bool:
    """True once a transactional producer is in FATAL_ERROR (fenced, or its transaction timed out).

    Reads the private ``_txn_manager`` (verified with aiokafka 0.14, see ``VERIFIED_AIOKAFKA``).
    """
    txn_manager = getattr(producer, "_txn_manager", None)
    return txn_manager is not None and bool(txn_manager.is_fatal_error())


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

#: Producer settings recommended by the notes ("Recommended configuration").
PRODUCER_SETTINGS: Mapping[str, Any] = {
    # > worst commit interval + batch time; bounds the LSO stall of a dead owner's open
    # transaction when nobody takes its partition over (broker max 900000)
    "transaction_timeout_ms": 30000,
    # NOT_ENOUGH_REPLICAS answers of KIP-890 verification are retried after this: p99 104 -> 13 ms
    "retry_backoff_ms": 10,
    "linger_ms": 0,  # the commit flushes anyway
    # One batch per partition per transaction (``send_many``): a 16 KB batch would split a
    # commit's changelog records into many, each waiting for the previous one to drain.
    "max_batch_size": 1024 * 1024,
}

#: (topic, key, value, partition or None for the producer's partitioner, headers or None)
Record = tuple[str, bytes | None, bytes | None, int | None, Sequence[tuple[str, bytes]] | None]


async def send_many(producer: Any, records: Iterable[Record]) -> list[tuple[asyncio.Future[Any], int]]:
    """Send records as one batch per (topic, partition): one future per batch instead of per
    record, which was most of the producer's CPU time (``send`` costs ~70 us a record).

    Keyed records without a partition get Kafka's default partitioner (``log.partitioner``:
    murmur2 of the key), so they land where any Kafka client would put them; records with
    neither get the producer's own choice. Returns
    ``(future, count)`` per batch; the future's RecordMetadata has the batch's base offset.
    Uses aiokafka's ``create_batch``/``send_batch`` and the private ``_partition`` (verified
    with ``VERIFIED_AIOKAFKA``)."""
    groups: dict[
        tuple[str, int], list[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]]
    ] = {}
    cluster = producer.client.cluster
    counts: dict[str, int] = {}  # partitions per topic, looked up once per call
    for topic, key, value, partition, headers in records:
        if partition is None:
            count = counts.get(topic)
            if count is None:
                if cluster.partitions_for_topic(topic) is None:
                    await producer.client._wait_on_metadata(topic)
                count = counts[topic] = len(cluster.partitions_for_topic(topic) or ())
            if key is None:
                partition = producer._partition(topic, None, None, None, key, value)
            else:
                partition = partition_for_key(key, count)
        groups.setdefault((topic, partition), []).append((key, value, headers))
    sent: list[tuple[asyncio.Future[Any], int]] = []
    for (topic, partition), group in groups.items():
        batch = producer.create_batch()
        count = 0
        for key, value, headers in group:
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
    return sent


def consumer_settings(group_id: str, *, group_instance_id: str | None = None) -> dict[str, Any]:
    """AIOKafkaConsumer keyword arguments for a worker of the group (notes, "Consumer")."""
    return {
        "group_id": group_id,
        "group_instance_id": group_instance_id,  # static membership: in-place restarts, no rebalance
        "isolation_level": "read_committed",
        "enable_auto_commit": False,  # offsets are committed in the transactions
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,  # the broker minimum; failover detection ~5-6 s
        "heartbeat_interval_ms": 1000,  # joins and clean leaves cost ~one heartbeat interval
        "partition_assignment_strategy": (RangePartitionAssignor,),  # co-partitions by construction
        "fetch_max_wait_ms": 100,  # ListOffsets/metadata calls never wait 500 ms behind a long poll
        "max_poll_records": 500,
    }


# ---------------------------------------------------------------------------------------------
# transactional producers
# ---------------------------------------------------------------------------------------------


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
        if not known (reads the private ``_txn_manager``, like ``in_transaction``)."""
        txn_manager = getattr(self._producer, "_txn_manager", None)
        if txn_manager is None or txn_manager.producer_id < 0:
            return None
        return int(txn_manager.producer_id), int(txn_manager.producer_epoch)

    @property
    def in_transaction(self) -> bool:
        txn_manager = getattr(self._producer, "_txn_manager", None)
        return txn_manager is not None and bool(txn_manager.is_in_transaction())

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

    async def send_many(self, records: Iterable[Record]) -> list[tuple[asyncio.Future[Any], int]]:
        """``send_many`` in the open transaction; ``commit`` awaits the deliveries."""
        sent: list[tuple[asyncio.Future[Any], int]] = await self._call(
            lambda: send_many(self._producer, records)
        )
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
        bootstrap: str,
        app: str,
        group_id: str,
        *,
        producer_settings: Mapping[str, Any] | None = None,
    ) -> None:
        tune_aiokafka()
        self.bootstrap = bootstrap
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
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, transactional_id=tid, **self.producer_settings
        )
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


# ---------------------------------------------------------------------------------------------
# the guard
# ---------------------------------------------------------------------------------------------


class HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=HasOffset)


@dataclass(frozen=True, slots=True)
class Fetched(Generic[R]):
    """Records of one partition from one getmany(), with the partition's epoch at that moment."""

    tp: TopicPartition
    epoch: int
    records: Sequence[R]


class AssignmentGuard:
    """Per-partition next-expected offset and epoch: drops records fetched across a rebalance.

    - ``activate(tp, offset)`` when a partition is ready (after fence, committed read and seek);
      ``deactivate(tp)`` when it is revoked or lost; ``rewind(tp, offset)`` with every seek back
      after an aborted transaction. Each of these starts a new epoch for ``tp``.
    - ``stamp(batch)`` synchronously right after ``getmany()`` (no await in between): aiokafka
      yields only records consistent with the position at that moment, so the epoch says which
      assignment/seek they belong to.
    - ``admit(fetched)`` when processing: ``[]`` if the partition is inactive or its epoch changed
      since the stamp, else the records whose offset is >= the next expected offset, which then
      moves past them. Offsets may jump forward (transaction markers, aborted or compacted
      records take offsets), so a gap is not a reason to drop; going back is.
    """

    def __init__(self) -> None:
        self._next: dict[TopicPartition, int] = {}
        self._epoch: dict[TopicPartition, int] = {}
        self._counter = 0
        self.dropped = 0  #: records dropped so far (a metric; the spike logged each drop)

    def _bump(self, tp: TopicPartition) -> None:
        self._counter += 1
        self._epoch[tp] = self._counter

    def activate(self, tp: TopicPartition, next_offset: int) -> None:
        self._bump(tp)
        self._next[tp] = next_offset

    def deactivate(self, tp: TopicPartition) -> None:
        self._bump(tp)
        self._next.pop(tp, None)

    def rewind(self, tp: TopicPartition, next_offset: int) -> None:
        """The caller seeks ``tp`` back to ``next_offset`` (to retry an aborted batch)."""
        if tp in self._next:
            self._bump(tp)
            self._next[tp] = next_offset

    def is_active(self, tp: TopicPartition) -> bool:
        return tp in self._next

    def next_offset(self, tp: TopicPartition) -> int | None:
        return self._next.get(tp)

    def stamp(self, batch: Mapping[TopicPartition, Sequence[R]]) -> list[Fetched[R]]:
        return [Fetched(tp, self._epoch.get(tp, 0), records) for tp, records in batch.items() if records]

    def admit(self, fetched: Fetched[R]) -> list[R]:
        tp = fetched.tp
        expected = self._next.get(tp)
        if expected is None or self._epoch.get(tp, 0) != fetched.epoch:
            self._drop(tp, fetched.records, expected, "partition inactive or re-activated since getmany()")
            return []
        fresh = [r for r in fetched.records if r.offset >= expected]
        if len(fresh) < len(fetched.records):
            self._drop(tp, [r for r in fetched.records if r.offset < expected], expected, "already processed")
        if fresh:
            self._next[tp] = fresh[-1].offset + 1
        return fresh

    def _drop(self, tp: TopicPartition, records: Sequence[HasOffset], expected: int | None, why: str) -> None:
        self.dropped += len(records)
        log.info(
            "guard dropped %d records of %s:%d (offsets %d..%d, next expected %s): %s",
            len(records), tp.topic, tp.partition, records[0].offset, records[-1].offset, expected, why,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the rebalance listener
# ---------------------------------------------------------------------------------------------

RestoreHook = Callable[[int], Awaitable[None]]
RevokeHook = Callable[[frozenset[int]], Awaitable[None]]


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Records assignment changes at once and activates partitions in background tasks.

    ``on_partitions_assigned`` pauses the new partitions, starts one activation task per task
    (partition number; co-partitioned topics share it) and returns. Activation, retried with
    backoff until it succeeds or the partition is revoked:

    1. ``transactions.start(p)`` - the fence;
    2. ``await restore(p)`` - the task's state from its changelog (read_committed, after the fence,
       so the zombie's open transaction is already aborted);
    3. ``consumer.committed(tp)`` for each of p's partitions, after the fence (no committed offset:
       the beginning of the partition);
    4. ``consumer.seek``, ``guard.activate``, ``consumer.resume``; p joins ``active``.

    ``on_partitions_revoked`` deactivates the partitions in the guard, cancels their activations,
    awaits ``on_revoked(partitions)`` (finish or abort in-flight transactions there: heartbeats go
    on during revocation) and stops their producers.
    """

    def __init__(
        self,
        consumer: Any,
        transactions: PartitionTransactions,
        guard: AssignmentGuard,
        *,
        restore: RestoreHook | None = None,
        on_revoked: RevokeHook | None = None,
        retry_backoff: float = 0.1,
        max_retry_backoff: float = 2.0,
        name: str = "",
    ) -> None:
        #: the consumer group, for the logs (a worker has several groups)
        self.name = name
        self._consumer = consumer
        self._transactions = transactions
        self._guard = guard
        self._restore = restore
        self._on_revoked = on_revoked
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._generation = 0
        self._activations: dict[int, asyncio.Task[None]] = {}
        self._active: set[int] = set()
        self._changed = asyncio.Condition()
        self.activation_count = 0  #: completed activations (a metric)
        self._closed = False

    @property
    def active(self) -> frozenset[int]:
        """Tasks (partition numbers) activated and resumed."""
        return frozenset(self._active)

    async def wait_active(self, partitions: Iterable[int]) -> None:
        wanted = set(partitions)
        async with self._changed:
            await self._changed.wait_for(lambda: wanted <= self._active)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _cancel(self, partitions: Iterable[int]) -> None:
        tasks = [t for p in partitions if (t := self._activations.pop(p, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every activation and refuse new ones (the consumer is being stopped: a
        revocation or assignment during its leave must not start fencing or restoring)."""
        self._closed = True
        await self._cancel(list(self._activations))

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._generation += 1
        tps = list(revoked)
        for tp in tps:
            self._guard.deactivate(tp)
        partitions = frozenset(tp.partition for tp in tps)
        await self._cancel(partitions)
        self._active -= partitions
        try:
            if partitions:
                log.info("%s: revoked tasks %s", self.name, sorted(partitions))
                if self._on_revoked is not None:
                    await self._on_revoked(partitions)
        finally:
            for p in partitions:
                await self._transactions.stop(p)
            await self._notify()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Must return in milliseconds: no heartbeats until it does (rule 3).
        self._generation += 1
        tps = list(assigned)
        if not tps:
            return
        self._consumer.pause(*tps)
        by_task: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in tps:
            by_task[tp.partition].append(tp)
        for p, task_tps in by_task.items():
            old = self._activations.pop(p, None)
            if old is not None:
                old.cancel()
            self._spawn(p, task_tps)
        log.info("%s: assigned tasks %s: activating in the background", self.name, sorted(by_task))

    def _spawn(self, partition: int, tps: list[TopicPartition]) -> None:
        if self._closed:
            return
        # One activation per task: one spawned meanwhile (an assignment while
        # ``task_migrated`` awaited) is replaced, never left running beside this one.
        previous = self._activations.pop(partition, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(
            self._activate(partition, tps, self._generation), name=f"daggerflow-activate-{partition}"
        )
        self._activations[partition] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._activations.get(partition) is done:
                del self._activations[partition]

        task.add_done_callback(forget)

    async def task_migrated(self, partition: int) -> None:
        """Close task ``partition`` as a zombie after ``TaskMigrated`` and re-activate it if the
        consumer still owns it (a transaction timeout fences without any rebalance; if another
        member owns it now, our heartbeat soon learns of it and the revocation cancels us)."""
        tps = [tp for tp in self._consumer.assignment() if tp.partition == partition]
        for tp in tps:
            self._guard.deactivate(tp)
        await self._cancel([partition])
        self._active.discard(partition)
        await self._transactions.stop(partition)
        if tps:
            self._consumer.pause(*tps)
            self._spawn(partition, tps)
        await self._notify()

    async def _activate(self, partition: int, tps: list[TopicPartition], generation: int) -> None:
        backoff = self._retry_backoff
        while True:
            try:
                await self._transactions.start(partition)  # rule 1: fence first...
                if self._restore is not None:
                    await self._restore(partition)
                positions: dict[TopicPartition, int] = {}
                unset: list[TopicPartition] = []
                for tp in tps:
                    committed = await self._consumer.committed(tp)  # ...then read committed offsets
                    if committed is None:
                        unset.append(tp)
                    else:
                        positions[tp] = committed
                if unset:
                    positions.update(await self._consumer.beginning_offsets(unset))
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "activating task %d failed; retrying in %.1f s", partition, backoff, exc_info=True
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_retry_backoff)
        current = self._activations.get(partition) is asyncio.current_task()
        if not current or not set(tps) <= set(self._consumer.assignment()):
            # Revoked meanwhile (the cancellation normally comes first). Logged: a partition
            # dropped here and never assigned again would stay paused.
            log.info("%s: activation of task %d dropped (replaced: %s; assignment %s)", self.name, partition,
                     not current, sorted(str(tp) for tp in self._consumer.assignment()))  # fmt: skip
            return
        for tp in tps:  # no await from here on: seek and guard move together
            self._consumer.seek(tp, positions[tp])
            self._guard.activate(tp, positions[tp])
        self._consumer.resume(*tps)
        self._active.add(partition)
        self.activation_count += 1
        log.info(
            "%s: task %d active at %s",
            self.name,
            partition,
            {f"{tp.topic}:{tp.partition}": positions[tp] for tp in tps},
        )
        await self._notify()
