"""What each partition task's owner answers for in the hanging-transaction check (a broker
restart can leave transactions open: docs/kafka-runtime-notes.md §7): the reaper watches
the partitions a task's transactions write, and an activation ends its previous owners'
open transactions before it restores and reads its offsets.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition

from ..admin import InternalTopics
from ..compat import wait_on_metadata
from ..transactions import PartitionTransactions
from .reaper import HangingTransactions
from .txn_admin import group_offsets_partition

log = logging.getLogger("daggerflow.kafka")


class HangingWatch:
    """The partitions of each task on the reaper's watch list, and ``end_fenced``."""

    def __init__(
        self,
        hanging: HangingTransactions,
        producer: Any,
        topics: InternalTopics,
        owners_topic: str,
        user_topics: list[str],
        groups: list[str],
        partitions: int,
    ) -> None:
        self.hanging = hanging
        self._producer = producer  # its client has the metadata of every topic
        self._topics = topics
        self._owners_topic = owners_topic
        self._user_topics = user_topics
        self._groups = groups
        self._partitions = partitions
        self._watched: dict[int, list[TopicPartition]] = {}
        # Every partition a partition task's transaction can write, once known.
        self._txn_partitions: list[TopicPartition] | None = None

    async def watch(self, p: int) -> None:
        """Have the reaper watch what task p's owner answers for: p of the internal topics,
        the partitions q = p (mod N) of the application's topics, and (task 0) the owners
        and dead-letter topics and the groups' offsets partitions."""
        if p in self._watched:
            return
        n = self._partitions
        topics = self._topics
        tps = [TopicPartition(t.name, p) for t in (topics.events, topics.correlation, topics.changelog)]
        try:
            for topic in self._user_topics:
                tps.extend(TopicPartition(topic, q) for q in await self._partitions_of(topic) if q % n == p)
            if p == 0:
                tps.append(TopicPartition(self._owners_topic, 0))
                tps.append(TopicPartition(topics.dead_letter.name, 0))
                for group in self._groups:
                    tps.append(await group_offsets_partition(self._producer.client, group))
        except Exception:
            log.warning("listing the partitions of task %d for the hanging-transaction check failed", p,
                        exc_info=True)  # fmt: skip
        self._watched[p] = tps
        self.hanging.watch(tps)

    def unwatch(self, p: int) -> None:
        tps = self._watched.pop(p, None)
        if tps is not None:
            self.hanging.unwatch(tps)

    async def end_fenced(self, transactions: PartitionTransactions, group: str, p: int) -> None:
        """End the transactions of p's earlier owners (in consumer group ``group``) that a broker
        restart left open, their markers skipped, before p is restored and its offsets read:
        see ``HangingTransactions.end_fenced``. Every partition such a transaction can have
        written is looked at (internal and application topics, the group's offsets). A failure
        is logged and left to the reaper's periodic pass."""
        producer = transactions.get(p)
        identity = producer.identity() if producer is not None else None
        if identity is None:
            return
        try:
            if self._txn_partitions is None:
                topics = self._topics
                tps = [TopicPartition(self._owners_topic, 0), TopicPartition(topics.dead_letter.name, 0)]
                for topic in [topics.events.name, topics.correlation.name, topics.changelog.name,
                              *self._user_topics]:  # fmt: skip
                    tps += [TopicPartition(topic, q) for q in await self._partitions_of(topic)]
                self._txn_partitions = tps
            offsets = await group_offsets_partition(self._producer.client, group)
            await self.hanging.end_fenced(
                transactions.transactional_id(p), *identity, [offsets, *self._txn_partitions]
            )
        except Exception:
            log.warning(
                "%s: checking task %d's partitions for transactions left open failed", group, p, exc_info=True
            )

    async def _partitions_of(self, topic: str) -> list[int]:
        """A topic's partitions, from the producer's metadata (fetched if not known yet)."""
        client = self._producer.client
        parts = client.cluster.partitions_for_topic(topic)
        if parts is None:
            await wait_on_metadata(client, topic)
            parts = client.cluster.partitions_for_topic(topic) or set()
        return sorted(parts)
