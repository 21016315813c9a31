"""The Kafka runtime: the embedded pipeline, partitioned, with Kafka as the log.

Read it as Kafka Streams: one consumer group (``{app}``) reads the co-partitioned internal
topics; partition ``p`` of them is task ``p`` (``runtime.partition.PartitionTask``): a local
store restored from ``{app}-changelog``/p, a processor, the timers of its instances. A task's
commit is one Kafka transaction of its own producer (``transactional_id = {app}-{p}``): the
changelog records of the batch, the messages it sends (command tasks' outboxes, update
snapshots, dead letters), forwards to other tasks (deliveries, index changes) and its input
offsets. Only then does the local store commit, so the store is never ahead of the log.

Listener topics and agents keep their producers' partitioning. Each gets its own consumer
group and stateless tasks (``TopicLoop``): a listener router maps each message to
correlation pairs (user code) and sends it to the partition of ``{app}-correlation`` that
holds those pairs' index; an agent runs its handler. Both commit their outputs with their
input offsets in one transaction. The index owner forwards deliveries to instance owners
through ``{app}-events`` (design.md §3: two hops).

The exactly-once scheme (one transactional producer per input partition; fence, then read
offsets; a guard against records fetched across a rebalance) is in ``transactions``,
``rebalance`` and ``guard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ..errors import ForwardError, NotOwner, PartitionMoved, TaskInvalidState, TaskMigrated
from ..machine.events import Event
from ..model.instance import Correlation, Instance, merge_listings
from ..model.records import Message, Outgoing
from ..pipeline.background import cancel_and_wait, first_to_end
from ..pipeline.ingress import AgentSpec, ListenerMapper, chunks, dead_letter, map_messages, run_agents
from ..pipeline.items import Incoming, IndexChange, InstanceEvent, Item, Settings
from ..pipeline.partition import PartitionTask
from ..pipeline.ports import RuntimeParts
from ..store.base import Store, WriteBatch
from ..store.changelog import batch_records
from ..store.factory import open_store
from . import codec
from .admin import TopicSpec, ensure_application_topics, ensure_topics, internal_topics
from .compat import partition_state, stop_consumer, tune_aiokafka, wait_on_metadata
from .config import KafkaConfig
from .guard import AssignmentGuard
from .hanging import HangingTransactions, group_offsets_partition
from .owners import Owner, OwnersView, owner_record
from .rebalance import RebalanceListener
from .remote import Forwarder, count_everywhere, list_everywhere
from .restore import restore_from_topic
from .settings import PRODUCER_SETTINGS, consumer_settings, groupless_consumer
from .standby import StandbyReplicas, standby_partitions
from .transactions import COMMIT_TIMEOUT_S, PartitionTransactions, send_many

log = logging.getLogger("daggerflow.kafka")

#: The producers' transaction timeout: the hanging-transaction check only ends transactions
#: older than this (plus a grace), which the coordinator would have aborted if they were live.
TRANSACTION_TIMEOUT_MS = int(PRODUCER_SETTINGS["transaction_timeout_ms"])

#: Partitions restored at the same time (each restore holds a consumer).
RESTORE_CONSUMERS = 4

#: Inputs a task may hold before the fetch loop waits for it (memory bound, backpressure).
MAX_QUEUED = 5000

# (topic, key, value, partition or None, headers or None)
OutRecord = tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None]


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _as_text(value: bytes | None) -> str | bytes | None:
    """Message values as the embedded runtime hands them to user code: text when UTF-8."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in headers or ()}


def _outgoing(out: Outgoing) -> OutRecord:
    headers = [(k, v.encode()) for k, v in out.headers.items()] or None
    return (out.topic, _as_bytes(out.key), _as_bytes(out.value), None, headers)


def _message(tp: TopicPartition, record: Any) -> Message:
    """A consumed record as the runtime's ``Message`` (values as text when UTF-8)."""
    key = None if record.key is None else record.key.decode("utf-8", "replace")
    return Message(tp.topic, record.offset, key, _as_text(record.value), _headers(record.headers),
                   record.timestamp / 1000, tp.partition)  # fmt: skip


def _last_offset(sent: list[tuple[asyncio.Future[Any], int]], topic: str, partition: int) -> int:
    """The offset of the last record sent to ``topic``/``partition`` (deliveries done)."""
    last = -1
    for fut, count in sent:
        meta = fut.result()
        if meta.topic == topic and meta.partition == partition:
            last = max(last, meta.offset + count - 1)
    return last


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


class _Listener(RebalanceListener):
    """The rebalance listener, plus an event set once the first assignment arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assigned_once = asyncio.Event()

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        await super().on_partitions_assigned(assigned)
        self.assigned_once.set()


class TopicLoop:
    """Stateless exactly-once processing of one user topic in its own consumer group: each
    fetched chunk of a partition is handled, and its outputs commit with its offsets."""

    def __init__(
        self,
        runtime: KafkaRuntime,
        group: str,
        topic: str,
        handle: Callable[[TopicPartition, list[Any]], Awaitable[list[OutRecord]]],
    ) -> None:
        self.runtime = runtime
        self.group = group
        self.topic = topic
        self.handle = handle
        self.consumer: Any = None
        self.transactions: PartitionTransactions | None = None
        self.guard = AssignmentGuard()
        self.listener: _Listener | None = None
        self._task: asyncio.Task[None] | None = None
        self._backoff: dict[TopicPartition, float] = {}
        self.stats = CommitStats()

    async def start(self) -> None:
        cfg = self.runtime.config
        settings = consumer_settings(self.group)
        settings["auto_offset_reset"] = cfg.auto_offset_reset
        self.consumer = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap, **settings)
        self.transactions = PartitionTransactions(cfg.bootstrap, self.group, self.group)
        self.listener = _Listener(self.consumer, self.transactions, self.guard, name=self.group,
                                  restore=self._before_reading)  # fmt: skip
        self.consumer.subscribe([self.topic], listener=self.listener)
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"daggerflow-{self.group}")

    async def _before_reading(self, p: int) -> None:
        # After the fence, before the committed offsets: what a broker restart left open.
        assert self.transactions is not None
        await self.runtime.end_fenced(self.transactions, self.group, p)

    async def wait_assigned(self) -> None:
        assert self.listener is not None
        await self.listener.assigned_once.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self.listener is not None:
            await self.listener.close()
        if self.consumer is not None:
            await stop_consumer(self.consumer)
        if self.transactions is not None:
            await self.transactions.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        interval = self.runtime.config.commit_interval
        while True:
            wait = last + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the consumer fetches meanwhile: bigger chunks
            batch = await self.consumer.getmany(timeout_ms=100, max_records=2000)
            last = loop.time()
            stamped = self.guard.stamp(batch)
            # Partitions commit concurrently: each has its own producer, and one after the
            # other a poll of 12 partitions took 12 transaction round trips. A chunk that
            # fails unexpectedly is logged and read again; it never ends the loop, which would
            # leave every partition of this group unread (seen after a broker restart: a seek
            # of a partition revoked meanwhile raised, and the loop died silently).
            results = await asyncio.gather(*(self._chunk(fetched) for fetched in stamped), return_exceptions=True)
            for fetched, result in zip(stamped, results, strict=True):
                if isinstance(result, Exception):
                    log.error("%s: handling %s failed; re-activating it", self.group, fetched.tp, exc_info=result)
                    await self._restart(fetched.tp)

    async def _chunk(self, fetched: Any) -> None:
        records = self.guard.admit(fetched)
        if not records:
            return
        tp = fetched.tp
        try:
            await self._process(tp, records)
            self._backoff.pop(tp, None)
        except TaskMigrated:
            assert self.listener is not None
            await self.listener.task_migrated(tp.partition)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("%s: committing %s failed; retrying from offset %d", self.group, tp, records[0].offset,
                        exc_info=True)  # fmt: skip
            producer = self.transactions.get(tp.partition) if self.transactions else None
            if producer is not None and producer.in_transaction:
                try:
                    async with asyncio.timeout(5.0):
                        await producer.abort()
                except Exception:
                    # Cannot abort (broker gone, producer dead): start over with a new
                    # producer, which fences this one's transaction.
                    assert self.listener is not None
                    await self.listener.task_migrated(tp.partition)
                    return
            if tp not in self.consumer.assignment():
                return  # revoked meanwhile: its new owner starts from the committed offset
            self.guard.rewind(tp, records[0].offset)
            self.consumer.seek(tp, records[0].offset)
            backoff = self._backoff.get(tp, 0.1)
            self._backoff[tp] = min(backoff * 2, 5.0)
            await asyncio.sleep(backoff)

    async def _restart(self, tp: TopicPartition) -> None:
        """After an unexpected failure: re-activate the partition (fence, committed offsets),
        as after ``TaskMigrated``; a partition no longer ours is left to its new owner."""
        assert self.listener is not None
        try:
            await self.listener.task_migrated(tp.partition)
        except Exception:
            log.exception("%s: re-activating partition %d failed", self.group, tp.partition)

    async def _process(self, tp: TopicPartition, records: list[Any]) -> None:
        outs = await self.handle(tp, records)
        async with asyncio.timeout(COMMIT_TIMEOUT_S):
            await self._commit(tp, records, outs)

    async def _commit(self, tp: TopicPartition, records: list[Any], outs: list[OutRecord]) -> None:
        started = time.perf_counter()
        self.stats.commits += 1
        self.stats.records += len(outs)
        try:
            await self._send_and_commit(tp, records, outs)
        finally:
            self.stats.kafka_seconds += time.perf_counter() - started

    async def _send_and_commit(self, tp: TopicPartition, records: list[Any], outs: list[OutRecord]) -> None:
        offsets = {tp: records[-1].offset + 1}
        if self.runtime.config.exactly_once:
            assert self.transactions is not None
            producer = self.transactions.get(tp.partition)
            if producer is None:
                return  # revoked while handling: the next owner handles these again
            await producer.begin()
            await producer.send_many(outs)
            await producer.commit(offsets)
        else:
            sent = await send_many(await self.runtime.plain_producer(self.group, tp.partition), outs)
            await asyncio.gather(*(fut for fut, _ in sent))
            await self.consumer.commit(offsets)


class KafkaRuntime:
    """The ``Runtime`` on Kafka: the partitions this worker owns, each a ``PartitionTask``."""

    def __init__(self, config: KafkaConfig, parts: RuntimeParts) -> None:
        self.config = config
        self.settings = parts.settings
        self.subscriptions = parts.subscriptions
        self.context = parts.context
        self.observer = parts.observer
        self.web_url: str | None = None
        self._running = False
        self.topics = internal_topics(config.app, config.partitions, dead_letter=config.dead_letter_topic)
        self.owners_topic = TopicSpec(f"{config.app}-owners", 1, {"cleanup.policy": "compact"})
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.tasks: dict[int, PartitionTask] = {}
        self.producer: Any = None
        # At-least-once: a plain producer per (consumer group, partition), so that partitions
        # commit side by side (on one shared producer they queued behind each other: ~0.5 s
        # per commit instead of ~0.1 s).
        self._plain: dict[tuple[str, int], Any] = {}
        self._consumer: Any = None
        self._transactions: PartitionTransactions | None = None
        self._guard = AssignmentGuard()
        self._listener: _Listener | None = None
        # Restore consumers: a restore assigns its consumer one partition, so concurrent
        # activations (a failover moves several partitions at once) each take one.
        self._restore_pool: asyncio.Queue[Any] = asyncio.Queue()
        self._restore_consumers: list[Any] = []
        self._loops: list[TopicLoop] = []
        # Every partition a partition task's transaction can write (``_end_fenced``), once known.
        self._txn_partitions: list[TopicPartition] | None = None
        # Listener topics co-partitioned with the correlation index, read by the main group.
        self._direct: dict[str, ListenerMapper] = {}
        self._fetch_task: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._last_buffer_id = 0
        self.restored_records = 0
        self.commit_stats = CommitStats()
        self.standby: StandbyReplicas | None = None
        self.hanging: HangingTransactions | None = None
        self._user_topics: list[str] = []
        self._watched: dict[int, list[TopicPartition]] = {}
        self._groups: list[str] = []
        self._activating: set[int] = set()
        self._standby_lock = asyncio.Lock()
        self._standby_update: asyncio.Task[None] | None = None
        self._standby_dirty = asyncio.Event()
        self.owners: OwnersView | None = None
        self.forwarder = Forwarder()

    # Partitioning -------------------------------------------------------------------------

    def partition_of(self, instance_id: str) -> int:
        return codec.partition_for(instance_id, self.config.partitions)

    def local_task(self, instance_id: str) -> PartitionTask | None:
        task = self.tasks.get(self.partition_of(instance_id))
        if task is None or task.closed:
            return None
        return task

    # Lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    async def start(self, web_url: str | None) -> None:
        self.web_url = web_url
        listeners = dict(self.subscriptions.listeners)
        agents = list(self.subscriptions.agents)
        user_topics = self.subscriptions.user_topics()
        cfg = self.config
        self._running = True
        tune_aiokafka()
        await ensure_topics(cfg.bootstrap, [*self.topics.all(), self.owners_topic])
        await ensure_application_topics(cfg.bootstrap, sorted({*user_topics, *listeners, *(a.topic for a in agents)}),
                                        cfg.partitions)  # fmt: skip
        self.producer = AIOKafkaProducer(
            bootstrap_servers=cfg.bootstrap, enable_idempotence=True, acks="all", linger_ms=1
        )
        await self.producer.start()
        self.owners = OwnersView(cfg.bootstrap, self.owners_topic.name)
        await self.owners.start()
        if cfg.role != "worker":
            log.info("daggerflow client of %r connected to %s", cfg.app, cfg.bootstrap)
            return
        for _ in range(RESTORE_CONSUMERS):
            restorer = groupless_consumer(cfg.bootstrap, fetch_max_wait_ms=100,
                                          max_partition_fetch_bytes=4 * 1024 * 1024)  # fmt: skip
            await restorer.start()
            self._restore_consumers.append(restorer)
            self._restore_pool.put_nowait(restorer)
        # Hanging transactions (a broker restart can leave some: docs/kafka-runtime-notes.md
        # §7) are found and ended by the owner of the partitions they block.
        self._user_topics = sorted({*user_topics, *listeners, *(a.topic for a in agents)})
        # A listener topic with the application's partition count is co-partitioned with the
        # correlation index (both use Kafka's default partitioner): the main group reads it,
        # and a message keyed by its correlation value is matched without a routing hop.
        # (The main group starts new partitions at the earliest offset, so with "latest"
        # the topics keep their own groups.)
        for topic, classes in listeners.items():
            if cfg.auto_offset_reset == "earliest" and len(await self.producer.partitions_for(topic)) == cfg.partitions:
                self._direct[topic] = ListenerMapper(topic, classes)
        routed = [t for t in listeners if t not in self._direct]
        if self._direct:
            log.info("listener topics read by the partition tasks: %s", sorted(self._direct))
        self._groups = [
            cfg.app,
            *(f"{cfg.app}.listener.{t}" for t in routed),
            *(f"{cfg.app}.agent.{a.name}" for a in agents),
        ]
        self.hanging = HangingTransactions(
            cfg.bootstrap, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS, grace_ms=15000, interval=5.0
        )
        await self.hanging.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap, **consumer_settings(cfg.app))
        self._transactions = PartitionTransactions(cfg.bootstrap, cfg.app, cfg.app)
        self._listener = _Listener(
            self._consumer,
            self._transactions,
            self._guard,
            restore=self._activate,
            on_revoked=self._revoked,
            name=cfg.app,
        )
        self._consumer.subscribe(
            [self.topics.events.name, self.topics.correlation.name, *self._direct], listener=self._listener
        )
        if cfg.standbys > 0:
            self.standby = StandbyReplicas(cfg.bootstrap, self.topics.changelog.name, self.open_store)
            await self.standby.start()
            self.owners.on_change(lambda _owners: self._standby_dirty.set())
            self._standby_update = asyncio.create_task(self._update_standbys(), name="daggerflow-standbys")
        await self._consumer.start()
        self._fetch_task = asyncio.create_task(self._fetch(), name="daggerflow-kafka-fetch")
        for topic in routed:
            classes = listeners[topic]
            self._loops.append(
                TopicLoop(self, f"{cfg.app}.listener.{topic}", topic, self._router(topic, classes))
            )
        for agent in agents:
            self._loops.append(TopicLoop(self, f"{cfg.app}.agent.{agent.name}", agent.topic, self._agent(agent)))
        for loop in self._loops:
            await loop.start()
        waits = [self._listener.assigned_once.wait(), *(loop.wait_assigned() for loop in self._loops)]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), 60.0)
        except TimeoutError:
            log.warning("no partition assignment after 60 s; going on (is the group stuck?)")
        log.info("worker ready: %s in group %r on %s (%d partitions, %s)", self.worker_id, cfg.app,
                 cfg.bootstrap, cfg.partitions, cfg.guarantee)  # fmt: skip

    async def stop(self) -> None:
        self._running = False
        await self.context.jobs.drain(self.config.shutdown_timeout)
        log.info("partition tasks: %s", self.commit_stats.summary())
        for loop in self._loops:
            log.info("%s: %s", loop.group, loop.stats.brief())
            await loop.stop()
        self._loops.clear()
        await cancel_and_wait(self._fetch_task)
        self._fetch_task = None
        await cancel_and_wait(self._standby_update)
        if self.standby is not None:
            await self.standby.stop()
        # Let the tasks commit what they hold, then leave the group (its revocation closes them).
        idle = [
            asyncio.create_task(t.processor.wait_idle())
            for t in self.tasks.values()
            if t.failed is None and not t.closed
        ]
        if idle:
            _, late = await asyncio.wait(idle, timeout=self.config.shutdown_timeout)
            for waiter in late:
                waiter.cancel()
            if late:
                log.warning("%d partition tasks still busy after %.0f s; their inputs are read again by "
                            "the next owner", len(late), self.config.shutdown_timeout)  # fmt: skip
        if self._listener is not None:
            await self._listener.close()  # no activation may start (or retry) from here on
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        for p in list(self.tasks):
            await self._close(p)
        for watcher in list(self._watchers):
            await cancel_and_wait(watcher)
        if self._transactions is not None:
            await self._transactions.close()
        for restorer in self._restore_consumers:
            await stop_consumer(restorer)
        self._restore_consumers.clear()
        for plain in self._plain.values():
            with contextlib.suppress(Exception):
                await plain.stop()
        self._plain.clear()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            self.producer = None
        if self.hanging is not None:
            await self.hanging.stop()
            self.hanging = None
        if self.owners is not None:
            await self.owners.stop()
            self.owners = None
        await self.forwarder.close()

    # Tasks --------------------------------------------------------------------------------

    def _store_path(self, p: int) -> str:
        base = os.path.join(self.config.datadir, self.config.app)
        os.makedirs(base, exist_ok=True)
        suffix = "rocks" if self.config.store_kind == "rocksdb" else "db"
        return os.path.join(base, f"p{p:03d}.{suffix}")

    def open_store(self, p: int) -> Store:
        path = self._store_path(p)
        url = f"{self.config.store_kind}:///{os.path.abspath(path)}"
        return open_store(url, datadir=self.config.datadir, application_name=self.config.app,
                          durability=self.config.durability)  # fmt: skip

    async def _update_standbys(self) -> None:
        """Keep standby replicas of the partitions ``standby_partitions`` gives this worker
        (recomputed whenever the owners change), never of one it owns or is activating."""
        assert self.standby is not None and self.owners is not None
        while True:
            await self._standby_dirty.wait()
            self._standby_dirty.clear()
            owners = {p: o.worker for p, o in self.owners.owners().items()}
            async with self._standby_lock:  # an activation cannot start in between
                wanted = standby_partitions(owners, self.worker_id, self.config.standbys)
                wanted -= set(self.tasks) | self._activating
                try:
                    await self.standby.set_partitions(wanted)
                except Exception:
                    log.warning(
                        "updating standby replicas failed; retrying at the next change", exc_info=True
                    )
            if wanted:
                log.info("standby replicas: %s (lag %s)", sorted(wanted), self.standby.lag())

    async def _activate(self, p: int) -> None:
        """The restore step of an activation (after the fence, before offsets are read)."""
        async with self._standby_lock:
            self._activating.add(p)
            if self.standby is not None:
                await self.standby.release(p)  # its store file is ours now, warm
        try:
            await self._activate_task(p)
        finally:
            self._activating.discard(p)

    async def _activate_task(self, p: int) -> None:
        await self._close(p)
        await self._watch_hanging(p)  # before the restore, which reads the changelog up to its LSO
        assert self._transactions is not None
        # ...and what the previous owner's skipped markers left open
        await self.end_fenced(self._transactions, self.config.app, p)
        store = self.open_store(p)
        try:
            restorer = await self._restore_pool.get()
            try:
                result = await restore_from_topic(store, restorer, self.topics.changelog.name, p)
            finally:
                self._restore_pool.put_nowait(restorer)
            self.restored_records += result.records
            assert self._transactions is not None
            producer = self._transactions[p]
            known = self.owners.owner(p) if self.owners is not None else None
            if known is None or known.worker != self.worker_id or known.url != self.web_url:
                await self._publish_owner(p, producer)
        except BaseException:
            store.close()
            raise
        self._start_task(p, store)

    async def _publish_owner(self, p: int, producer: Any) -> None:
        """Publish this worker as p's owner with p's fenced producer (a zombie cannot
        overwrite it). Skipped by the caller when the owners topic already says so."""
        await producer.begin()
        key, value = owner_record(Owner(p, self.web_url, self.worker_id, time.time()))
        await producer.send(self.owners_topic.name, value, key=key)
        await producer.commit()

    def _start_task(self, p: int, store: Store) -> None:
        task = PartitionTask(p, store, self._settings(p), self.context, self._committer(p, store))
        self.tasks[p] = task  # before it starts: a resumed job may report at once
        task.start()
        watcher = asyncio.create_task(self._watch(p, task), name=f"daggerflow-watch-{p}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def purge(self) -> None:
        """Forget expired dedupe ids and buffered messages on every active partition."""
        for task in self.tasks.values():
            task.purge()

    async def _watch(self, p: int, task: PartitionTask) -> None:
        """A task whose commit failed is closed as a zombie and activated again (fence,
        restore, committed offsets): its uncommitted inputs are read again."""
        processing = task.processor.task
        assert processing is not None
        try:
            await asyncio.shield(processing)
        except asyncio.CancelledError:
            if not processing.done():
                raise  # this watcher was cancelled (shutdown), not the processor
        except Exception:
            pass  # the processor failed: handled below
        if task.closed or self.tasks.get(p) is not task:
            return
        log.warning("task %d stopped (%r): re-activating it", p, task.failed)
        try:
            await self._close(p)
        except Exception:
            log.exception("closing task %d failed; re-activating it anyway", p)
        if self._listener is not None:
            await self._listener.task_migrated(p)

    async def _watch_hanging(self, p: int) -> None:
        """Have the reaper watch what task p's owner answers for: p of the internal topics,
        the partitions q = p (mod N) of the application's topics, and (task 0) the owners
        and dead-letter topics and the groups' offsets partitions."""
        if self.hanging is None or p in self._watched:
            return
        n = self.config.partitions
        tps = [
            TopicPartition(t.name, p)
            for t in (self.topics.events, self.topics.correlation, self.topics.changelog)
        ]
        try:
            client = self.producer.client
            for topic in self._user_topics:
                tps.extend(TopicPartition(topic, q) for q in await self._partitions_of(topic) if q % n == p)
            if p == 0:
                tps.append(TopicPartition(self.owners_topic.name, 0))
                tps.append(TopicPartition(self.topics.dead_letter.name, 0))
                for group in self._groups:
                    tps.append(await group_offsets_partition(client, group))
        except Exception:
            log.warning(
                "listing the partitions of task %d for the hanging-transaction check failed", p, exc_info=True
            )
        self._watched[p] = tps
        self.hanging.watch(tps)

    async def end_fenced(self, transactions: PartitionTransactions, group: str, p: int) -> None:
        """End the transactions of p's earlier owners (in consumer group ``group``) that a broker
        restart left open, their markers skipped, before p is restored and its offsets read:
        see ``HangingTransactions.end_fenced``. Every partition such a transaction can have
        written is looked at (internal and application topics, the group's offsets). A failure
        is logged and left to the reaper's periodic pass."""
        if self.hanging is None:
            return
        producer = transactions.get(p)
        identity = producer.identity() if producer is not None else None
        if identity is None:
            return
        try:
            client = self.producer.client
            if self._txn_partitions is None:
                tps = [TopicPartition(self.owners_topic.name, 0), TopicPartition(self.topics.dead_letter.name, 0)]
                for topic in [self.topics.events.name, self.topics.correlation.name, self.topics.changelog.name,
                              *self._user_topics]:  # fmt: skip
                    tps += [TopicPartition(topic, q) for q in await self._partitions_of(topic)]
                self._txn_partitions = tps
            offsets = await group_offsets_partition(client, group)
            await self.hanging.end_fenced(transactions.transactional_id(p), *identity, [offsets, *self._txn_partitions])
        except Exception:
            log.warning("%s: checking task %d's partitions for transactions left open failed", group, p, exc_info=True)

    async def _partitions_of(self, topic: str) -> list[int]:
        """A topic's partitions, from the producer's metadata (fetched if not known yet)."""
        client = self.producer.client
        parts = client.cluster.partitions_for_topic(topic)
        if parts is None:
            await wait_on_metadata(client, topic)
            parts = client.cluster.partitions_for_topic(topic) or set()
        return sorted(parts)

    async def _revoked(self, partitions: frozenset[int]) -> None:
        for p in sorted(partitions):
            await self._close(p, unwatch=True)
        self._standby_dirty.set()  # a revoked partition may now be one to keep warm

    async def _close(self, p: int, *, unwatch: bool = False) -> None:
        if unwatch and self.hanging is not None and p in self._watched:
            self.hanging.unwatch(self._watched.pop(p))
        task = self.tasks.pop(p, None)
        if task is None:
            return
        self.context.jobs.cancel_where(lambda iid: self.partition_of(iid) == p)
        await task.close()

    def _settings(self, p: int) -> Settings:
        n = self.config.partitions
        return dataclasses.replace(
            self.settings,
            owns_instance=lambda iid: codec.partition_for(iid, n) == p,
            owns_correlation=lambda at: codec.partition_of_correlation(at, n) == p,
        )

    def _next_buffer_ids(self, count: int) -> list[int]:
        # Unique within the partition across owners: microseconds since the epoch, moving on.
        start = max(time.time_ns() // 1000, self._last_buffer_id + 1)
        self._last_buffer_id = start + count - 1
        return list(range(start, start + count))

    def _committer(
        self, p: int, store: Store
    ) -> Callable[[WriteBatch, float], Awaitable[list[tuple[str, int]]]]:
        changelog = self.topics.changelog.name

        async def commit(batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
            if batch.buffer_put and not batch.buffer_ids:
                batch.buffer_ids = self._next_buffer_ids(len(batch.buffer_put))
            records = batch_records(batch, ts)
            outs = [_outgoing(o) for o in batch.appends]
            outs.extend(self._forward_record(f) for f in batch.forwards)
            offsets = dict(batch.input_offsets)
            started = time.perf_counter()
            if records or outs or offsets:
                changes = [(changelog, key, value, p, None) for key, value in records]
                if self.config.exactly_once:
                    assert self._transactions is not None
                    producer = self._transactions.get(p)
                    if producer is None:
                        raise TaskMigrated(p, self._transactions.transactional_id(p), "no producer (revoked)")
                    try:
                        async with asyncio.timeout(COMMIT_TIMEOUT_S):
                            await producer.begin()
                            sent = await producer.send_many([*changes, *outs])
                            t_sent = time.perf_counter()
                            # Deliveries and offsets at once, then EndTxn (PartitionProducer.commit).
                            await producer.commit(offsets)
                        self.commit_stats.phases[0] += t_sent - started
                        self.commit_stats.phases[1] += time.perf_counter() - t_sent
                    except TaskMigrated:
                        raise
                    except BaseException:
                        if producer.in_transaction:
                            with contextlib.suppress(Exception):
                                async with asyncio.timeout(5.0):
                                    await producer.abort()
                        raise
                else:
                    async with asyncio.timeout(COMMIT_TIMEOUT_S):
                        sent = await send_many(await self.plain_producer(self.config.app, p), [*changes, *outs])
                        await asyncio.gather(*(fut for fut, _ in sent))
                        if offsets:
                            await self._consumer.commit(offsets)
                if changes:
                    batch.changelog_offsets[p] = _last_offset(sent, changelog, p)
            kafka_done = time.perf_counter()
            batch.appends = []  # they went to Kafka; the local store keeps no topics
            batch.positions.clear()
            result = store.commit(batch, ts)
            self.commit_stats.commits += 1
            self.commit_stats.kafka_seconds += kafka_done - started
            self.commit_stats.store_seconds += time.perf_counter() - kafka_done
            self.commit_stats.records += len(records) + len(outs)
            if not records:
                self.commit_stats.stateless += 1
            return result

        return commit

    def _forward_record(self, forward: tuple[str, Any, Any]) -> OutRecord:
        kind, target, payload = forward
        n = self.config.partitions
        if kind == "event":
            return (self.topics.events.name, target.encode(), codec.encode(payload),
                    codec.partition_for(target, n), None)  # fmt: skip
        if kind == "routed":
            routed: codec.Routed = payload
            first = Correlation(routed.topic, *routed.mappings[0])
            return (self.topics.correlation.name, codec.correlation_key(first).encode(), codec.encode(routed),
                    target, None)  # fmt: skip
        at: Correlation = target
        change: IndexChange = payload
        op = codec.IndexOp(at, change.instance, change.node, change.put, change.only_one)
        return (self.topics.correlation.name, codec.correlation_key(at).encode(), codec.encode(op),
                codec.partition_of_correlation(at, n), None)  # fmt: skip

    # The fetch loop -------------------------------------------------------------------------

    async def _fetch(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=2000)
            # Listener topics last: a task's correlation records of this fetch go to it first
            # (``_listener_items`` checks that it has every index change already).
            for fetched in sorted(self._guard.stamp(batch), key=lambda f: f.tp.topic in self._direct):
                records = self._guard.admit(fetched)
                if not records:
                    continue
                task = self.tasks.get(fetched.tp.partition)
                if task is None or task.closed:
                    continue  # being re-activated: it seeks back to its committed offsets
                mapper = self._direct.get(fetched.tp.topic)
                if mapper is not None:
                    for item in await self._listener_items(mapper, fetched.tp, records):
                        task.submit(item)
                    continue
                for record in records:
                    task.submit(self._item(fetched.tp, record))
                if task.processor.queue.qsize() > MAX_QUEUED:
                    await task.processor.wait_idle()

    def _item(self, tp: TopicPartition, record: Any) -> Item:
        source = (tp, record.offset)
        try:
            if tp.topic == self.topics.events.name:
                event = codec.decode_event(record.value)
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
            message = _message(tp, record)
            letter = dead_letter(self.topics.dead_letter.name, message, self.config.app,
                                 f"{type(exc).__name__}: {exc}", "", partition=tp.partition)  # fmt: skip
            return Incoming("", message, [], dead_letter=letter, source=source)

    # Stateless loops --------------------------------------------------------------------

    def _routed(
        self, mapper: ListenerMapper, msg: Message, pairs: list[tuple[str, str]], message_id: str | None
    ) -> dict[int, codec.Routed]:
        """The message for each correlation partition that indexes some of its pairs."""
        n = self.config.partitions
        by_partition: dict[int, list[tuple[str, str]]] = {}
        for pair in pairs:
            at = Correlation(mapper.topic, pair[0], pair[1])
            by_partition.setdefault(codec.partition_of_correlation(at, n), []).append(pair)
        assert msg.partition is not None
        topic = mapper.topic
        return {
            part: codec.Routed(topic, msg.partition, msg.offset, msg.key, msg.value, found, message_id)
            for part, found in by_partition.items()
        }

    async def _listener_items(self, mapper: ListenerMapper, tp: TopicPartition, records: list[Any]) -> list[Item]:
        """A listener topic read directly by the task of its partition (co-partitioned with
        the correlation index): this partition's pairs are matched here, the others go to
        their index owners as forwards in the same transaction, with the input offset."""
        items: list[Item] = []
        group = f"{self.config.app}.listener.{mapper.topic}"
        current = self._index_current(tp)
        messages = [_message(tp, r) for r in records]
        for msg, mapped in zip(messages, await map_messages(mapper, messages), strict=True):
            source = (tp, msg.offset)
            if mapped.error is not None:
                letter = mapped.letter(self.topics.dead_letter.name, msg, group, partition=tp.partition)
                items.append(Incoming("", msg, [], dead_letter=letter, source=source))
                continue
            routed = self._routed(mapper, msg, mapped.pairs, mapped.message_id)
            # This partition's own pairs are matched here only if every index change sent to
            # it before this message was read is applied (else they take the routed way).
            own = routed.pop(tp.partition, None) if current else None
            # (no pair of its own: nothing to deduplicate here; the owners do, with the routes)
            items.append(Incoming("", msg, list(own.mappings) if own else [],
                                  mapped.message_id if own else None, source=source, routes=list(routed.items()),
                                  unmatched_route=None if own is None else (tp.partition, own)))  # fmt: skip
        return items

    def _index_current(self, listener: TopicPartition) -> bool:
        """Whether task p has been handed every record of its correlation partition that was
        committed before the listener records just fetched from ``listener`` were produced.

        A listener topic read directly and the correlation topic are two inputs of one task,
        with no order between them: an index change committed before a message was sent can
        still be unread. It is read when the correlation partition's position is at its last
        stable offset, and that offset was polled no earlier than the listener partition was
        (so after the message was produced)."""
        consumer = self._consumer
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

    def _router(
        self, topic: str, classes: list[type]
    ) -> Callable[[TopicPartition, list[Any]], Awaitable[list[OutRecord]]]:
        """A listener topic that is not co-partitioned with the correlation index (another
        partition count): its own consumer group re-routes each message to the index owners."""
        mapper = ListenerMapper(topic, classes)
        dead = self.topics.dead_letter.name
        group = f"{self.config.app}.listener.{topic}"

        async def route(tp: TopicPartition, records: list[Any]) -> list[OutRecord]:
            outs: list[OutRecord] = []
            messages = [_message(tp, r) for r in records]
            for msg, mapped in zip(messages, await map_messages(mapper, messages), strict=True):
                if mapped.error is not None:
                    outs.append(_outgoing(mapped.letter(dead, msg, group, partition=tp.partition)))
                    continue
                for part, routed in self._routed(mapper, msg, mapped.pairs, mapped.message_id).items():
                    outs.append(self._forward_record(("routed", part, routed)))
            return outs

        return route

    def _agent(self, agent: AgentSpec) -> Callable[[TopicPartition, list[Any]], Awaitable[list[OutRecord]]]:
        dead = self.topics.dead_letter.name
        fn, name, concurrency = agent.handler, agent.name, agent.concurrency

        async def handle(tp: TopicPartition, records: list[Any]) -> list[OutRecord]:
            outs: list[OutRecord] = []
            messages = [_message(tp, r) for r in records]
            for chunk in chunks(messages, concurrency):
                outs.extend(_outgoing(o) for o in await run_agents(fn, chunk, name, dead))
            return outs

        return handle

    # Calls from the engine ------------------------------------------------------------------

    async def plain_producer(self, group: str, partition: int) -> Any:
        """The at-least-once producer of a partition of a consumer group (made on first use)."""
        producer = self._plain.get((group, partition))
        if producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.config.bootstrap, enable_idempotence=True, acks="all",
                                        linger_ms=0, max_batch_size=PRODUCER_SETTINGS["max_batch_size"])  # fmt: skip
            await producer.start()
            self._plain[(group, partition)] = producer
        return producer

    async def send_plain(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                         partition: int | None = None, headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:  # fmt: skip
        if self.producer is None:
            raise PartitionMoved("the Kafka runtime is not running")
        fut: asyncio.Future[Any] = await self.producer.send(
            topic, value, key=key, partition=partition, headers=headers
        )
        return fut

    async def append(self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None) -> int:
        out = _outgoing(Outgoing(topic, key, value, dict(headers or {})))
        fut = await self.send_plain(out[0], out[2], key=out[1], headers=out[4])
        meta = await fut
        return int(meta.offset)

    async def call(self, instance_id: str, event: Event) -> tuple[bool, Instance | None]:
        """Apply ``event`` on this worker if it owns the instance (returns (True, result)),
        else send it to the owner through the events topic (returns (False, None) once the
        broker has it)."""
        task = self.local_task(instance_id)
        p = self.partition_of(instance_id)
        if task is not None and self._listener is not None and p in self._listener.active:
            try:
                return True, await task.processor.call(instance_id, event)
            except PartitionMoved:
                pass
        fut = await self.send_plain(self.topics.events.name, codec.encode(event),  # type: ignore[arg-type]
                                    key=instance_id.encode(), partition=p)  # fmt: skip
        await fut
        return False, None

    def committed(self, instance_id: str) -> Instance | None:
        task = self.local_task(instance_id)
        return None if task is None else task.processor.committed_instance(instance_id)

    def submit_outcome(self, instance_id: str, event: Event, box: list[Outgoing]) -> None:
        task = self.local_task(instance_id)
        if task is not None:
            task.processor.submit_event(instance_id, event, box)

    async def remote_instance(self, instance_id: str, *, timeout: float = 10.0) -> Instance | None:
        """The instance from the worker that owns its partition (its REST API).

        During a rebalance the owners topic may still name this worker (its own partition is
        being re-activated) or a worker that just lost the partition (it answers 421): wait,
        within ``timeout``, for this worker's task or for a new owner, and ask again. Raises
        ``ForwardError`` when nobody answers in time: "unknown" is not "does not exist"."""
        assert self.owners is not None
        p = self.partition_of(instance_id)
        deadline = time.monotonic() + timeout
        tried: Owner | None = None
        while True:
            task = self.local_task(instance_id)
            if task is not None:
                return task.processor.committed_instance(instance_id)
            owner = self.owners.owner(p)
            left = deadline - time.monotonic()
            if (
                owner is not None
                and owner.url is not None
                and owner.url != self.web_url
                and owner != tried
            ):
                try:
                    return await self.forwarder.get_instance(owner.url, instance_id)
                except ForwardError as exc:
                    if exc.status not in (None, 421) or left <= 0:
                        raise
                    tried = owner
                    continue
            if owner is not None and owner.url is None and owner.worker != self.worker_id:
                return None  # its owner serves no REST API: nobody can answer
            if left <= 0:
                raise ForwardError(
                    str(owner.url if owner else None), f"no worker answers for partition {p} now"
                )
            try:
                await self.owners.wait_owner(p, min(left, 0.5), other_than=owner)
            except TimeoutError:
                pass

    async def poll_until(
        self, instance_id: str, check: Callable[[Instance], bool], timeout: float | None
    ) -> Instance:
        """Wait for an instance another worker holds: ask its owner, backing off to 1 s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            found = self.committed(instance_id)
            if found is None:
                with contextlib.suppress(Exception):
                    found = await self.remote_instance(instance_id)
            if found is not None and check(found):
                return found
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"instance {instance_id!r} did not reach the state in {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _other_urls(self) -> list[str]:
        if self.owners is None:
            return []
        return [u for u in self.owners.urls() if u != self.web_url]

    def list_local(self, *, status: str | None, template: str | None, limit: int, offset: int) -> list[Instance]:
        """The instances of the partitions this worker holds."""
        return merge_listings(
            (s.list_instances(status=status, template=template, limit=offset + limit, offset=0) for s in self.stores()),
            offset=offset,
            limit=limit,
        )

    def count_local(self, *, status: str | None, template: str | None) -> int:
        return sum(s.count_instances(status=status, template=template) for s in self.stores())

    async def list_all(self, *, status: str | None, template: str | None, limit: int, offset: int) -> list[Instance]:
        """Every worker's instances, merged in listing order (their REST APIs are asked)."""
        local = self.list_local(status=status, template=template, limit=offset + limit, offset=0)
        remote = await list_everywhere(self.forwarder, self._other_urls(), status=status, template=template,
                                       limit=offset + limit, offset=0)  # fmt: skip
        return merge_listings([local, remote], offset=offset, limit=limit)

    async def count_all(self, *, status: str | None, template: str | None) -> int:
        local = self.count_local(status=status, template=template)
        return local + await count_everywhere(
            self.forwarder, self._other_urls(), status=status, template=template
        )

    def local_instance(self, instance_id: str) -> Instance | None:
        """The committed instance if this worker holds its partition now (REST forwarding
        answers with it); ``NotOwner`` ("ask the owner again", not "no such instance") when
        the partition moved or is being activated."""
        if self.local_task(instance_id) is None:
            raise NotOwner(f"this worker does not hold the partition of {instance_id!r} now")
        return self.committed(instance_id)

    async def get_instance(self, instance_id: str) -> Instance | None:
        """The committed state of any instance: from this worker if it holds it, else from
        the worker that owns it, through its REST API."""
        local = self.committed(instance_id)
        if local is not None:
            return local
        return await self.remote_instance(instance_id)

    async def wait_for(self, instance_id: str, check: Callable[[Instance], bool], timeout: float | None) -> Instance:
        current = self.committed(instance_id)
        if current is not None and check(current):
            return current
        if self.local_task(instance_id) is None:
            return await self.poll_until(instance_id, check, timeout)
        return await self.observer.wait(instance_id, check, timeout)

    def read_topic(self, topic: str, start: int, limit: int) -> list[Message]:
        raise TaskInvalidState(
            f"topic {topic!r} is a Kafka topic: read it with a Kafka consumer (the REST API reads embedded topics)"
        )

    def topic_names(self) -> list[str]:
        """The application's topics (those its templates, listeners and agents use)."""
        return sorted(self.subscriptions.user_topics() | set(self.subscriptions.listeners))

    def subscriptions_changed(self) -> None:
        log.warning("listeners or agents registered after start are read from the next start on")

    def stats(self) -> dict[str, Any]:
        tasks = [t for t in self.tasks.values() if not t.closed]
        return {
            "running": self._running,
            "transitions": sum(t.processor.transitions for t in tasks),
            "batches": sum(t.processor.batches for t in tasks),
            "queued": sum(t.processor.queue.qsize() for t in tasks),
            "jobs_running": len(self.context.jobs),
            "timers": sum(len(t.timers) for t in tasks),
            "partitions": sorted(self.active_partitions),
        }

    def vital_task(self) -> asyncio.Task[None]:
        """The task whose end means the worker stopped working: its fetch loop or one of its
        listener/agent loops ended (they only end by failing: better a worker that exits and
        is restarted than one whose group's partitions nobody reads). A client has none, so
        this is one that ends only when cancelled."""
        if self._fetch_task is None:
            self._fetch_task = asyncio.create_task(_forever(), name="daggerflow-client")
        loops = [loop._task for loop in self._loops if loop._task is not None]
        # The job runner serves every partition: its failure is fatal too.
        jobs = asyncio.create_task(self.context.jobs.failure(), name="daggerflow-job-runner")
        return asyncio.create_task(first_to_end([self._fetch_task, *loops, jobs]), name="daggerflow-vital")

    def stores(self) -> list[Store]:
        return [t.store for t in self.tasks.values() if not t.closed]

    @property
    def active_partitions(self) -> frozenset[int]:
        return self._listener.active if self._listener is not None else frozenset()


async def _forever() -> None:
    await asyncio.Event().wait()
