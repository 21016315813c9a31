"""Stateless processing of one user topic in a consumer group of its own: a listener router
(``listeners.ListenerRouting.route_handler``) or an agent (``agent_handler``). Each fetched
chunk of a partition is handled, and its outputs commit with its offsets (exactly-once: one
transaction of the partition's producer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

from ..errors import TaskMigrated
from ..pipeline.background import cancel_and_wait
from ..pipeline.ingress import AgentSpec, chunks, run_agents
from ..pipeline.lifecycle import dead_letters_committed
from ..pipeline.observe import PipelineObserver
from .collector import CommitStats, GroupClients
from .compat import stop_consumer
from .context import WorkerContext
from .guard import AssignmentGuard
from .listeners import ChunkHandler, ListenerRouting, listener_group
from .rebalance import RebalanceListener
from .records import OutRecord, message_of, outgoing_record
from .settings import consumer_settings, new_consumer
from .task_manager import TaskManager
from .transactions import PartitionTransactions

log = logging.getLogger("daggerflow.kafka")

#: (transactions, group, partition): end what a partition's previous owners left open.
EndFenced = Callable[[PartitionTransactions, str, int], Awaitable[None]]


class TopicLoop:
    def __init__(
        self, worker: WorkerContext, group: str, topic: str, handle: ChunkHandler, end_fenced: EndFenced
    ) -> None:
        self.config = worker.config
        self.collector = worker.collector
        self.group = group
        self.topic = topic
        self.handle = handle
        self.end_fenced = end_fenced
        self.dead_letter_topic = worker.topics.dead_letter.name
        self.guard = AssignmentGuard()
        self.clients: GroupClients | None = None
        self.manager: TaskManager | None = None
        self.task: asyncio.Task[None] | None = None
        self._backoff: dict[TopicPartition, float] = {}
        self.stats = CommitStats()

    async def start(self) -> None:
        cfg = self.config
        settings = consumer_settings(self.group)
        settings["auto_offset_reset"] = cfg.auto_offset_reset
        consumer = new_consumer(cfg.connection, **settings)
        transactions = PartitionTransactions(cfg.connection, self.group, self.group)
        self.clients = GroupClients(self.group, consumer, transactions)
        self.manager = TaskManager(consumer, transactions, self.guard, name=self.group,
                                   close_previous=self._close_previous)  # fmt: skip
        consumer.subscribe([self.topic], listener=RebalanceListener(self.manager))
        await consumer.start()
        self.task = asyncio.create_task(self._run(), name=f"daggerflow-{self.group}")

    async def _close_previous(self, p: int) -> None:
        # After the fence, before the committed offsets: what a broker restart left open.
        assert self.clients is not None
        await self.end_fenced(self.clients.transactions, self.group, p)

    async def wait_assigned(self) -> None:
        assert self.manager is not None
        await self.manager.assigned_once.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        if self.manager is not None:
            await self.manager.close()
        if self.clients is not None:
            await stop_consumer(self.clients.consumer)
            await self.clients.transactions.close()

    async def _run(self) -> None:
        assert self.clients is not None
        consumer = self.clients.consumer
        loop = asyncio.get_running_loop()
        last = 0.0
        interval = self.config.commit_interval
        while True:
            wait = last + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the consumer fetches meanwhile: bigger chunks
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            last = loop.time()
            stamped = self.guard.stamp(batch)
            # Partitions commit concurrently (each has its own producer: one after the other,
            # a poll of N partitions would take N transaction round trips). A chunk that fails
            # unexpectedly re-activates its partition; it never ends this loop, which would
            # leave every partition of the group unread.
            results = await asyncio.gather(
                *(self._chunk(fetched) for fetched in stamped), return_exceptions=True
            )
            for fetched, result in zip(stamped, results, strict=True):
                if isinstance(result, Exception):
                    log.error(
                        "%s: handling %s failed; re-activating it", self.group, fetched.tp, exc_info=result
                    )
                    await self._restart(fetched.tp)

    async def _chunk(self, fetched: Any) -> None:
        assert self.clients is not None and self.manager is not None
        records = self.guard.admit(fetched)
        if not records:
            return
        tp = fetched.tp
        transactions = self.clients.transactions
        if self.collector.exactly_once and transactions.get(tp.partition) is None:
            return  # revoked or being re-activated: the next activation reads these again
        try:
            outs = await self.handle(tp, records)
            await self._commit(tp, records, outs)
            self._backoff.pop(tp, None)
        except TaskMigrated:
            await self.manager.handle_migrated(tp.partition)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("%s: committing %s failed; retrying from offset %d", self.group, tp, records[0].offset,
                        exc_info=True)  # fmt: skip
            producer = transactions.get(tp.partition)
            if producer is not None and (producer.in_transaction or producer.migrated):
                # Not aborted (broker gone, producer dead or fenced): start over with a new
                # producer, which fences this one's transaction.
                await self.manager.handle_migrated(tp.partition)
                return
            if tp not in self.clients.consumer.assignment():
                return  # revoked meanwhile: its new owner starts from the committed offset
            self.guard.rewind(tp, records[0].offset)
            self.clients.consumer.seek(tp, records[0].offset)
            backoff = self._backoff.get(tp, 0.1)
            self._backoff[tp] = min(backoff * 2, 5.0)
            await asyncio.sleep(backoff)

    async def _restart(self, tp: TopicPartition) -> None:
        """After an unexpected failure: re-activate the partition (fence, committed offsets),
        as after ``TaskMigrated``; a partition no longer ours is left to its new owner."""
        assert self.manager is not None
        try:
            await self.manager.handle_migrated(tp.partition)
        except Exception:
            log.exception("%s: re-activating partition %d failed", self.group, tp.partition)

    async def _commit(self, tp: TopicPartition, records: list[Any], outs: list[OutRecord]) -> None:
        assert self.clients is not None
        self.stats.commits += 1
        self.stats.records += len(outs)
        offsets = {tp: records[-1].offset + 1}
        await self.collector.send_and_commit(self.clients, tp.partition, outs, offsets, self.stats)
        dead_letters_committed(((o.topic, o.value) for o in outs), self.dead_letter_topic)


def agent_handler(
    agent: AgentSpec, dead_letter_topic: str, max_message_bytes: int, observer: PipelineObserver | None = None
) -> ChunkHandler:
    """An agent's handler over a fetched chunk, ``concurrency`` messages at a time: what
    they sent (or their dead letters), to commit with the chunk's offsets."""
    fn, name, concurrency = agent.handler, agent.name, agent.concurrency

    async def handle(tp: TopicPartition, records: list[Any]) -> list[OutRecord]:
        outs: list[OutRecord] = []
        messages = [message_of(tp, r) for r in records]
        for chunk in chunks(messages, concurrency):
            outs.extend(outgoing_record(o) for o in await run_agents(fn, chunk, name, dead_letter_topic,
                                                                       max_message_bytes, observer))  # fmt: skip
        return outs

    return handle


def stateless_loops(
    worker: WorkerContext,
    routing: ListenerRouting,
    routed: Mapping[str, list[type]],
    agents: Sequence[AgentSpec],
    end_fenced: EndFenced,
    max_message_bytes: int,
    observer: PipelineObserver | None = None,
) -> list[TopicLoop]:
    """A loop for each listener topic routed by its own group, and one for each agent."""
    app, dead = worker.config.app, worker.topics.dead_letter.name
    loops = [TopicLoop(worker, listener_group(app, topic), topic, routing.route_handler(topic, classes), end_fenced)
             for topic, classes in routed.items()]  # fmt: skip
    loops += [
        TopicLoop(worker, agent_group(app, a.name), a.topic, agent_handler(a, dead, max_message_bytes, observer), end_fenced)
        for a in agents
    ]
    return loops


def agent_group(app: str, name: str) -> str:
    return f"{app}.agent.{name}"
