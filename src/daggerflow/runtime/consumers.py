"""Topic consumers with durable positions: one per listener topic, one per agent.

A listener consumer maps each message to correlation pairs with the listener classes'
``get_correlatable_keys_from_payload`` (user code, so it runs here and not in the
processor) and hands the result to the processor, which looks up the waiting instances
and commits the consumer's position in the same batch. A message that cannot be mapped
goes to the dead-letter topic with the error; the consumer keeps going.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..store.base import Message, Outgoing, Store
from . import outbox
from .background import cancel_and_wait
from .jobs import gather_eagerly
from .processor import AgentCommit, Incoming, Processor

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

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


def dead_letter(
    topic: str, msg: Message, consumer: str, error: str, tb: str, *, partition: int | None = None
) -> Outgoing:
    """The dead-letter record of ``msg`` (JSON). ``partition``: of a Kafka topic. A value that
    is not UTF-8 text is kept as hex, so the letter holds the exact bytes."""
    value = msg.value
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            value = value.hex()
    record: dict[str, Any] = {
        "topic": msg.topic,
        "offset": msg.offset,
        "key": msg.key,
        "value": value,
        "consumer": consumer,
        "error": error,
        "traceback": tb,
    }
    if partition is not None:
        record["partition"] = partition
    return Outgoing(topic, msg.key, _json.encode(record).decode())


class Consumer(abc.ABC):
    def __init__(
        self,
        name: str,
        topic: str,
        store: Store,
        processor: Processor,
        signals: TopicSignals,
        start_at_end: bool,
        dead_letter_topic: str,
    ) -> None:
        self.name = name
        self.topic = topic
        self.store = store
        self.processor = processor
        self.signals = signals
        self.start_at_end = start_at_end
        self.dead_letter_topic = dead_letter_topic
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # The starting position is fixed here, not when the task first runs: with
        # start_at_end ("latest") a message appended once start() has returned is consumed.
        self._task = asyncio.create_task(self._run(self.initial_position()), name=f"daggerflow-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def initial_position(self) -> int:
        pos = self.store.position(self.name)
        if pos is not None:
            return pos
        return self.store.end_offset(self.topic) if self.start_at_end else 0

    async def _run(self, position: int) -> None:
        while True:
            messages = self.store.read(self.topic, position, READ_BATCH)
            if not messages:
                await self.signals.wait(self.store, self.topic, position)
                continue
            await self.handle(messages)
            position = messages[-1].offset + 1

    @abc.abstractmethod
    async def handle(self, messages: list[Message]) -> None:
        """Process messages read in order; return once their positions are committed."""


class ListenerMapper:
    """Maps listener messages of one topic to correlation pairs with the listener classes'
    hooks (user code). Shared by the embedded consumer and the Kafka listener router."""

    def __init__(self, topic: str, classes: list[type]) -> None:
        self.topic = topic
        self.classes = classes
        self._mappers: dict[type, Any] = {}

    async def mappings(self, value: Any) -> tuple[list[tuple[str, str]], str | None]:
        """The correlation pairs of a payload, from every listener type of the topic.

        A type whose mapping fails does not hide the payload from the others (a payload
        for one type may lack the key another type reads); the failure is raised, and the
        message dead-lettered, only when no type produced a pair.
        """
        pairs: list[tuple[str, str]] = []
        message_id: str | None = None
        failure: Exception | None = None
        for cls in self.classes:
            # One mapper object per class, as Dagger's agent held one "internal" task: the
            # correlation hooks are stateless, and building a task per message was a
            # measurable share of the consumer's time.
            task = self._mappers.get(cls)
            if task is None:
                task = self._mappers[cls] = cls()
            try:
                found = await self._class_pairs(cls, task, value)
            except Exception as exc:
                if len(self.classes) > 1:
                    log.warning("%s: %s could not map a payload: %r", self.topic, cls.__name__, exc)
                failure = failure or exc
                continue
            for entry in found:
                if entry not in pairs:
                    pairs.append(entry)
            if message_id is None:
                message_id = task.get_message_id(value)
        if failure is not None and not pairs:
            raise failure
        return pairs, message_id

    async def _class_pairs(self, cls: type, task: Any, value: Any) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        result = await task.get_correlatable_keys_from_payload(value)
        if result is None:
            return pairs
        if isinstance(result, tuple) and len(result) == 2 and not isinstance(result[0], (list, tuple)):
            result = [result]  # one bare (key, value) pair, as Dagger's deprecated hook returns
        if not isinstance(result, (list, tuple)):
            raise ValueError(
                f"{cls.__name__}.get_correlatable_keys_from_payload must return "
                f"[(key_name, value), ...]; got {result!r}"
            )
        for pair in result:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(
                    f"{cls.__name__}.get_correlatable_keys_from_payload must return "
                    f"[(key_name, value), ...]; got element {pair!r}"
                )
            key_name, key_value = pair
            if key_value is None or key_value == "":
                log.warning("%s: empty correlation value for %r skipped", self.topic, key_name)
                continue
            entry = (str(key_name), str(key_value))
            if entry not in pairs:
                pairs.append(entry)
        return pairs


class ListenerConsumer(Consumer):
    def __init__(self, *args: Any, classes: list[type], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mapper = ListenerMapper(self.topic, classes)

    async def mappings(self, value: Any) -> tuple[list[tuple[str, str]], str | None]:
        return await self.mapper.mappings(value)

    async def handle(self, messages: list[Message]) -> None:
        last: asyncio.Future[Any] | None = None
        for msg in messages:
            last = asyncio.get_running_loop().create_future()
            try:
                pairs, message_id = await self.mappings(msg.value)
            except Exception as exc:
                log.warning("dead-lettering %s@%d: %r", msg.topic, msg.offset, exc)
                dl = dead_letter(
                    self.dead_letter_topic,
                    msg,
                    self.name,
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                )
                self.processor.submit(Incoming(self.name, msg, [], dead_letter=dl, future=last))
                continue
            self.processor.submit(
                Incoming(
                    self.name,
                    msg,
                    pairs,
                    None if message_id is None else str(message_id),
                    future=last,
                )
            )
        if last is not None:
            await last  # backpressure: read on once this chunk is committed


AgentHandler = Callable[[Any], Awaitable[Any]]


async def run_agent(handler: AgentHandler, msg: Message, name: str, dead_letter_topic: str) -> list[Outgoing]:
    """Run an agent on one message: what it sent, or a dead letter if it raised."""
    with outbox.capture() as box:
        try:
            await handler(msg.value)
        except Exception as exc:
            log.warning("agent %s failed on %s@%d: %r", name, msg.topic, msg.offset, exc)
            return [
                dead_letter(
                    dead_letter_topic, msg, name, f"{type(exc).__name__}: {exc}", traceback.format_exc()
                )
            ]
    return box


class AgentConsumer(Consumer):
    """Runs ``handler(value)`` for each message; what it sends commits with its position."""

    def __init__(self, *args: Any, handler: AgentHandler, concurrency: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handler = handler
        self.concurrency = max(1, concurrency)

    async def _one(self, msg: Message) -> list[Outgoing]:
        return await run_agent(self.handler, msg, self.name, self.dead_letter_topic)

    async def handle(self, messages: list[Message]) -> None:
        # Handle up to ``concurrency`` messages at a time, but commit many at once: the
        # outboxes and the new position go in one commit (exactly-once output); a commit
        # is due when the read batch is done or COMMIT_INTERVAL has passed.
        loop = asyncio.get_running_loop()
        sent: list[Outgoing] = []
        first_pending = loop.time()
        for start in range(0, len(messages), self.concurrency):
            chunk = messages[start : start + self.concurrency]
            boxes = await gather_eagerly(self._one(m) for m in chunk)
            for box in boxes:
                sent.extend(box)
            last = start + len(chunk) >= len(messages)
            if last or loop.time() - first_pending >= COMMIT_INTERVAL:
                fut: asyncio.Future[Any] = loop.create_future()
                self.processor.submit(AgentCommit(self.name, chunk[-1].offset + 1, sent, fut))
                await fut
                sent = []
                first_pending = loop.time()
