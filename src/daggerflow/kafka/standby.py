"""Standby replicas (Kafka Streams' standby tasks) for the Kafka runtime.

A worker keeps warm copies of partitions it does not own: it tails their changelog
partitions into the same local store files the active task would open, so that when it
takes a partition over, ``restore_from_topic`` only reads what was written since its last
poll instead of the whole changelog.

``standby_partitions`` decides, identically on every worker, which partitions a worker
should replicate. ``StandbyReplicas`` does the tailing: one group-less ``read_committed``
consumer, manually assigned the changelog partitions of the standby set, applying records
with ``Restorer`` (so checkpoints work exactly as for a restore).

A store file is held by one process at a time (a lock file), and in this process by one
``Store`` object: the runtime calls ``release(p)`` before it activates ``p`` and opens the
file itself, and must never list an actively owned partition in ``set_partitions``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ..errors import StoreError
from ..store.base import Store
from ..store.changelog import Restorer
from .background import stop_tail
from .client_options import Connection
from .settings import groupless_consumer

log = logging.getLogger(__name__)


def standby_partitions(
    owners: Mapping[int, str], me: str, k: int, members: Iterable[str] | None = None
) -> set[int]:
    """The partitions ``me`` keeps a standby of: with the members sorted, a partition owned
    by member ``m`` has the next ``k`` members after ``m`` (cyclic, ``m`` itself skipped) as
    standbys. A pure function of its arguments, so every worker computes the same answer.

    ``owners`` maps partition -> worker id of its active owner; ``members`` are the live
    worker ids (default: the distinct owners plus ``me``). An owner that is not a member
    (it left, and the owners map is stale) is placed where it would sort among them, so its
    partitions still get standbys. ``me`` never gets a partition it owns."""
    if k < 0:
        raise ValueError("k must be >= 0")
    ring = sorted(set(members) if members is not None else {*owners.values(), me})
    if k == 0 or me not in ring:
        return set()
    out: set[int] = set()
    cache: dict[str, bool] = {}
    for partition, owner in owners.items():
        if owner == me:
            continue
        chosen = cache.get(owner)
        if chosen is None:
            chosen = cache[owner] = me in _successors(ring, owner, k)
        if chosen:
            out.add(partition)
    return out


def _successors(ring: list[str], owner: str, k: int) -> list[str]:
    """The ``k`` members after ``owner`` in the sorted ring (fewer if the ring is small),
    never ``owner`` itself."""
    start = bisect.bisect_right(ring, owner)  # the first member after owner, whether or not owner is one
    others = [ring[(start + i) % len(ring)] for i in range(len(ring))]
    return [m for m in others if m != owner][:k]


@dataclass
class _Replica:
    """One partition being tailed: its store, and how far it is."""

    store: Store
    restorer: Restorer
    next: int  # offset of the next record to apply: records below it are applied already
    position: int  # consumer position after the last poll (past markers and aborted records)
    end: int | None  # last known end offset (last stable offset under read_committed)


class StandbyReplicas:
    """Tails changelog partitions into local stores (see the module docstring).

    All store work happens on the event loop between awaits, so the tail loop, which
    applies records synchronously right after ``getmany`` returns, never runs while
    ``release`` or ``set_partitions`` closes a store. Changes of the set are serialised by
    a lock because ``set_partitions`` awaits ``end_offsets``."""

    def __init__(
        self,
        broker: Connection | str,
        changelog_topic: str,
        open_store: Callable[[int], Store],
        *,
        poll_ms: int = 200,
        max_records: int = 1000,
    ) -> None:
        self.broker = broker
        self.topic = changelog_topic
        self.open_store = open_store
        self.poll_ms = poll_ms
        # Bounds how long one apply blocks the event loop (~10 ms into SQLite).
        self.max_records = max_records
        self._replicas: dict[int, _Replica] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._replicas)

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = groupless_consumer(
            self.broker,
            # ListOffsets shares the connection with the long-poll Fetch and waits behind it
            # (docs/kafka-runtime-notes.md, pitfall 8): keep the long poll short.
            fetch_max_wait_ms=max(10, min(self.poll_ms, 100)),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name=f"standby {self.topic}")
        self._task.add_done_callback(self._tail_ended)

    def _tail_ended(self, task: asyncio.Task[None]) -> None:
        # Standbys are an optimisation: their failure must not stop the worker, but must be
        # seen (activations then restore the whole tail again).
        if not task.cancelled() and task.exception() is not None:
            log.error("standby replicas of %s stopped tailing", self.topic, exc_info=task.exception())

    async def stop(self) -> None:
        """Stop tailing and close every store held (after recording how far each got)."""
        task, self._task = self._task, None

        async def close_stores() -> None:
            async with self._lock:
                for p in list(self._replicas):
                    self._drop(p)
            self._consumer = None

        await stop_tail(task, self._consumer, release=close_stores)

    async def set_partitions(self, partitions: set[int]) -> None:
        """Replicate exactly ``partitions``: start tailing new ones from each store's
        checkpoint + 1, stop and close the ones no longer wanted. A store that cannot be
        opened (for example, its file is held by another process) is logged and left out;
        a later call tries again."""
        consumer = self._require_consumer()
        async with self._lock:
            for p in sorted(self._replicas.keys() - partitions):
                self._drop(p)
            added: dict[int, _Replica] = {}
            for p in sorted(partitions - self._replicas.keys()):
                try:
                    store = self.open_store(p)
                except StoreError as exc:
                    log.warning("standby of %s/%d not started: %s", self.topic, p, exc)
                    continue
                try:
                    restorer = Restorer(store, p, chunk=self.max_records)
                    checkpoint = restorer.checkpoint()
                except BaseException:
                    store.close()
                    raise
                start = 0 if checkpoint is None else checkpoint + 1
                added[p] = _Replica(store, restorer, start, start, None)
            if added:
                # Before assign(): an unassigned partition's ListOffsets does not wait behind
                # a long poll. Only for lag(), so a failure is not fatal.
                tps = [TopicPartition(self.topic, p) for p in added]
                try:
                    ends = await consumer.end_offsets(tps)
                except KafkaError as exc:
                    log.warning("standby: end offsets of %s unknown: %r", self.topic, exc)
                    ends = {}
                for tp, end in ends.items():
                    replica = added[tp.partition]
                    replica.end = int(end)
                    if replica.next > end:
                        # The store is ahead of the topic (a recreated topic, or another
                        # deployment's file): nothing here can be applied to it correctly.
                        log.warning(
                            "standby %s/%d: store checkpoint %d is beyond the end offset %d",
                            self.topic, tp.partition, replica.next - 1, end,
                        )  # fmt: skip
            self._replicas.update(added)
            self._reassign()
            for p, replica in added.items():
                log.info(
                    "standby %s/%d: tailing from offset %d (end %s)", self.topic, p, replica.next, replica.end
                )
        if self._replicas:
            self._wake.set()

    async def release(self, partition: int) -> None:
        """Stop tailing ``partition`` and close its store, so that the caller can open the
        same file; a no-op if it is not held. Does no network I/O."""
        async with self._lock:
            if partition in self._replicas:
                self._drop(partition)
                self._reassign()

    def lag(self) -> dict[int, int]:
        """Partition -> records (offsets) between the consumer's position and the last
        known end offset; -1 if the end offset is not known yet."""
        return {
            p: -1 if r.end is None else max(0, r.end - r.position) for p, r in sorted(self._replicas.items())
        }

    # Internals -----------------------------------------------------------------------------------

    def _require_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("StandbyReplicas.start() was not called (or stop() was)")
        return self._consumer

    def _drop(self, p: int, *, advance: bool = True) -> None:
        """Forget ``p`` and close its store, first recording the consumer position as the
        checkpoint: the log may end with transaction markers, and a restore must start after
        them (restore_from_topic does the same)."""
        replica = self._replicas.pop(p)
        try:
            if advance:
                self._advance(replica)
        finally:
            replica.store.close()
        log.info("standby %s/%d: released at offset %d", self.topic, p, replica.position)

    def _advance(self, replica: _Replica) -> None:
        if replica.position > replica.next:
            replica.restorer.advance(replica.position - 1)
            replica.next = replica.position

    def _reassign(self) -> None:
        """Install the assignment of the current set. assign() replaces the whole
        assignment and forgets every position, so every partition is sought again, to the
        next offset it needs."""
        consumer = self._consumer
        if consumer is None:
            return
        if not self._replicas:
            consumer.unsubscribe()
            return
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(self._replicas)])
        for p, replica in self._replicas.items():
            consumer.seek(TopicPartition(self.topic, p), replica.next)
            replica.position = replica.next

    async def _run(self) -> None:
        consumer = self._require_consumer()
        while True:
            if not self._replicas:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                fetched = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
                # Nothing from here to the end of the loop body suspends (position() returns
                # at once for a partition that was sought), so no store is closed under it.
                applied, failed = self._apply(fetched)
                for p in failed:
                    self._drop(p, advance=False)
                if failed:
                    self._reassign()
                assigned = consumer.assignment()
                for p, replica in list(self._replicas.items()):
                    tp = TopicPartition(self.topic, p)
                    if tp in assigned:
                        position = await consumer.position(tp)
                        if self._replicas.get(p) is replica:  # not released, should it have waited
                            self._observe(consumer, tp, replica, position, p in applied)
            except KafkaError as exc:
                # The fetcher retries on its own; a back-off keeps a persistent error (for
                # example, a deleted topic) from spinning.
                log.warning("standby poll of %s failed: %r", self.topic, exc)
                await asyncio.sleep(1.0)

    def _apply(self, fetched: Mapping[TopicPartition, list[Any]]) -> tuple[set[int], list[int]]:
        """Apply polled records; return the partitions that got records, and those whose
        records could not be applied (an unreadable record, a store error): the caller drops
        those, the others go on."""
        applied: set[int] = set()
        failed: list[int] = []
        for tp, records in fetched.items():
            replica = self._replicas.get(tp.partition)
            if replica is None or tp.topic != self.topic:
                continue  # released while the poll was in flight
            # Records below ``next`` were applied already (a poll that straddled a
            # reassignment); Restorer would skip them too, by its checkpoint.
            rows = [(r.offset, r.key, r.value) for r in records if r.offset >= replica.next]
            if not rows:
                continue
            try:
                replica.restorer.apply(rows)
            except Exception:
                log.exception("standby %s/%d: applying changelog records failed; standby dropped",
                              self.topic, tp.partition)  # fmt: skip
                failed.append(tp.partition)
                continue
            replica.next = rows[-1][0] + 1
            applied.add(tp.partition)
        return applied, failed

    def _observe(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, replica: _Replica, position: int, busy: bool
    ) -> None:
        """Note the consumer's position and the end offset of ``tp`` after a poll. In a poll
        that brought no records (``busy`` false) and with the partition caught up, move the
        checkpoint past trailing transaction markers: once per quiet spell, not one more
        commit per poll under load (``release`` and ``stop`` advance it in any case)."""
        replica.position = max(replica.position, position)
        end = consumer.last_stable_offset(tp)
        if end is None or end < 0:
            end = consumer.highwater(tp)
        if end is not None and end >= 0:
            replica.end = max(replica.end or 0, int(end))
        if not busy and replica.end is not None and replica.position >= replica.end:
            self._advance(replica)
