"""Messages as the console and the REST API show them, and the explanation of one listener
message: which instances it reached, or why none. Pure: the facade (``message_reads``)
gathers the facts; ``verdict`` decides what they mean.

A message is told by (topic, partition, offset); ``partition`` is None for an embedded topic.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import msgspec

from .console import ListenerItem
from .records import Message

#: The characters of a value a listing shows (the message's own page shows all of it).
PREVIEW_CHARS = 500

#: What ``verdict`` can answer, in the order it checks them.
VERDICTS: dict[str, str] = {
    "matched": "delivered to the instances listed",
    "dead_lettered": "sent to the dead-letter topic",
    "parse_error": "the listener classes of the topic cannot map it to a correlation key",
    "unread": "not read yet: the topic's reader has not reached it",
    "duplicate": "ignored as a duplicate: its message id was seen before",
    "key_mismatch": "listeners wait on this topic, but none under this message's correlation values",
    "no_waiter": "no listener waited on this topic for its correlation values",
    "agent": "read by an agent (agents do not correlate)",
    "not_read": "nothing of this application reads the topic",
}


class MessageItem(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a topic. ``value``: its text, or the hex of bytes that are not UTF-8
    (``binary``); ``truncated`` when a listing cut it to ``PREVIEW_CHARS``."""

    topic: str
    partition: int | None
    offset: int
    key: str | None
    value: str
    size: int
    timestamp: float
    headers: dict[str, str] = {}
    binary: bool = False
    truncated: bool = False


class CorrelationPair(msgspec.Struct, frozen=True):
    key: str
    value: str


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """A node the message was delivered to, from its instance's history."""

    instance: str
    template_name: str
    status: str
    node: str
    time: float


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A record of the dead-letter topic: where it is (``partition``, ``offset``) and the
    message it holds (``topic``, ``source_partition``, ``source_offset``, key and value)
    with who gave up on it (``consumer``) and why."""

    partition: int | None
    offset: int
    timestamp: float
    topic: str
    source_partition: int | None
    source_offset: int
    key: str | None
    value: str
    binary: bool = False
    consumer: str = ""
    error: str = ""
    traceback: str = ""


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one message: ``verdict`` (a key of ``VERDICTS``) and ``summary`` (a
    sentence), with the facts behind it."""

    message: MessageItem
    verdict: str
    summary: str
    readers: list[str] = []
    pairs: list[CorrelationPair] = []
    message_id: str | None = None
    error: str | None = None
    traceback: str | None = None
    dead_letter: DeadLetter | None = None
    matched: list[Delivery] = []
    #: Listeners open now under one of the message's pairs (they started waiting after it was read).
    waiting: list[ListenerItem] = []
    #: Listeners open now on the topic under the same key names with other values, nearest first.
    near: list[ListenerItem] = []
    notes: list[str] = []


def value_text(value: Any) -> tuple[str, bool]:
    """A message value as text: (text, False), or (hex, True) for bytes that are not UTF-8."""
    if isinstance(value, bytes):
        try:
            return value.decode(), False
        except UnicodeDecodeError:
            return value.hex(), True
    return ("" if value is None else str(value)), False


def message_item(msg: Message, *, preview: bool = False) -> MessageItem:
    text, binary = value_text(msg.value)
    size = len(msg.value) if isinstance(msg.value, bytes) else len(text.encode())
    cut = preview and len(text) > PREVIEW_CHARS
    return MessageItem(
        topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
        value=text[:PREVIEW_CHARS] if cut else text, size=size, timestamp=msg.timestamp,
        headers=dict(msg.headers), binary=binary, truncated=cut,
    )  # fmt: skip


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_letter(msg: Message) -> DeadLetter | None:
    """The dead letter a record of the dead-letter topic holds (``pipeline.ingress``
    writes them), or None for a record that is not one."""
    try:
        record = msgspec.json.decode(msg.value if isinstance(msg.value, (str, bytes)) else b"")
    except msgspec.DecodeError:
        return None
    if not isinstance(record, dict):
        return None
    topic, offset = record.get("topic"), _int(record.get("offset"))
    if not isinstance(topic, str) or offset is None:
        return None
    value = record.get("value")
    key = record.get("key")
    return DeadLetter(
        partition=msg.partition, offset=msg.offset, timestamp=msg.timestamp, topic=topic,
        source_partition=_int(record.get("partition")), source_offset=offset,
        key=key if isinstance(key, str) else None,
        value=value if isinstance(value, str) else msgspec.json.encode(value).decode(),
        binary=record.get("value_hex") is True,
        consumer=str(record.get("consumer") or ""), error=str(record.get("error") or ""),
        traceback=str(record.get("traceback") or ""),
    )  # fmt: skip


def replay_value(letter: DeadLetter) -> str | bytes:
    """The value to append again: the original bytes of a binary value, else its text."""
    return bytes.fromhex(letter.value) if letter.binary else letter.value


def letter_of(letters: Sequence[DeadLetter], msg: Message) -> DeadLetter | None:
    """The newest dead letter among ``letters`` that holds ``msg``."""
    found = None
    for letter in letters:
        if (
            letter.topic == msg.topic
            and letter.source_offset == msg.offset
            and letter.source_partition == msg.partition
        ):
            if found is None or letter.offset > found.offset:
                found = letter
    return found


def near_values(
    value: str, listeners: Sequence[ListenerItem], keys: set[str], most: int
) -> list[ListenerItem]:
    """The open listeners under one of ``keys`` with a value other than ``value``, those
    whose value is most like it first (a typo, a prefix, another case), at most ``most``."""
    others = [item for item in listeners if item.key in keys and item.value != value]

    def likeness(item: ListenerItem) -> float:
        if item.value.lower() == value.lower():
            return 2.0
        return difflib.SequenceMatcher(None, value, item.value).ratio()

    return sorted(others, key=lambda item: (-likeness(item), item.since))[:most]


def verdict(
    *,
    listened: bool,
    agents: Sequence[str],
    matched: bool,
    dead_lettered: bool,
    parse_error: bool,
    unread: bool,
    duplicate: bool,
    listeners_on_topic: bool,
) -> str:
    """What the facts of one message mean, the first that holds of: matched, dead-lettered,
    parse error, unread, duplicate, key mismatch, no waiter (for a listener topic); for a
    topic no listener reads: dead-lettered (by an agent), unread (by an agent), agent, not
    read."""
    if matched:
        return "matched"
    if dead_lettered:
        return "dead_lettered"
    if not listened:
        if not agents:
            return "not_read"
        return "unread" if unread else "agent"
    if parse_error:
        return "parse_error"
    if unread:
        return "unread"
    if duplicate:
        return "duplicate"
    if listeners_on_topic:
        return "key_mismatch"
    return "no_waiter"
