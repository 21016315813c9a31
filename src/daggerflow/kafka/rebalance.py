"""The consumer rebalance listener of the exactly-once groups (Kafka Streams'
StreamsRebalanceListener): it only hands the callbacks to the group's ``TaskManager``, which
pauses, fences and activates (rules 1 and 3 of ``transactions``).

aiokafka 0.14 has no "partitions lost" callback: a lost partition arrives as revoked, which
is what the task manager has to assume anyway (its producer may already be fenced).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from ..pipeline.observe import PipelineObserver


class AssignmentHandler(Protocol):
    async def handle_assigned(self, assigned: Iterable[TopicPartition]) -> None: ...

    async def handle_revoked(self, revoked: Iterable[TopicPartition]) -> None: ...


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, handler: AssignmentHandler, observer: PipelineObserver | None = None) -> None:
        self._handler = handler
        self._observer = observer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        if self._observer is not None and revoked:
            self._observer.rebalanced("revoked", len(revoked))
        await self._handler.handle_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        if self._observer is not None and assigned:
            self._observer.rebalanced("assigned", len(assigned))
        await self._handler.handle_assigned(assigned)
