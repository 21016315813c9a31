"""A partition's task (Kafka Streams' StreamTask), the unit both runtimes are built from.

A task owns partition ``p`` of the instances: a store, a ``Processor`` over it and the timers
of the instances it holds. The embedded runtime is one task, partition 0, committing to its
store directly; the Kafka runtime runs one per assigned partition, each committing through
``committer`` (the Kafka transaction, then the local store). Jobs run in the engine's shared
``JobRunner``; their outcomes come back through ``submit``.

Starting a task resumes what its store holds (timers, jobs a crash interrupted, expired rows
to purge) the same way on both runtimes. Closing it lets a commit in flight finish (briefly,
``FINISH_COMMIT_S``) and drops what it has not committed: queued inputs are read again by the
next owner from the committed offsets, and callers waiting on them get ``PartitionMoved``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PartitionMoved
from ..machine import TimerFired
from ..model import history
from ..store.base import Store
from .clock import Clock
from .items import Committer, Item, Purge, Settings
from .jobs import JobRunner
from .processor import CommitHook, Hooks, Processor
from .timers import TimerService

log = logging.getLogger(__name__)

#: How long closing a task lets a commit in flight finish (``Processor.stop``): short, since a
#: closing task holds up a rebalance, and a commit is bounded anyway (the Kafka runtime's
#: ``COMMIT_TIMEOUT_S``).
FINISH_COMMIT_S = 5.0


@dataclass(frozen=True)
class TaskContext:
    """What every partition task of a worker shares: the clock, the job runner, the
    post-commit hook, and the options that are not the processor's."""

    clock: Clock
    jobs: JobRunner
    on_committed: CommitHook
    inline_jobs: bool
    dedupe_ttl: float
    # Told of each store a task starts over (the engine's start-up check of the running
    # instances against the registered task types and topics).
    on_started: Callable[[Store], object] | None = None


class PartitionTask:
    def __init__(
        self,
        partition: int,
        store: Store,
        settings: Settings,
        context: TaskContext,
        committer: Committer | None = None,
    ) -> None:
        self.partition = partition
        self.store = store
        self.context = context
        jobs = context.jobs
        obs = settings.observer
        self.timers = TimerService(context.clock, self._timer_fired, obs.timer_fired if obs is not None else None)
        hooks = Hooks(
            run_job=jobs.submit,
            run_inline=jobs.run_inline if context.inline_jobs else None,
            cancel_job=jobs.cancel,
            set_timer=self.timers.set,
            cancel_timer=self.timers.cancel,
            committed=context.on_committed,
        )
        self.processor = Processor(store, context.clock, settings, hooks, committer)
        self.closed = False

    def history(self, instance_id: str, *, after: int, size: int) -> history.Page | None:
        """A page of an instance's committed history (None: no such instance here)."""
        inst = self.processor.committed_instance(instance_id)
        if inst is None:
            return None
        rows = self.store.history_rows(instance_id) if inst.history_rows else []
        return history.read(inst, rows, self.processor.settings.history_limit, after=after, size=size)

    def _timer_fired(self, instance: str, key: str) -> None:
        self.processor.submit_event(instance, TimerFired(key))

    def start(self) -> None:
        """Arm the stored timers, start processing, run the stored pending jobs (a crash or
        a previous owner may have started them: jobs are at-least-once, their outcomes
        exactly-once), and purge what expired meanwhile. The caller must be able to find
        this task for an instance before it starts: a job may finish at once and report."""
        for instance, key, due in self.store.all_timers():
            self.timers.set(instance, key, due)
        obs = self.processor.settings.observer
        if obs is not None:
            obs.partition_opened(self.store)
        self.processor.start()
        self.timers.start()
        for job in self.store.pending_jobs():
            self.context.jobs.submit(job)
        if self.store.bulk_active():
            self.processor.schedule_bulk()  # a bulk job resumes after its last committed step
        self.purge()
        if self.context.on_started is not None:
            try:
                self.context.on_started(self.store)
            except Exception:  # a check must not stop the partition from working
                log.warning("the start-up check of partition %d failed", self.partition, exc_info=True)

    def purge(self) -> None:
        """Forget expired dedupe ids and buffered messages, through a batch of their own, so
        that a changelog gets their tombstones and a restore does not bring them back."""
        self.submit(Purge(self.context.clock.now(), self.context.dedupe_ttl))

    def submit(self, item: Item) -> None:
        if not self.closed:
            self.processor.submit(item)

    @property
    def failed(self) -> BaseException | None:
        return self.processor.failed

    async def drain(self) -> None:
        """Stop the timers and let the processor commit what it has queued (a failed
        processor has nothing more to commit)."""
        await self.timers.stop()
        self.processor.pause_bulk()
        if self.processor.failed is None:
            await self.processor.wait_idle()

    async def close(self) -> None:
        """Stop processing (a commit in flight may finish within ``FINISH_COMMIT_S``, else it
        is cancelled and its transaction aborted), fail waiting callers, close the store."""
        if self.closed:
            return
        self.closed = True
        await self.timers.stop()
        await self.processor.stop(finish_commit=FINISH_COMMIT_S)
        settings = self.processor.settings
        if settings.observer is not None:
            settings.observer.partition_closed(settings.owns_instance)
        moved = PartitionMoved(f"partition {self.partition} moved to another worker; send the call again")
        while not self.processor.queue.empty():
            item = self.processor.queue.get_nowait()
            fut: asyncio.Future[Any] | None = item.future
            if fut is not None and not fut.done():
                fut.set_exception(moved)
        self.processor.cache.clear()
        try:
            self.store.close()
        except Exception:
            log.warning("closing the store of partition %d failed", self.partition, exc_info=True)
