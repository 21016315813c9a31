"""Ingress: what both runtimes do with a listener or agent message before it reaches a
processor (or, for agents, a commit). User code runs here, never inside a batch.

- A listener message is mapped to correlation pairs and a message id by the listener
  classes' hooks (``ListenerMapper``); a message that cannot be mapped becomes a dead letter.
- An agent message is handed to its handler; what the handler sends is captured (outbox),
  and a handler that raises turns the message into a dead letter.

The embedded consumers (``embedded.log``) and the Kafka fetch, router and agent loops
(``kafka``) call these; only the reading and the committing differ per runtime.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ..model.records import Message, Outgoing
from . import outbox
from .eager import gather_eagerly
from .observe import PipelineObserver
from .outbox import oversize_message

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

AgentHandler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class AgentSpec:
    """An agent as registered: ``handler(value)`` for each message of ``topic``."""

    topic: str
    handler: AgentHandler
    name: str
    concurrency: int = 1


def dead_letter(
    topic: str, msg: Message, consumer: str, error: str, tb: str, *, partition: int | None = None
) -> Outgoing:
    """The dead-letter record of ``msg`` (JSON; ``model.messages.parse_letter`` reads it).
    ``partition``: of a Kafka topic. A value that is not UTF-8 text is kept as hex, marked
    ``value_hex``, so the letter holds the exact bytes."""
    value = msg.value
    binary = False
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            value, binary = value.hex(), True
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
    if binary:
        record["value_hex"] = True  # (so that a replay appends the exact bytes again)
    return Outgoing(topic, msg.key, _json.encode(record).decode())


@dataclass(slots=True)
class Mapped:
    """A listener message as user code mapped it: its correlation pairs and message id, or
    the error (and traceback) that makes it a dead letter."""

    pairs: list[tuple[str, str]]
    message_id: str | None = None
    error: tuple[str, str] | None = None

    def letter(self, topic: str, msg: Message, consumer: str, *, partition: int | None = None) -> Outgoing:
        assert self.error is not None
        return dead_letter(topic, msg, consumer, self.error[0], self.error[1], partition=partition)


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


async def map_messages(mapper: ListenerMapper, messages: Sequence[Message]) -> list[Mapped]:
    """Each message's correlation pairs and id (user code, run eagerly: a mapping that waits
    does not hold up the others), or the error that makes it a dead letter."""

    async def one(msg: Message) -> Mapped:
        try:
            pairs, message_id = await mapper.mappings(msg.value)
        except Exception as exc:
            where = f"{msg.topic}@{msg.offset}" if msg.partition is None else f"{msg.topic}:{msg.partition}@{msg.offset}"
            # WARNING comes from daggerflow.lifecycle once the dead letter is committed.
            log.debug("dead-lettering %s: %r", where, exc)
            return Mapped([], None, (f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return Mapped(pairs, None if message_id is None else str(message_id))

    return await gather_eagerly(one(m) for m in messages)


async def run_agent(
    handler: AgentHandler,
    msg: Message,
    name: str,
    dead_letter_topic: str,
    max_message_bytes: int,
    observer: PipelineObserver | None = None,
) -> list[Outgoing]:
    """Run an agent on one message: what it sent, or a dead letter if it raised or sent a
    message over ``max_message_bytes`` (then nothing it sent goes out)."""
    scope = observer.agent(msg, name) if observer is not None else None
    with outbox.capture() as box:
        try:
            if scope is None:
                await handler(msg.value)
            else:
                with scope:
                    await handler(msg.value)
        except Exception as exc:
            # WARNING comes from daggerflow.lifecycle once the dead letter is committed.
            log.debug("agent %s failed on %s@%d: %r", name, msg.topic, msg.offset, exc)
            if scope is not None:
                scope.sent([], f"{type(exc).__name__}: {exc}")
            return [
                dead_letter(
                    dead_letter_topic, msg, name, f"{type(exc).__name__}: {exc}", traceback.format_exc()
                )
            ]
    if box and (problem := oversize_message(box, max_message_bytes)) is not None:
        if scope is not None:
            scope.sent([], problem)
        return [dead_letter(dead_letter_topic, msg, name, problem, "")]
    if scope is not None:
        scope.sent(box, None)
    return box


def chunks(messages: Sequence[Message], width: int) -> Iterator[Sequence[Message]]:
    """An agent's messages, ``width`` (its concurrency) at a time."""
    width = max(1, width)
    for start in range(0, len(messages), width):
        yield messages[start : start + width]


async def run_agents(
    handler: AgentHandler,
    chunk: Sequence[Message],
    name: str,
    dead_letter_topic: str,
    max_message_bytes: int,
    observer: PipelineObserver | None = None,
) -> list[Outgoing]:
    """Run an agent on a chunk of messages at once: what they sent (or their dead letters), in order."""
    sent: list[Outgoing] = []
    runs = (run_agent(handler, m, name, dead_letter_topic, max_message_bytes, observer) for m in chunk)
    for box in await gather_eagerly(runs):
        sent.extend(box)
    return sent
