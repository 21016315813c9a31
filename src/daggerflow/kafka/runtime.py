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
``task_manager`` and ``guard``. This module composes the worker: ``fetch`` (the poll phase),
``active_tasks`` and ``task_manager`` (which partitions it owns, their stores and states),
``collector`` (the commit), ``listeners`` and ``topic_loop`` (listener routing, agents),
``remote`` (reads of other workers' instances); ``supervisor`` lists its long-lived loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiokafka import TopicPartition

from ..errors import NotOwner, PartitionMoved, TaskInvalidState, TooLarge
from ..machine.events import Create, Event
from ..model.bulk import BulkShare, BulkSpec
from ..model.history import Page
from ..model.instance import Instance, merge_listings
from ..model.query import InstanceQuery, listing_query, sort_key
from ..model.records import Message, Outgoing
from ..model.schedule import Schedule, schedule_key
from ..model.workers import OwnerEntry
from ..pipeline.partition import PartitionTask
from ..pipeline.ports import RuntimeParts
from ..pipeline.running import running_in
from ..store.base import Store
from . import codec
from .active_tasks import ActiveTasks
from .admin import TopicSpec, ensure_application_topics, ensure_topics, internal_topics
from .collector import GroupClients, RecordCollector
from .compat import tune_aiokafka
from .config import RECORD_LIMIT, KafkaConfig
from .context import WorkerContext
from .fetch import FetchLoop, consumer_lag
from .guard import AssignmentGuard
from .hanging import HangingTransactions, high_watermarks
from .hanging.watch import HangingWatch
from .listeners import ListenerRouting, listener_group
from .owners import OwnersView
from .preflight import check_connection
from .rebalance import RebalanceListener
from .records import ForwardEncoder, outgoing_record
from .remote import Forwarder, RemoteReads
from .settings import PRODUCER_SETTINGS, consumer_settings, new_consumer, new_producer
from .supervisor import Supervisor
from .topic_loop import TopicLoop, agent_group, stateless_loops
from .topic_reader import TopicReader
from .transactions import PartitionTransactions

log = logging.getLogger("daggerflow.kafka")

#: The producers' transaction timeout: the hanging-transaction check only ends transactions
#: older than this (plus a grace), which the coordinator would have aborted if they were live.
TRANSACTION_TIMEOUT_MS = int(PRODUCER_SETTINGS["transaction_timeout_ms"])


#: How often the start of a bulk job is sent to a partition before the call fails.
BULK_SEND_ATTEMPTS = 3
#: Seconds an owner's call waits for the events sent to its partition before it; past that
#: the call goes through the events topic too, behind them.
ORDER_WAIT_S = 5.0
#: Seconds a message's explanation waits for a group's committed offset.
COMMITTED_WAIT_S = 5.0

class KafkaRuntime:
    """The ``Runtime`` on Kafka: the partitions this worker owns, each a ``PartitionTask``."""

    def __init__(self, config: KafkaConfig, parts: RuntimeParts) -> None:
        self.config = config
        self.subscriptions = parts.subscriptions
        self.context = parts.context
        self.observer = parts.observer
        self._running = False
        self.topics = internal_topics(config.app, config.partitions, dead_letter=config.dead_letter_topic)
        self.owners_topic = TopicSpec(f"{config.app}-owners", 1, {"cleanup.policy": "compact"})
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.producer: Any = None
        self.owners: OwnersView | None = None
        self.hanging: HangingTransactions | None = None
        self.collector = RecordCollector(config.connection, exactly_once=config.exactly_once)
        self.reader = TopicReader(config.connection)  # the console's reads of topics
        self.supervisor = Supervisor()
        self.worker = WorkerContext(config, self.topics, self.owners_topic.name, self.worker_id, self.collector,
                                    self.supervisor, ForwardEncoder(self.topics, config.partitions))  # fmt: skip
        self.parts = parts
        self.forwarder = Forwarder(token=config.forward_token, cafile=config.forward_cafile)
        self.remote = RemoteReads(self.forwarder, self.partition_of, self.local_task, self.worker_id)
        self._versions: dict[tuple[str, str], tuple[str, str, bytes, float]] = {}
        self.active: ActiveTasks | None = None  # a worker's (a client has none)
        self.fetch: FetchLoop | None = None
        self._loops: list[TopicLoop] = []

    # Partitioning -------------------------------------------------------------------------

    def partition_of(self, instance_id: str) -> int:
        return codec.partition_for(instance_id, self.config.partitions)

    def local_task(self, instance_id: str) -> PartitionTask | None:
        return None if self.active is None else self.active.task(self.partition_of(instance_id))

    # Lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    async def start(self, web_url: str | None) -> None:
        cfg = self.config
        self.remote.web_url = web_url
        self._running = True
        tune_aiokafka()
        await check_connection(cfg.connection)  # a wrong password or CA: a clear error, at once
        await ensure_topics(cfg.connection, [*self.topics.all(), self.owners_topic])
        await ensure_application_topics(cfg.connection, self._user_topics(), cfg.partitions)
        self.producer = new_producer(cfg.connection, enable_idempotence=True, acks="all", linger_ms=1)
        await self.producer.start()
        self.owners = self.remote.owners = OwnersView(cfg.connection, self.owners_topic.name)
        await self.owners.start()
        if cfg.role != "worker":
            log.info("daggerflow client of %r connected to %s", cfg.app, cfg.bootstrap)
            return
        await self._start_worker(web_url)
        log.info("worker ready: %s in group %r on %s (%d partitions, %s)", self.worker_id, cfg.app,
                 cfg.bootstrap, cfg.partitions, cfg.guarantee)  # fmt: skip

    def _user_topics(self) -> list[str]:
        subs = self.subscriptions
        return sorted({*subs.user_topics(), *subs.listeners, *(a.topic for a in subs.agents)})

    async def _start_worker(self, web_url: str | None) -> None:
        cfg = self.config
        assert self.owners is not None
        listeners = dict(self.subscriptions.listeners)
        agents = list(self.subscriptions.agents)
        routing = ListenerRouting(cfg.app, self.topics, cfg.partitions, self.worker.forwards)
        routed = await routing.choose_direct(self.producer, listeners, cfg.auto_offset_reset)
        groups = [
            cfg.app,
            *(listener_group(cfg.app, t) for t in routed),
            *(agent_group(cfg.app, a.name) for a in agents),
        ]
        # Hanging transactions (a broker restart can leave some: docs/kafka-runtime-notes.md
        # §7) are found and ended by the owner of the partitions they block.
        self.hanging = HangingTransactions(cfg.connection, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                                           grace_ms=15000, interval=5.0)  # fmt: skip
        await self.hanging.start()
        watch = HangingWatch(self.hanging, self.producer, self.topics, self.owners_topic.name,
                             self._user_topics(), groups, cfg.partitions)  # fmt: skip
        consumer = new_consumer(cfg.connection, **consumer_settings(cfg.app))
        main = GroupClients(cfg.app, consumer, PartitionTransactions(cfg.connection, cfg.app, cfg.app))
        guard = AssignmentGuard()
        self.active = ActiveTasks(self.worker, self.parts, main, guard)
        routing.consumer = consumer
        consumer.subscribe([self.topics.events.name, self.topics.correlation.name, *routing.direct],
                           listener=RebalanceListener(self.active.manager, self.parts.settings.observer))  # fmt: skip
        await self.active.start(self.owners, watch, web_url)
        await consumer.start()
        self.fetch = FetchLoop(consumer, guard, self.active.task, routing, self.parts.settings.observer)
        self.supervisor.spawn("fetch", self.fetch.run(), name="kafka-fetch")
        self.supervisor.spawn("job-runner", self.context.jobs.failure())
        self._loops = stateless_loops(self.worker, routing, {t: listeners[t] for t in routed}, agents,
                                      watch.end_fenced, self.parts.settings.limits.message,
                                      self.parts.settings.observer)  # fmt: skip
        for loop in self._loops:
            await loop.start()
            assert loop.task is not None
            self.supervisor.adopt("topic-loop", loop.task, name=loop.group)
        waits = [self.active.manager.assigned_once.wait(), *(loop.wait_assigned() for loop in self._loops)]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), 60.0)
        except TimeoutError:
            log.warning("no partition assignment after 60 s; going on (is the group stuck?)")

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks():
            task.processor.pause_bulk()  # no new jobs from bulk jobs while the running ones drain
        await self.context.jobs.drain(self.config.shutdown_timeout)
        if self.active is not None:
            log.info("partition tasks: %s", self.active.stats.summary())
        for loop in self._loops:
            log.info("%s: %s", loop.group, loop.stats.brief())
            await self.supervisor.stop(loop.group)
            await loop.stop()
        self._loops.clear()
        await self.supervisor.stop("kafka-fetch")
        if self.active is not None:
            await self.active.stop(self.config.shutdown_timeout)
        await self.supervisor.stop_all()
        await self.collector.close()
        await self.reader.close()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            self.producer = None
        if self.hanging is not None:
            await self.hanging.stop()
            self.hanging = None
        if self.owners is not None:
            await self.owners.stop()
            self.owners = self.remote.owners = None
        await self.forwarder.close()

    def vital_task(self) -> asyncio.Task[None]:
        """Ends when the worker stopped working: a fatal loop (``supervisor.LOOPS``) ended.
        A client has none: then it ends only when cancelled."""
        return self.supervisor.vital_task()

    # Calls from the engine ------------------------------------------------------------------

    async def _send_plain(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                          partition: int | None = None, headers: Any = None) -> Any:  # fmt: skip
        if self.producer is None:
            raise PartitionMoved("the Kafka runtime is not running")
        return await (await self.producer.send(topic, value, key=key, partition=partition, headers=headers))

    async def append(self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None) -> int:
        out = outgoing_record(Outgoing(topic, key, value, dict(headers or {})))
        meta = await self._send_plain(out.topic, out.value, key=out.key, headers=out.headers)
        return int(meta.offset)

    async def call(self, instance_id: str, event: Event) -> tuple[bool, Instance | None]:
        """Apply ``event`` on this worker if it owns the instance (returns (True, result)),
        else send it to the owner through the events topic (returns (False, None) once the
        broker has it).

        Calls keep the order they were made in, whichever worker takes each: the owner
        applies its own only after the events other workers had sent to the partition by
        then (a client that patches through one worker and then through another sees both
        patches in that order)."""
        task = self.local_task(instance_id)
        p = self.partition_of(instance_id)
        if task is not None and p in self.active_partitions and await self._sent_before_are_queued(p):
            try:
                return True, await task.processor.call(instance_id, event)
            except PartitionMoved:
                pass
        record = codec.encode(event)  # type: ignore[arg-type]
        # Refused here, in the caller's words, rather than by the producer (a Create carries the
        # whole new instance, which the owner would refuse over max_instance_bytes anyway).
        limit = self.parts.settings.limits.instance if isinstance(event, Create) else RECORD_LIMIT
        if len(record) > limit:
            what = "the new instance" if isinstance(event, Create) else f"the {type(event).__name__} event"
            raise TooLarge(f"{what} for {instance_id!r}, sent to the worker that owns it,", len(record), limit,
                           " (max_instance_bytes; on Kafka at most one record)")  # fmt: skip
        await self._send_plain(self.topics.events.name, record, key=instance_id.encode(), partition=p)
        return False, None

    async def _sent_before_are_queued(self, p: int) -> bool:
        """Wait until every event sent to partition ``p`` of the events topic so far is in
        its task's queue. The high watermark, not the last stable offset: a plain record
        written after a transaction began is above the LSO until that transaction ends.
        False if that took over ``ORDER_WAIT_S`` or the end could not be read."""
        if self.fetch is None or self.producer is None:
            return False
        tp = TopicPartition(self.topics.events.name, p)
        try:
            async with asyncio.timeout(ORDER_WAIT_S):
                end = (await high_watermarks(self.producer.client, [tp])).get(tp)
                if end is None:
                    return False
                await self.fetch.handed_over(tp, end)
        except Exception as exc:  # (TimeoutError, a broker error): ordered through the topic
            log.info("call on partition %d sent through the events topic: %r", p, exc)
            return False
        return True

    def committed(self, instance_id: str) -> Instance | None:
        return self.remote.committed(instance_id)

    def submit_outcome(self, instance_id: str, event: Event, box: list[Outgoing]) -> None:
        task = self.local_task(instance_id)
        if task is not None:
            task.processor.submit_event(instance_id, event, box)

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
        return await self.remote.instance(instance_id)

    def local_history(self, instance_id: str, *, after: int, size: int) -> Page | None:
        task = self.local_task(instance_id)
        if task is None:
            raise NotOwner(f"this worker does not hold the partition of {instance_id!r} now")
        return task.history(instance_id, after=after, size=size)

    async def history(self, instance_id: str, *, after: int, size: int) -> Page | None:
        """From this worker if it holds the instance, else from its owner (REST)."""
        return await self.remote.history(instance_id, after=after, size=size)

    async def wait_for(
        self, instance_id: str, check: Callable[[Instance], bool], timeout: float | None
    ) -> Instance:
        current = self.committed(instance_id)
        if current is not None and check(current):
            return current
        if self.local_task(instance_id) is None:
            return await self.remote.poll_until(instance_id, check, timeout)
        return await self.observer.wait(instance_id, check, timeout)

    def list_local(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Instance]:
        """The instances of the partitions this worker holds, in the query's order."""
        q = listing_query(query, status=status, template=template)
        pages = (s.query_instances(q, limit=offset + limit, offset=0) for s in self.stores())
        key, reverse = sort_key(q)
        return merge_listings(pages, offset=offset, limit=limit, key=key, reverse=reverse)

    def count_local(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int:
        q = listing_query(query, status=status, template=template)
        return sum(s.count_query(q) for s in self.stores())

    async def list_all(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Instance]:
        """Every worker's instances, merged in the query's order (their REST APIs are asked)."""
        q = listing_query(query, status=status, template=template)
        local = self.list_local(q, limit=offset + limit, offset=0)
        remote = await self.remote.list_others(q, limit=offset + limit)
        key, reverse = sort_key(q)
        return merge_listings([local, remote], offset=offset, limit=limit, key=key, reverse=reverse)

    async def count_all(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int:
        q = listing_query(query, status=status, template=template)
        return self.count_local(q) + await self.remote.count_others(q)

    # Bulk jobs ------------------------------------------------------------------------------

    async def bulk_start(self, spec: BulkSpec) -> int | None:
        """Send the job to every partition of the events topic: each partition's owner starts
        its share in its own transaction (``pipeline.bulk``), a partition that moves resumes
        its share from the changelog. Sent again, a partition keeps the share it has."""
        record = codec.encode(spec)
        key = f"bulk:{spec.id}".encode()

        async def send(partition: int) -> None:
            # Sending again is harmless (see above), so a failed send is retried; one that
            # still fails leaves that partition without its share: the job's state says
            # "incomplete" and the same bulk call sends it again.
            for attempt in range(BULK_SEND_ATTEMPTS):
                try:
                    await self._send_plain(self.topics.events.name, record, key=key, partition=partition)
                    return
                except PartitionMoved:
                    raise
                except Exception:
                    if attempt + 1 == BULK_SEND_ATTEMPTS:
                        raise
                    log.warning("bulk job %s: sending its start to partition %d failed, again", spec.id,
                                partition, exc_info=True)  # fmt: skip
                    await asyncio.sleep(0.2 * (attempt + 1))  # a back-off, not a synchronisation

        await asyncio.gather(*(send(p) for p in range(self.config.partitions)))
        return None

    def bulk_local(self, job: str | None) -> list[BulkShare]:
        found: list[BulkShare] = []
        for store in self.stores():
            if job is None:
                found.extend(store.bulk_active())
            elif (share := store.bulk_share(job)) is not None:
                found.append(share)
        return found

    async def bulk_all(self, job: str) -> tuple[list[BulkShare], int]:
        return [*self.bulk_local(job), *await self.remote.bulk_others(job)], self.config.partitions

    def bulk_jobs_local(self, *, active: bool, limit: int) -> list[BulkShare]:
        found: list[BulkShare] = []
        for store in self.stores():
            found.extend(store.bulk_active() if active else store.bulk_recent(limit))
        return found

    async def bulk_jobs_all(self, *, active: bool, limit: int) -> tuple[list[BulkShare], int]:
        others = await self.remote.bulk_jobs_others(active=active, limit=limit)
        return [*self.bulk_jobs_local(active=active, limit=limit), *others], self.config.partitions
    def list_schedules_local(self) -> list[Schedule]:
        """The schedules of the partitions this worker holds."""
        found = {s.name: s for store in self.stores() for s in store.list_schedules()}
        return [found[n] for n in sorted(found)]

    async def get_schedule(self, name: str) -> Schedule | None:
        """From this worker if it holds the schedule's partition, else from its owner."""
        return await self.remote.schedule(schedule_key(name), name)

    async def list_schedules_all(self) -> list[Schedule]:
        """Every worker's schedules (their REST APIs are asked), by name."""
        found = {s.name: s for s in await self.remote.schedules_of_others()}
        found.update((s.name, s) for s in self.list_schedules_local())
        return [found[n] for n in sorted(found)]

    def read_topic(self, topic: str, start: int, limit: int) -> list[Message]:
        raise TaskInvalidState(
            f"topic {topic!r} is a Kafka topic: read it with a Kafka consumer (the REST API reads embedded topics)"
        )

    async def newest_messages(
        self, topic: str, *, limit: int, partition: int | None, before: int | None
    ) -> list[Message]:
        return await self.reader.newest(topic, limit=limit, partition=partition, before=before)

    async def message_at(self, topic: str, partition: int | None, offset: int) -> Message | None:
        return await self.reader.one(topic, partition, offset)

    def count_messages(self, topic: str) -> int | None:
        return None

    async def unread(self, topic: str, partition: int, offset: int) -> bool | None:
        """Whether a consumer group of the application that reads ``topic`` has not committed
        past ``offset`` on ``partition`` yet (the groups' coordinators answer, so every worker
        says the same). A message being processed counts as unread until its commit. None in
        a process that is in no such group (a client), or when a coordinator did not answer
        within ``COMMITTED_WAIT_S``."""
        readers = self._consumers(topic)
        if not readers:
            return None
        tp = TopicPartition(topic, partition)
        try:
            for consumer in readers:
                committed = await asyncio.wait_for(consumer.committed(tp), COMMITTED_WAIT_S)
                if committed is None or offset >= committed:
                    return True
        except Exception:  # (TimeoutError, an authorisation error): not known
            log.info("committed offsets of %s/%d not read", topic, partition, exc_info=True)
            return None
        return False

    def topic_names(self) -> list[str]:
        """The application's topics (those its templates, listeners and agents use)."""
        return sorted(self.subscriptions.user_topics() | set(self.subscriptions.listeners))

    def subscriptions_changed(self) -> None:
        log.warning("listeners or agents registered after start are read from the next start on")

    def purge(self) -> None:
        """Forget expired dedupe ids and buffered messages on every active partition."""
        for task in self._tasks():
            task.purge()

    def consumer_lag(self) -> dict[str, int]:
        """Records this worker's consumers have yet to read, by topic (the main group's and
        each listener and agent group's; a topic read by several: the furthest behind)."""
        out: dict[str, int] = {}
        for consumer in self._consumers():
            for topic, behind in (consumer_lag(consumer) or {}).items():
                out[topic] = max(out.get(topic, 0), behind)
        return out

    def _consumers(self, topic: str | None = None) -> list[Any]:
        """This worker's consumers: the main group's and each listener and agent group's;
        with ``topic``, those of the groups that read it."""
        found = [loop.clients.consumer for loop in self._loops
                 if loop.clients is not None and topic in (None, loop.topic)]  # fmt: skip
        if self.fetch is not None and (topic is None or topic in self.fetch.routing.direct):
            found.append(self.fetch.consumer)
        return found

    def partition_owners(self) -> list[OwnerEntry] | None:
        known = self.owners.owners() if self.owners is not None else {}
        return [
            OwnerEntry(partition=p, worker=o.worker, url=o.url, since=o.since) if (o := known.get(p)) is not None
            else OwnerEntry(partition=p, worker=None, url=None, since=None)
            for p in range(self.config.partitions)
        ]  # fmt: skip

    def stats(self) -> dict[str, Any]:
        tasks = self._tasks()
        return {
            "running": self._running,
            "transitions": sum(t.processor.transitions for t in tasks),
            "batches": sum(t.processor.batches for t in tasks),
            "queued": sum(t.processor.queue.qsize() for t in tasks),
            "jobs_running": len(self.context.jobs),
            "timers": sum(len(t.timers) for t in tasks),
            "partitions": sorted(self.active_partitions),
        }

    def _tasks(self) -> list[PartitionTask]:
        return [] if self.active is None else self.active.running()

    def running_instances(self) -> Iterator[Instance]:
        return running_in(self.stores())

    def stored_versions(self) -> list[tuple[str, str, bytes, float]]:
        return list(self._versions.values())

    def remember_version(self, template: str, version: str, definition: bytes) -> None:
        # Not changelogged: a worker lists the versions its code registers, and those of the
        # running instances it holds (derived from their node trees); GET templates merges
        # every worker's listing.
        self._versions.setdefault((template, version), (template, version, definition, self.context.clock.now()))

    async def versions_elsewhere(self) -> list[bytes]:
        return await self.remote.versions_others()

    def local_stores(self) -> list[Store]:
        return self.stores()

    async def ask_others(self, path: str, params: Mapping[str, str]) -> list[bytes]:
        return await self.remote.ask_others(path, params)

    def stores(self) -> list[Store]:
        return [t.store for t in self._tasks()]

    @property
    def active_partitions(self) -> frozenset[int]:
        return frozenset() if self.active is None else self.active.manager.active
