"""The ``Runtime`` in one process: one partition task (partition 0) over one store, which is
also the log of the topics. The store commits each batch itself (no committer), so the
embedded runtime is the one-partition case of the pipeline the Kafka runtime partitions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import TaskInvalidState
from ..machine.events import Event
from ..model.bulk import BulkShare, BulkSpec
from ..model.history import Page
from ..model.instance import Instance
from ..model.query import InstanceQuery, listing_query
from ..model.records import Message, Outgoing
from ..model.schedule import Schedule
from ..model.workers import OwnerEntry
from ..pipeline.background import cancel_and_wait, first_to_end
from ..pipeline.batch import PostCommit
from ..pipeline.items import BulkStart
from ..pipeline.partition import PartitionTask
from ..pipeline.ports import RuntimeParts
from ..pipeline.processor import Processor
from ..pipeline.running import running_in
from ..store.base import Store
from ..store.factory import open_store
from .log import AgentConsumer, Consumer, ListenerConsumer, Readers, TopicSignals
from .retention import DEFAULT_RETENTION, Retention, RetentionKeeper, TopicLog

log = logging.getLogger("daggerflow")


@dataclass(frozen=True)
class EmbeddedConfig:
    store: str | None
    datadir: str
    application_name: str
    durability: str
    dead_letter_topic: str
    start_at_end: bool  # consumers without a position start at the end ("latest")
    shutdown_timeout: float
    topic_retention: Callable[[str], Retention] = lambda topic: DEFAULT_RETENTION


class EmbeddedRuntime:
    def __init__(self, config: EmbeddedConfig, parts: RuntimeParts) -> None:
        self.config = config
        self.parts = parts
        # One partition, so the runtime's own post-commit step (waking topic readers) comes first.
        self.context = dataclasses.replace(parts.context, on_committed=self._committed)
        self.signals = TopicSignals()
        self.consumers: dict[str, Consumer] = {}
        self._task: PartitionTask | None = None
        self._retention: asyncio.Task[int] | None = None

    # Lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self, web_url: str | None) -> None:
        cfg = self.config
        store = open_store(cfg.store, datadir=cfg.datadir, application_name=cfg.application_name,
                           durability=cfg.durability)  # fmt: skip
        self._task = PartitionTask(0, store, self.parts.settings, self.context)
        self._task.start()
        self.subscriptions_changed()
        log.info("daggerflow engine %r started (store %s, web %s)", cfg.application_name, store.path,
                 web_url or "off")  # fmt: skip

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        task.processor.pause_bulk()  # no further bulk steps (a job resumes at the next start)
        await cancel_and_wait(self._retention)  # before the readers that bound it stop
        self._retention = None
        for consumer in list(self.consumers.values()):
            await consumer.stop()
        self.consumers.clear()
        await task.timers.stop()  # no new jobs from timers while the running ones drain
        await self.context.jobs.drain(self.config.shutdown_timeout)
        await task.drain()
        self._task = None
        await task.close()

    def vital_task(self) -> asyncio.Task[None]:
        """The processor's loop and the job runner: either failing leaves the worker deaf."""
        processing = self.processor.task
        assert processing is not None
        jobs = asyncio.create_task(self.context.jobs.failure(), name="daggerflow-job-runner")
        return asyncio.create_task(first_to_end([processing, jobs]), name="daggerflow-vital")

    def subscriptions_changed(self) -> None:
        """Start a consumer for each listener topic and agent that has none yet."""
        if self._task is None:
            return
        readers = Readers(self.store, self.processor, self.signals, self.config.start_at_end,
                          self.config.dead_letter_topic, self.parts.settings.limits.message,
                          self.parts.settings.observer)  # fmt: skip
        wanted: list[Consumer] = [
            *(ListenerConsumer(f"listener:{t}", t, readers, c) for t, c in self.parts.subscriptions.listeners.items()),
            *(AgentConsumer(f"agent:{a.name}", a, readers) for a in self.parts.subscriptions.agents),
        ]
        for consumer in wanted:
            if consumer.name not in self.consumers:
                self.consumers[consumer.name] = consumer
                consumer.start()

    def _committed(self, after: PostCommit, appended: list[tuple[str, int]]) -> None:
        for topic in {t for t, _ in appended}:
            self.signals.notify(topic)
        self.parts.observer(after, appended)

    # The partition ----------------------------------------------------------------------------

    @property
    def processor(self) -> Processor:
        """The processor, while it runs (else a clear error for the caller)."""
        task = self._task
        if task is None:
            raise TaskInvalidState(
                "the engine is not running: use `async with engine:`, `await engine.start()` or `engine.main()`"
            )
        failed = task.processor.failed
        if failed is not None:
            raise TaskInvalidState(f"the engine's processor stopped after an error: {failed!r}")
        return task.processor

    @property
    def store(self) -> Store:
        if self._task is None:
            raise TaskInvalidState("the engine is not running")
        return self._task.store

    async def call(self, instance_id: str, event: Event) -> tuple[bool, Instance | None]:
        result: Instance | None = await self.processor.call(instance_id, event)
        return True, result

    def submit_outcome(self, instance_id: str, event: Event, box: list[Outgoing]) -> None:
        if self._task is not None:
            self._task.processor.submit_event(instance_id, event, box)

    def committed(self, instance_id: str) -> Instance | None:
        return None if self._task is None else self._task.processor.committed_instance(instance_id)

    def local_instance(self, instance_id: str) -> Instance | None:
        return self.committed(instance_id)

    async def get_instance(self, instance_id: str) -> Instance | None:
        return self.committed(instance_id)

    def local_history(self, instance_id: str, *, after: int, size: int) -> Page | None:
        return None if self._task is None else self._task.history(instance_id, after=after, size=size)

    async def history(self, instance_id: str, *, after: int, size: int) -> Page | None:
        return self.local_history(instance_id, after=after, size=size)

    async def wait_for(self, instance_id: str, check: Callable[[Instance], bool], timeout: float | None) -> Instance:
        current = self.committed(instance_id)
        if current is not None and check(current):
            return current
        return await self.parts.observer.wait(instance_id, check, timeout)

    def list_local(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Instance]:
        q = listing_query(query, status=status, template=template)
        return self.store.query_instances(q, limit=limit, offset=offset)

    def count_local(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int:
        return self.store.count_query(listing_query(query, status=status, template=template))

    async def list_all(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Instance]:
        return self.list_local(query, status=status, template=template, limit=limit, offset=offset)

    async def count_all(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int:
        return self.count_local(query, status=status, template=template)

    # Bulk jobs ------------------------------------------------------------------------------

    async def bulk_start(self, spec: BulkSpec) -> int | None:
        fut: asyncio.Future[BulkShare] = asyncio.get_running_loop().create_future()
        self.processor.submit(BulkStart(spec, 0, fut))
        return (await fut).matched

    def bulk_local(self, job: str | None) -> list[BulkShare]:
        if job is None:
            return self.store.bulk_active()
        share = self.store.bulk_share(job)
        return [] if share is None else [share]

    async def bulk_all(self, job: str) -> tuple[list[BulkShare], int]:
        return self.bulk_local(job), 1

    def bulk_jobs_local(self, *, active: bool, limit: int) -> list[BulkShare]:
        return self.store.bulk_active() if active else self.store.bulk_recent(limit)

    async def bulk_jobs_all(self, *, active: bool, limit: int) -> tuple[list[BulkShare], int]:
        return self.bulk_jobs_local(active=active, limit=limit), 1
    def list_schedules_local(self) -> list[Schedule]:
        return self.store.list_schedules()

    async def get_schedule(self, name: str) -> Schedule | None:
        return self.store.get_schedule(name)

    async def list_schedules_all(self) -> list[Schedule]:
        return self.list_schedules_local()

    def running_instances(self) -> Iterator[Instance]:
        return running_in([self.store])

    def stored_versions(self) -> list[tuple[str, str, bytes, float]]:
        return self.store.template_versions()

    def remember_version(self, template: str, version: str, definition: bytes) -> None:
        self.store.save_template_version(template, version, definition, self.context.clock.now())

    async def versions_elsewhere(self) -> list[bytes]:
        return []  # one process holds everything

    # Topics ---------------------------------------------------------------------------------

    async def append(self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None) -> int:
        offset = self.store.append(topic, key, value, headers, self.context.clock.now())
        self.signals.notify(topic)
        return offset

    def read_topic(self, topic: str, start: int, limit: int) -> list[Message]:
        return self.store.read(topic, start, limit)

    def topic_names(self) -> list[str]:
        return sorted(self.store.topics())

    async def newest_messages(
        self, topic: str, *, limit: int, partition: int | None, before: int | None
    ) -> list[Message]:
        if partition not in (None, 0):
            return []
        end = self.store.end_offset(topic)
        end = end if before is None else min(end, before)
        start = max(0, end - limit)
        return [m for m in reversed(self.store.read(topic, start, end - start)) if m.offset < end]

    async def message_at(self, topic: str, partition: int | None, offset: int) -> Message | None:
        if partition not in (None, 0):
            return None
        found = self.store.read(topic, offset, 1)
        return found[0] if found and found[0].offset == offset else None

    def count_messages(self, topic: str) -> int | None:
        first = self.store.read(topic, 0, 1)  # (retention trims a topic from its start)
        return self.store.end_offset(topic) - first[0].offset if first else 0

    async def unread(self, topic: str, partition: int, offset: int) -> bool | None:
        position = self._unread_from(topic)
        return None if position is None else offset >= position

    def local_stores(self) -> list[Store]:
        return [] if self._task is None else [self._task.store]

    async def ask_others(self, path: str, params: Mapping[str, str]) -> list[bytes]:
        return []  # one process holds everything

    def purge(self) -> None:
        if self._task is not None:
            self._task.purge()
            if self._retention is None or self._retention.done():
                self._retention = asyncio.create_task(self._retain(), name="daggerflow-retention")

    async def _retain(self) -> int:
        try:
            return await self.apply_retention()
        except Exception:
            # Housekeeping: the next round tries again; the worker goes on meanwhile.
            log.warning("topic retention failed; retrying at the next housekeeping", exc_info=True)
            return 0

    async def apply_retention(self) -> int:
        """Delete what each topic's retention no longer keeps (``embedded.retention``);
        return how many messages."""
        store = self.store
        if not isinstance(store, TopicLog):
            return 0  # a store without a topic log to trim
        keeper = RetentionKeeper(store, self.context.clock, self.config.topic_retention, self._unread_from)
        return await keeper.run()

    def _unread_from(self, topic: str) -> int | None:
        positions = [c.unread_from() for c in self.consumers.values() if c.topic == topic]
        return min(positions) if positions else None

    def idle(self) -> bool:
        """Nothing to do until time moves or a message arrives: no input queued or being
        applied, no job running, no timer due, every topic reader at its topic's end.
        (``daggerflow.testing.WorkflowEnvironment`` settles on this.)"""
        task = self._task
        if task is None:
            return True
        if not task.processor.idle or len(self.context.jobs) > 0:
            return False
        due = task.timers.next_due()
        if due is not None and due <= self.context.clock.now():
            return False
        return all(c.unread_from() >= task.store.end_offset(c.topic) for c in self.consumers.values())

    def next_timer(self) -> float | None:
        """When the earliest armed timer is due (None: no timer is armed)."""
        return None if self._task is None else self._task.timers.next_due()

    @property
    def worker_id(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}"

    def partition_owners(self) -> list[OwnerEntry] | None:
        return None  # one process holds the one partition

    def consumer_lag(self) -> dict[str, int]:
        task = self._task
        if task is None:
            return {}
        out: dict[str, int] = {}
        for c in self.consumers.values():
            behind = max(0, task.store.end_offset(c.topic) - c.unread_from())
            out[c.topic] = max(out.get(c.topic, 0), behind)
        return out

    def stats(self) -> dict[str, Any]:
        task = self._task
        p = task.processor if task is not None else None
        return {
            "running": task is not None,
            "transitions": p.transitions if p else 0,
            "batches": p.batches if p else 0,
            "queued": p.queue.qsize() if p else 0,
            "jobs_running": len(self.context.jobs),
            "timers": len(task.timers) if task else 0,
        }
