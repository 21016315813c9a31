"""The request and response structs of the message routes (``web.message_routes``): a topic's
newest messages, one message's explanation, the dead letters and their replay. The items are
``model.messages``' structs."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from ..model.messages import DeadLetter, MessageItem
from .schemas import MAX_OFFSET

MessageLimit = Annotated[int, Meta(ge=1, le=1000, description="how many messages (1..1000)")]
Partition = Annotated[
    int, Meta(ge=0, le=2**31 - 1, description="a Kafka topic's partition (embedded topics have none)")
]
Before = Annotated[int, Meta(ge=0, le=MAX_OFFSET, description="only offsets below this one (the next page)")]


class MessagesListQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    topic: Annotated[str, Meta(min_length=1, description="the topic to read")]
    limit: MessageLimit = 50
    partition: Partition | None = None
    before: Before | None = None


class MessageQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    partition: Partition | None = None


class DeadLettersQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    limit: MessageLimit = 50
    partition: Partition | None = None
    before: Before | None = None


class ReplayQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    partition: Partition | None = None
    actor: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$",
                               description="who replays (logged)")] = "api"  # fmt: skip


class MessageList(Struct, kw_only=True):
    """A topic's newest messages, newest first; values cut to a preview (``truncated``)."""

    topic: str
    items: list[MessageItem]
    next_before: Annotated[
        int | None,
        Meta(description="`before` of the next (older) page; null on the last, or across Kafka partitions"),
    ]


class DeadLetterList(Struct, kw_only=True):
    """The newest dead letters, newest first."""

    topic: Annotated[str, Meta(description="the dead-letter topic")]
    items: list[DeadLetter]
    total: Annotated[int | None, Meta(description="records in the dead-letter topic; null on Kafka (not cheap to count)")]
    next_before: int | None


class Replayed(Struct, kw_only=True):
    topic: Annotated[str, Meta(description="where the message was appended again")]
    offset: int
    dead_letter: Annotated[str, Meta(description="the dead letter replayed (topic[:partition]@offset)")]


class InternalSeenQuery(Struct, forbid_unknown_fields=True, kw_only=True):
    topic: Annotated[str, Meta(min_length=1)]
    id: Annotated[str, Meta(min_length=1)]
