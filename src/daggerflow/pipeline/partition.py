"""One partition's task in the Kafka runtime (Kafka Streams' StreamTask).

A task owns partition ``p`` of the co-partitioned internal topics: a local store restored
from the changelog, a ``Processor`` over it whose commits go through ``committer`` (the
Kafka transaction, then the local store), and the timers of the instances it holds. Jobs
run in the engine's shared ``JobRunner``; their outcomes come back through ``submit``.

Closing a task drops what it has not committed: queued inputs are read again by the next
owner from the committed offsets, and callers waiting on them get ``PartitionMoved``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..errors import PartitionMoved
from ..machine import TimerFired
from ..model.records import PendingJob
from ..store.base import Store
from .clock import Clock
from .processor import Committer, Item, Processor, Settings
from .timers import TimerService

log = logging.getLogger(__name__)


class PartitionTask:
    def __init__(
        self,
        partition: int,
        store: Store,
        clock: Clock,
        settings: Settings,
        committer: Committer,
    ) -> None:
        self.partition = partition
        self.store = store
        self.processor = Processor(store, clock, settings)
        self.processor.committer = committer
        self.timers = TimerService(clock, self._timer_fired)
        self.processor.on_timer_set = self.timers.set
        self.processor.on_timer_cancel = self.timers.cancel
        self.closed = False

    def _timer_fired(self, instance: str, key: str) -> None:
        self.processor.submit_event(instance, TimerFired(key))

    def start(self, on_job: Callable[[PendingJob], None]) -> list[PendingJob]:
        """Arm the stored timers and start processing; return the stored pending jobs,
        which the caller runs (a previous owner may have started them: jobs are
        at-least-once, their outcomes exactly-once)."""
        self.processor.on_job = on_job
        for instance, key, due in self.store.all_timers():
            self.timers.set(instance, key, due)
        self.processor.start()
        self.timers.start()
        return self.store.pending_jobs()

    def submit(self, item: Item) -> None:
        if not self.closed:
            self.processor.submit(item)

    @property
    def failed(self) -> BaseException | None:
        return self.processor.failed

    async def close(self) -> None:
        """Stop processing (an in-flight commit is cancelled: its transaction is aborted by
        the next owner's fence), fail waiting callers, close the store."""
        if self.closed:
            return
        self.closed = True
        await self.timers.stop()
        await self.processor.stop()
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
