"""Retention of the embedded topics: the store is also their log, and without this it would
keep every message ever sent (order commands, READY messages, update snapshots).

Each topic has a ``Retention``: ``ms`` (messages older than this many milliseconds go) and
``messages`` (only the newest N stay); a message goes when either limit says so, as on
Kafka. The housekeeping loop (``Dagger``'s, once a minute) runs ``RetentionKeeper.run``,
which deletes in batches of ``batch`` messages, each its own short transaction with a turn
of the event loop between them, so the processor is never held up for long. Three things
are never deleted:

- what a running consumer (listener reader, agent) has not read: the oldest committed
  position of the topic's consumers (or, before its first commit, where it started) bounds
  the deletion; a consumer not registered in this worker holds nothing back;
- the newest message of a topic: the next offset is derived from it on restart, so offsets
  stay monotonic (a reader asking for a deleted offset starts at the first one retained);
- anything on a store without the retention methods (RocksDB): it is skipped.

A SQLite file created by this version uses incremental auto-vacuum: when more than a quarter
of it is free, up to ``RELEASE_PAGES`` pages are given back to the file system per round
(after a burst the file shrinks over a few minutes). Below that, and in older files, freed
pages are reused by the next writes, so the size stops growing at the steady state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError
from ..pipeline.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_KEY = "*"  # the retention of topics not named in ``topic_retention``
DELETE_BATCH = 1000  # messages per delete transaction
RELEASE_PAGES = 2048  # free pages given back per housekeeping round (8 MiB of 4 KiB pages)


@dataclass(frozen=True)
class Retention:
    ms: float | None = None  # keep messages younger than this (None: any age)
    messages: int | None = None  # keep at most the newest N (None: any number)

    @property
    def unlimited(self) -> bool:
        return self.ms is None and self.messages is None


#: Every topic: 7 days, Kafka's default ``retention.ms``.
DEFAULT_RETENTION = Retention(ms=7 * 24 * 3600 * 1000.0)
#: The task update topic: every commit publishes a snapshot there, and they are only
#: useful to readers that keep up, so only recent ones stay.
UPDATE_TOPIC_RETENTION = Retention(ms=3600 * 1000.0, messages=1000)


def parse_retention(options: Mapping[str, Any] | None) -> dict[str, Retention]:
    """``{"topic": {"ms": ..., "messages": ...}}`` -> ``{"topic": Retention}``; ``"*"``
    names the default; ``{}`` (or None values) keeps a topic's messages forever."""
    parsed: dict[str, Retention] = {}
    for topic, spec in (options or {}).items():
        if not isinstance(topic, str) or not isinstance(spec, Mapping):
            raise ConfigurationError(
                f"topic_retention: expected {{topic: {{'ms': ..., 'messages': ...}}}}, got {topic!r}: {spec!r}"
            )
        unknown = set(spec) - {"ms", "messages"}
        if unknown:
            raise ConfigurationError(
                f"topic_retention[{topic!r}]: unknown key(s) {sorted(unknown)}; use 'ms' and/or 'messages'"
            )
        ms, messages = spec.get("ms"), spec.get("messages")
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms <= 0):
            raise ConfigurationError(f"topic_retention[{topic!r}]['ms'] must be a positive number or None")
        if messages is not None and (isinstance(messages, bool) or not isinstance(messages, int) or messages < 1):
            raise ConfigurationError(f"topic_retention[{topic!r}]['messages'] must be an integer >= 1 or None")
        parsed[topic] = Retention(None if ms is None else float(ms), messages)
    return parsed


def retention_policy(
    options: Mapping[str, Retention], update_topic: str | None
) -> Callable[[str], Retention]:
    """Each topic's retention: its own entry, else the task update topic's default (for
    that topic), else the ``"*"`` entry, else ``DEFAULT_RETENTION``."""
    default = options.get(DEFAULT_KEY, DEFAULT_RETENTION)

    def policy(topic: str) -> Retention:
        found = options.get(topic)
        if found is not None:
            return found
        if topic == update_topic:
            return UPDATE_TOPIC_RETENTION
        return default

    return policy


@runtime_checkable
class TopicLog(Protocol):
    """What retention needs of a store (``SQLiteStore``, ``RocksDBStore``)."""

    def topics(self) -> list[str]: ...

    def end_offset(self, topic: str) -> int: ...

    def first_offset(self, topic: str) -> int | None: ...

    def first_offset_since(self, topic: str, ts: float, start: int) -> int | None: ...

    def trim(self, topic: str, start: int, end: int) -> int: ...

    def release_space(self, max_pages: int) -> int: ...


class RetentionKeeper:
    def __init__(
        self,
        store: TopicLog,
        clock: Clock,
        policy: Callable[[str], Retention],
        unread: Callable[[str], int | None],
        batch: int = DELETE_BATCH,
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.unread = unread  # topic -> the oldest offset a consumer has not read, or None
        self.batch = batch

    def keep_from(self, topic: str) -> tuple[int, int] | None:
        """``(first, keep)``: the offsets ``first <= offset < keep`` may go; None: nothing."""
        rule = self.policy(topic)
        if rule.unlimited:
            return None
        store = self.store
        first = store.first_offset(topic)
        if first is None:
            return None
        end = store.end_offset(topic)
        keep = first
        if rule.messages is not None:
            keep = max(keep, end - rule.messages)
        if rule.ms is not None:
            young = store.first_offset_since(topic, self.clock.now() - rule.ms / 1000.0, first)
            keep = max(keep, end if young is None else young)
        keep = min(keep, end - 1)  # the newest message stays (the next offset)
        unread = self.unread(topic)
        if unread is not None:
            keep = min(keep, unread)
        return (first, keep) if keep > first else None

    async def run(self) -> int:
        """Apply every topic's retention once; return how many messages were deleted."""
        deleted = 0
        for topic in self.store.topics():
            span = self.keep_from(topic)
            if span is None:
                continue
            first, keep = span
            while first < keep:
                upto = min(keep, first + self.batch)
                deleted += self.store.trim(topic, first, upto)
                first = upto
                await asyncio.sleep(0)  # let the processor commit between batches
        if deleted:
            # A little per round: the pages moved go through the WAL, which the background
            # checkpointer must keep up with.
            released = self.store.release_space(RELEASE_PAGES)
            log.debug("topic retention deleted %d messages, released %d pages", deleted, released)
        return deleted
