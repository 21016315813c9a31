"""The guard against records fetched across a rebalance (rule 2 of ``transactions``).

aiokafka starts fetching a new assignment from the offset *it* read before our callback runs,
and a later ``seek()`` rewinds under records already in hand: ``AssignmentGuard`` drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiokafka import TopicPartition

log = logging.getLogger(__name__)


class HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=HasOffset)


@dataclass(frozen=True, slots=True)
class Fetched(Generic[R]):
    """Records of one partition from one getmany(), with the partition's epoch at that moment."""

    tp: TopicPartition
    epoch: int
    records: Sequence[R]


class AssignmentGuard:
    """Per-partition next-expected offset and epoch: drops records fetched across a rebalance.

    - ``activate(tp, offset)`` when a partition is ready (after fence, committed read and seek);
      ``deactivate(tp)`` when it is revoked or lost; ``rewind(tp, offset)`` with every seek back
      after an aborted transaction. Each of these starts a new epoch for ``tp``.
    - ``stamp(batch)`` synchronously right after ``getmany()`` (no await in between): aiokafka
      yields only records consistent with the position at that moment, so the epoch says which
      assignment/seek they belong to.
    - ``admit(fetched)`` when processing: ``[]`` if the partition is inactive or its epoch changed
      since the stamp, else the records whose offset is >= the next expected offset, which then
      moves past them. Offsets may jump forward (transaction markers, aborted or compacted
      records take offsets), so a gap is not a reason to drop; going back is.
    """

    def __init__(self) -> None:
        self._next: dict[TopicPartition, int] = {}
        self._epoch: dict[TopicPartition, int] = {}
        self._counter = 0
        self.dropped = 0  #: records dropped so far (a metric; each drop is also logged)

    def _bump(self, tp: TopicPartition) -> None:
        self._counter += 1
        self._epoch[tp] = self._counter

    def activate(self, tp: TopicPartition, next_offset: int) -> None:
        self._bump(tp)
        self._next[tp] = next_offset

    def deactivate(self, tp: TopicPartition) -> None:
        self._bump(tp)
        self._next.pop(tp, None)

    def rewind(self, tp: TopicPartition, next_offset: int) -> None:
        """The caller seeks ``tp`` back to ``next_offset`` (to retry an aborted batch)."""
        if tp in self._next:
            self._bump(tp)
            self._next[tp] = next_offset

    def is_active(self, tp: TopicPartition) -> bool:
        return tp in self._next

    def next_offset(self, tp: TopicPartition) -> int | None:
        return self._next.get(tp)

    def stamp(self, batch: Mapping[TopicPartition, Sequence[R]]) -> list[Fetched[R]]:
        return [Fetched(tp, self._epoch.get(tp, 0), records) for tp, records in batch.items() if records]

    def admit(self, fetched: Fetched[R]) -> list[R]:
        tp = fetched.tp
        expected = self._next.get(tp)
        if expected is None or self._epoch.get(tp, 0) != fetched.epoch:
            self._drop(tp, fetched.records, expected, "partition inactive or re-activated since getmany()")
            return []
        fresh = [r for r in fetched.records if r.offset >= expected]
        if len(fresh) < len(fetched.records):
            self._drop(tp, [r for r in fetched.records if r.offset < expected], expected, "already processed")
        if fresh:
            self._next[tp] = fresh[-1].offset + 1
        return fresh

    def _drop(self, tp: TopicPartition, records: Sequence[HasOffset], expected: int | None, why: str) -> None:
        self.dropped += len(records)
        log.info(
            "guard dropped %d records of %s:%d (offsets %d..%d, next expected %s): %s",
            len(records), tp.topic, tp.partition, records[0].offset, records[-1].offset, expected, why,
        )  # fmt: skip
