"""The embedded runtime's topic readers: one per listener topic, one per agent, each with a
durable position in the SQLite store, woken when a topic gets new messages.

A listener consumer maps its messages (``pipeline.ingress``) and hands them to the
processor, which looks up the waiting instances and commits the consumer's position in the
same batch. An agent consumer runs its handler and commits what it sent with its position,
also through the processor, the store's only writer.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..model.records import Message, Outgoing
from ..pipeline.background import Loop
from ..pipeline.ingress import AgentSpec, ListenerMapper, chunks, map_messages, run_agents
from ..pipeline.items import AgentCommit, Incoming
from ..pipeline.observe import PipelineObserver
from ..pipeline.processor import Processor
from ..store.base import Store

log = logging.getLogger(__name__)

READ_BATCH = 500
COMMIT_INTERVAL = 0.02  # seconds an agent may hold handled messages before committing


class TopicSignals:
    """Wakes readers when a topic gets new messages."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, topic: str) -> asyncio.Event:
        ev = self._events.get(topic)
        if ev is None:
            ev = self._events[topic] = asyncio.Event()
        return ev

    def notify(self, topic: str) -> None:
        ev = self._events.get(topic)
        if ev is not None:
            ev.set()

    async def wait(self, store: Store, topic: str, offset: int) -> None:
        ev = self.event(topic)
        while store.end_offset(topic) <= offset:
            ev.clear()
            if store.end_offset(topic) > offset:
                return
            await ev.wait()


@dataclass(frozen=True)
class Readers:
    """What every topic reader of the embedded runtime shares."""

    store: Store
    processor: Processor
    signals: TopicSignals
    start_at_end: bool  # a reader without a position starts at the end ("latest")
    dead_letter_topic: str
    max_message_bytes: int  # what an agent may send in one message (Limits.message)
    observer: PipelineObserver | None = None  # traces of the agents' messages


class Consumer(Loop, abc.ABC):
    def __init__(self, name: str, topic: str, readers: Readers) -> None:
        self.name = name
        self.topic = topic
        self.readers = readers
        self.store = readers.store
        self.processor = readers.processor

    def start(self) -> None:
        # The starting position is fixed here, not when the task first runs: with
        # start_at_end ("latest") a message appended once start() has returned is consumed.
        self.start_position = self.initial_position()
        self._start(self._run(self.start_position), f"daggerflow-{self.name}")

    def unread_from(self) -> int:
        """The oldest offset this reader may still need (retention keeps it): its committed
        position, or where it started before its first commit."""
        pos = self.store.position(self.name)
        return self.start_position if pos is None else pos

    def initial_position(self) -> int:
        pos = self.store.position(self.name)
        if pos is not None:
            return pos
        return self.store.end_offset(self.topic) if self.readers.start_at_end else 0

    async def _run(self, position: int) -> None:
        while True:
            messages = self.store.read(self.topic, position, READ_BATCH)
            if not messages:
                await self.readers.signals.wait(self.store, self.topic, position)
                continue
            await self.handle(messages)
            position = messages[-1].offset + 1

    @abc.abstractmethod
    async def handle(self, messages: list[Message]) -> None:
        """Process messages read in order; return once their positions are committed."""


class ListenerConsumer(Consumer):
    def __init__(self, name: str, topic: str, readers: Readers, classes: list[type]) -> None:
        super().__init__(name, topic, readers)
        self.mapper = ListenerMapper(topic, classes)

    async def handle(self, messages: list[Message]) -> None:
        loop = asyncio.get_running_loop()
        last: asyncio.Future[Any] | None = None
        for msg, mapped in zip(messages, await map_messages(self.mapper, messages), strict=True):
            last = loop.create_future()
            if mapped.error is not None:
                letter = mapped.letter(self.readers.dead_letter_topic, msg, self.name)
                self.processor.submit(Incoming(self.name, msg, [], dead_letter=letter, future=last))
            else:
                self.processor.submit(
                    Incoming(self.name, msg, mapped.pairs, mapped.message_id, future=last)
                )
        if last is not None:
            await last  # backpressure: read on once this chunk is committed


class AgentConsumer(Consumer):
    """Runs ``handler(value)`` for each message; what it sends commits with its position."""

    def __init__(self, name: str, agent: AgentSpec, readers: Readers) -> None:
        super().__init__(name, agent.topic, readers)
        self.handler = agent.handler
        self.concurrency = max(1, agent.concurrency)

    async def handle(self, messages: list[Message]) -> None:
        # Handle up to ``concurrency`` messages at a time, but commit many at once: the
        # outboxes and the new position go in one commit (exactly-once output); a commit
        # is due when the read batch is done or COMMIT_INTERVAL has passed.
        loop = asyncio.get_running_loop()
        sent: list[Outgoing] = []
        first_pending = loop.time()
        for chunk in chunks(messages, self.concurrency):
            sent.extend(await run_agents(self.handler, chunk, self.name, self.readers.dead_letter_topic,
                                         self.readers.max_message_bytes, self.readers.observer))  # fmt: skip
            if chunk[-1] is messages[-1] or loop.time() - first_pending >= COMMIT_INTERVAL:
                fut: asyncio.Future[Any] = loop.create_future()
                self.processor.submit(AgentCommit(self.name, chunk[-1].offset + 1, sent, fut))
                await fut
                sent = []
                first_pending = loop.time()
