"""Which partitions of a consumer group this worker owns, and the state of each (Kafka
Streams' TaskManager and ``Task.State``).

``RebalanceListener`` hands assignment changes to ``handle_assigned`` / ``handle_revoked``;
``handle_migrated`` comes from the processing side after ``TaskMigrated`` or a failed task.
Every group of a worker has one (the main group with its stateful partition tasks, each
stateless topic loop).

The states of a partition (task)::

                        handle_assigned
                              │
                              ▼
        ┌──────────────► ASSIGNED ◄───────────────┐  paused; its activation is scheduled
        │                     │ fence              │
        │                     ▼                    │  assigned again:
        │                 RESTORING ───────────────┤  start over
        │                     │ seek, resume       │  (a failed attempt is retried
        │                     ▼                    │   with backoff, still RESTORING)
        │                  RUNNING ────────────────┘
        │                     │ handle_migrated (also from ASSIGNED and RESTORING)
        │                     ▼
        └───────────────  MIGRATED                    closed as a zombie
          still assigned

    any state ──handle_revoked──► REVOKED ──handle_assigned──► ASSIGNED
    any state ──close────────────► CLOSED   (the worker stops: no activation starts again)

An activation (ASSIGNED → RESTORING → RUNNING) runs in a background task, so that
``on_partitions_assigned`` returns at once (rule 3 of ``transactions``), in this order:

1. ``transactions.start(p)``: the fence (rule 1: before anything is read);
2. ``close_previous(p)``: end what p's previous owners left open (transactions a broker
   restart left hanging, a task of p still open here);
3. ``restore(p)``: the task's state from its changelog (read_committed, after the fence, so
   a zombie's open transaction is already aborted);
4. ``consumer.committed(tp)`` for each of p's partitions, after the fence (none: the
   beginning of the partition);
5. ``consumer.seek``, ``guard.activate``, ``consumer.resume``: p is RUNNING.

A revocation deactivates the partitions in the guard, cancels their activations, awaits
``on_revoked(partitions)`` (in-flight commits finish or abort there: heartbeats go on during
a revocation) and stops their producers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from .guard import AssignmentGuard
from .transactions import PartitionTransactions

#: Assignment, revocation and activation lines keep the logger they always had: tools read
#: them (bench/kafka_pizza.py follows activations by "kafka.rebalance: <group>: task N active").
log = logging.getLogger("daggerflow.kafka.rebalance")

PartitionHook = Callable[[int], Awaitable[None]]
RevokeHook = Callable[[frozenset[int]], Awaitable[None]]


class PartitionState(enum.Enum):
    ASSIGNED = "assigned"
    RESTORING = "restoring"
    RUNNING = "running"
    MIGRATED = "migrated"
    REVOKED = "revoked"
    CLOSED = "closed"


_S = PartitionState
#: The states each state may move to (the diagram above); anything else is a bug.
VALID_TRANSITIONS: dict[PartitionState | None, frozenset[PartitionState]] = {
    None: frozenset({_S.ASSIGNED}),
    _S.ASSIGNED: frozenset({_S.RESTORING, _S.MIGRATED, _S.REVOKED, _S.CLOSED}),
    _S.RESTORING: frozenset({_S.RUNNING, _S.ASSIGNED, _S.MIGRATED, _S.REVOKED, _S.CLOSED}),
    _S.RUNNING: frozenset({_S.ASSIGNED, _S.MIGRATED, _S.REVOKED, _S.CLOSED}),
    _S.MIGRATED: frozenset({_S.ASSIGNED, _S.REVOKED, _S.CLOSED}),
    _S.REVOKED: frozenset({_S.ASSIGNED, _S.CLOSED}),
    _S.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class _Hooks:
    close_previous: PartitionHook | None
    restore: PartitionHook | None
    on_revoked: RevokeHook | None


class TaskManager:
    """The partitions of one consumer group on this worker, and their activations."""

    def __init__(
        self,
        consumer: Any,
        transactions: PartitionTransactions,
        guard: AssignmentGuard,
        *,
        close_previous: PartitionHook | None = None,
        restore: PartitionHook | None = None,
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
        self._hooks = _Hooks(close_previous, restore, on_revoked)
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._states: dict[int, PartitionState] = {}
        self._activations: dict[int, asyncio.Task[None]] = {}
        self._changed = asyncio.Condition()
        self.activation_count = 0  #: completed activations (a metric)
        #: set once the first assignment arrived (the worker is ready to report)
        self.assigned_once = asyncio.Event()
        self._closed = False

    # States --------------------------------------------------------------------------------

    def state(self, partition: int) -> PartitionState | None:
        return self._states.get(partition)

    def _transition(self, partition: int, new: PartitionState) -> None:
        old = self._states.get(partition)
        if new not in VALID_TRANSITIONS[old]:
            raise IllegalTransition(f"{self.name}: task {partition} cannot go from {old} to {new}")
        self._states[partition] = new

    @property
    def active(self) -> frozenset[int]:
        """Tasks (partition numbers) RUNNING: activated and resumed."""
        return frozenset(p for p, s in self._states.items() if s is _S.RUNNING)

    @property
    def owned(self) -> frozenset[int]:
        """Tasks assigned to this worker, whatever their state (not revoked, not closed)."""
        return frozenset(p for p, s in self._states.items() if s not in (_S.REVOKED, _S.CLOSED))

    async def wait_active(self, partitions: Iterable[int]) -> None:
        wanted = set(partitions)
        async with self._changed:
            await self._changed.wait_for(lambda: wanted <= self.active)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # Assignment changes ----------------------------------------------------------------------

    async def handle_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Pause the new partitions and start one activation per task; return at once (no
        heartbeats until the rebalance callback returns: rule 3)."""
        tps = list(assigned)
        if tps:
            self._consumer.pause(*tps)
            by_task: dict[int, list[TopicPartition]] = defaultdict(list)
            for tp in tps:
                by_task[tp.partition].append(tp)
            for p, task_tps in by_task.items():
                self._schedule(p, task_tps)
            log.info("%s: assigned tasks %s: activating in the background", self.name, sorted(by_task))
        self.assigned_once.set()

    async def handle_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        tps = list(revoked)
        for tp in tps:
            self._guard.deactivate(tp)
        partitions = frozenset(tp.partition for tp in tps)
        await self._cancel(partitions)
        for p in partitions:
            # (a consumer that fails to rejoin revokes the same assignment again)
            if self._states.get(p) not in (None, _S.REVOKED, _S.CLOSED):
                self._transition(p, _S.REVOKED)
        try:
            if partitions:
                log.info("%s: revoked tasks %s", self.name, sorted(partitions))
                if self._hooks.on_revoked is not None:
                    await self._hooks.on_revoked(partitions)
        finally:
            for p in partitions:
                await self._transactions.stop(p)
            await self._notify()

    async def handle_migrated(self, partition: int) -> None:
        """Close task ``partition`` as a zombie after ``TaskMigrated`` (or a failed task) and
        re-activate it if the consumer still owns it (a transaction timeout fences without
        any rebalance; if another member owns it now, our heartbeat soon learns of it and the
        revocation ends it)."""
        state = self._states.get(partition)
        if state in (None, _S.REVOKED, _S.CLOSED):
            return  # not ours (any more): its owner reads it from the committed offsets
        tps = [tp for tp in self._consumer.assignment() if tp.partition == partition]
        for tp in tps:
            self._guard.deactivate(tp)
        await self._cancel([partition])
        if self._states.get(partition) is not _S.MIGRATED:
            self._transition(partition, _S.MIGRATED)
        await self._transactions.stop(partition)
        if tps:
            self._consumer.pause(*tps)
            self._schedule(partition, tps)
        await self._notify()

    async def close(self) -> None:
        """Cancel every activation and refuse new ones (the consumer is being stopped: a
        revocation or assignment during its leave must not start fencing or restoring)."""
        self._closed = True
        await self._cancel(list(self._activations))
        for p in list(self._states):
            if self._states[p] is not _S.CLOSED:
                self._transition(p, _S.CLOSED)

    # Activation ------------------------------------------------------------------------------

    async def _cancel(self, partitions: Iterable[int]) -> None:
        tasks = [t for p in partitions if (t := self._activations.pop(p, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _schedule(self, partition: int, tps: list[TopicPartition]) -> None:
        if self._closed:
            return
        # One activation per task: one scheduled meanwhile (an assignment while
        # ``handle_migrated`` awaited) is replaced, never left running beside this one.
        previous = self._activations.pop(partition, None)
        if previous is not None:
            previous.cancel()
        if self._states.get(partition) is not _S.ASSIGNED:
            self._transition(partition, _S.ASSIGNED)
        task = asyncio.create_task(self._activate(partition, tps), name=f"daggerflow-activate-{partition}")
        self._activations[partition] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._activations.get(partition) is done:
                del self._activations[partition]

        task.add_done_callback(forget)

    async def _activate(self, partition: int, tps: list[TopicPartition]) -> None:
        self._transition(partition, _S.RESTORING)
        backoff = self._retry_backoff
        while True:
            try:
                positions = await self._fence_restore_and_read_offsets(partition, tps)
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
        self._transition(partition, _S.RUNNING)
        self.activation_count += 1
        log.info("%s: task %d active at %s", self.name, partition,
                 {f"{tp.topic}:{tp.partition}": positions[tp] for tp in tps})  # fmt: skip
        await self._notify()

    async def _fence_restore_and_read_offsets(
        self, partition: int, tps: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        # Every step but the restore (long by nature, and it logs its progress) is bounded: a
        # step that waits on a broker forever (a coordinator still finishing a transaction a
        # crash interrupted) must become a logged, retried attempt, never a partition that
        # stays paused with nothing said.
        async with activation_step("the fence", partition):
            await self._transactions.start(partition)  # rule 1: fence first...
        hooks = self._hooks
        if hooks.close_previous is not None:
            async with activation_step("ending the previous owners' open transactions", partition):
                await hooks.close_previous(partition)
        if hooks.restore is not None:
            await hooks.restore(partition)
        positions: dict[TopicPartition, int] = {}
        unset: list[TopicPartition] = []
        async with activation_step("reading the committed offsets", partition):
            for tp in tps:
                committed = await self._consumer.committed(tp)  # ...then read committed offsets
                if committed is None:
                    unset.append(tp)
                else:
                    positions[tp] = committed
            if unset:
                positions.update(await self._consumer.beginning_offsets(unset))
        return positions


#: How long one step of an activation (other than the restore) may take before the attempt
#: is given up and retried: the producers' transaction timeout, after which the coordinator
#: has ended whatever a previous owner left open.
ACTIVATION_STEP_TIMEOUT_S = 30.0


@contextlib.asynccontextmanager
async def activation_step(what: str, partition: int) -> AsyncIterator[None]:
    """Bound one step of a partition's activation: past ``ACTIVATION_STEP_TIMEOUT_S`` it
    raises a ``TimeoutError`` naming the step, which the activation logs and retries."""
    try:
        async with asyncio.timeout(ACTIVATION_STEP_TIMEOUT_S):
            yield
    except TimeoutError:
        raise TimeoutError(
            f"{what} of task {partition} took more than {ACTIVATION_STEP_TIMEOUT_S:.0f} s"
        ) from None
