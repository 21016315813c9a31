"""Topics as user code sees them: ``engine.topics[name].send(key=..., value=...)``."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from .errors import NotSerializable
from .model.records import Outgoing
from .pipeline import outbox

_json = msgspec.json.Encoder()


def encode_value(value: Any) -> str | bytes:
    """Strings and bytes are kept as they are; other JSON values become their JSON text
    (as Dagger's raw serializer would deliver them)."""
    if isinstance(value, (str, bytes)):
        return value
    try:
        return _json.encode(value).decode()
    except (TypeError, ValueError, OverflowError) as exc:
        raise NotSerializable(
            f"message value of type {type(value).__name__} is not JSON-serialisable: {exc}"
        ) from exc


class Appender(Protocol):
    """What a topic calls to send outside a job (``Dagger`` is one): append to the log."""

    async def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None = None
    ) -> int: ...


class Topic:
    def __init__(self, engine: Appender, name: str) -> None:
        self.engine = engine
        self.name = name

    def get_topic_name(self) -> str:
        return self.name

    async def send(
        self, key: Any = None, value: Any = None, headers: dict[str, str] | None = None, **_: Any
    ) -> int | None:
        """Append a message. Inside a task or agent it is committed with the task's outcome
        (returns None); elsewhere it is durable when this returns (returns its offset)."""
        encoded = encode_value(value)
        key_text = None if key is None else (key.decode() if isinstance(key, bytes) else str(key))
        box = outbox.current_outbox()
        if box is not None:
            box.append(Outgoing(self.name, key_text, encoded, dict(headers or {})))
            return None
        return await self.engine.append(self.name, key_text, encoded, headers)

    def __repr__(self) -> str:
        return f"<Topic {self.name}>"


class Topics(dict[str, Topic]):
    """Name -> topic. A missing name creates the topic: topics are just logs here."""

    def __init__(self, engine: Appender) -> None:
        super().__init__()
        self._engine = engine

    def __missing__(self, name: str) -> Topic:
        topic = self[name] = Topic(self._engine, name)
        return topic
