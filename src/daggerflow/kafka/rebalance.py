"""The consumer rebalance listener of the exactly-once groups (rules 1 and 3 of ``transactions``):
fence, then read the committed offsets; keep ``on_partitions_assigned`` short.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from .guard import AssignmentGuard
from .transactions import PartitionTransactions

log = logging.getLogger(__name__)

RestoreHook = Callable[[int], Awaitable[None]]
RevokeHook = Callable[[frozenset[int]], Awaitable[None]]


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Records assignment changes at once and activates partitions in background tasks.

    ``on_partitions_assigned`` pauses the new partitions, starts one activation task per task
    (partition number; co-partitioned topics share it) and returns. Activation, retried with
    backoff until it succeeds or the partition is revoked:

    1. ``transactions.start(p)`` - the fence;
    2. ``await restore(p)`` - the task's state from its changelog (read_committed, after the fence,
       so the zombie's open transaction is already aborted);
    3. ``consumer.committed(tp)`` for each of p's partitions, after the fence (no committed offset:
       the beginning of the partition);
    4. ``consumer.seek``, ``guard.activate``, ``consumer.resume``; p joins ``active``.

    ``on_partitions_revoked`` deactivates the partitions in the guard, cancels their activations,
    awaits ``on_revoked(partitions)`` (finish or abort in-flight transactions there: heartbeats go
    on during revocation) and stops their producers.
    """

    def __init__(
        self,
        consumer: Any,
        transactions: PartitionTransactions,
        guard: AssignmentGuard,
        *,
        restore: RestoreHook | None = None,
        on_revoked: RevokeHook | None = None,
        retry_backoff: float = 0.1,
        max_retry_backoff: float = 2.0,
        name: str = "",
    ) -> None:
        #: the consumer group, for the logs (a worker has several groups)
        self.name = name
        self._consumer = consumer
        self._transactions = transactions
        self._guard = guard
        self._restore = restore
        self._on_revoked = on_revoked
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._activations: dict[int, asyncio.Task[None]] = {}
        self._active: set[int] = set()
        self._changed = asyncio.Condition()
        self.activation_count = 0  #: completed activations (a metric)
        self._closed = False

    @property
    def active(self) -> frozenset[int]:
        """Tasks (partition numbers) activated and resumed."""
        return frozenset(self._active)

    async def wait_active(self, partitions: Iterable[int]) -> None:
        wanted = set(partitions)
        async with self._changed:
            await self._changed.wait_for(lambda: wanted <= self._active)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _cancel(self, partitions: Iterable[int]) -> None:
        tasks = [t for p in partitions if (t := self._activations.pop(p, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every activation and refuse new ones (the consumer is being stopped: a
        revocation or assignment during its leave must not start fencing or restoring)."""
        self._closed = True
        await self._cancel(list(self._activations))

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        tps = list(revoked)
        for tp in tps:
            self._guard.deactivate(tp)
        partitions = frozenset(tp.partition for tp in tps)
        await self._cancel(partitions)
        self._active -= partitions
        try:
            if partitions:
                log.info("%s: revoked tasks %s", self.name, sorted(partitions))
                if self._on_revoked is not None:
                    await self._on_revoked(partitions)
        finally:
            for p in partitions:
                await self._transactions.stop(p)
            await self._notify()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Must return in milliseconds: no heartbeats until it does (rule 3).
        tps = list(assigned)
        if not tps:
            return
        self._consumer.pause(*tps)
        by_task: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in tps:
            by_task[tp.partition].append(tp)
        for p, task_tps in by_task.items():
            old = self._activations.pop(p, None)
            if old is not None:
                old.cancel()
            self._spawn(p, task_tps)
        log.info("%s: assigned tasks %s: activating in the background", self.name, sorted(by_task))

    def _spawn(self, partition: int, tps: list[TopicPartition]) -> None:
        if self._closed:
            return
        # One activation per task: one spawned meanwhile (an assignment while
        # ``task_migrated`` awaited) is replaced, never left running beside this one.
        previous = self._activations.pop(partition, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._activate(partition, tps), name=f"daggerflow-activate-{partition}")
        self._activations[partition] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._activations.get(partition) is done:
                del self._activations[partition]

        task.add_done_callback(forget)

    async def task_migrated(self, partition: int) -> None:
        """Close task ``partition`` as a zombie after ``TaskMigrated`` and re-activate it if the
        consumer still owns it (a transaction timeout fences without any rebalance; if another
        member owns it now, our heartbeat soon learns of it and the revocation cancels us)."""
        tps = [tp for tp in self._consumer.assignment() if tp.partition == partition]
        for tp in tps:
            self._guard.deactivate(tp)
        await self._cancel([partition])
        self._active.discard(partition)
        await self._transactions.stop(partition)
        if tps:
            self._consumer.pause(*tps)
            self._spawn(partition, tps)
        await self._notify()

    async def _activate(self, partition: int, tps: list[TopicPartition]) -> None:
        backoff = self._retry_backoff
        while True:
            try:
                await self._transactions.start(partition)  # rule 1: fence first...
                if self._restore is not None:
                    await self._restore(partition)
                positions: dict[TopicPartition, int] = {}
                unset: list[TopicPartition] = []
                for tp in tps:
                    committed = await self._consumer.committed(tp)  # ...then read committed offsets
                    if committed is None:
                        unset.append(tp)
                    else:
                        positions[tp] = committed
                if unset:
                    positions.update(await self._consumer.beginning_offsets(unset))
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "activating task %d failed; retrying in %.1f s", partition, backoff, exc_info=True
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_retry_backoff)
        current = self._activations.get(partition) is asyncio.current_task()
        if not current or not set(tps) <= set(self._consumer.assignment()):
            # Revoked meanwhile (the cancellation normally comes first). Logged: a partition
            # dropped here and never assigned again would stay paused.
            log.info("%s: activation of task %d dropped (replaced: %s; assignment %s)", self.name, partition,
                     not current, sorted(str(tp) for tp in self._consumer.assignment()))  # fmt: skip
            return
        for tp in tps:  # no await from here on: seek and guard move together
            self._consumer.seek(tp, positions[tp])
            self._guard.activate(tp, positions[tp])
        self._consumer.resume(*tps)
        self._active.add(partition)
        self.activation_count += 1
        log.info(
            "%s: task %d active at %s",
            self.name,
            partition,
            {f"{tp.topic}:{tp.partition}": positions[tp] for tp in tps},
        )
        await self._notify()
