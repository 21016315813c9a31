"""The processing loop: read a batch of inputs, apply them, commit once, then act.

Inputs come from API calls (create, submit, stop), job outcomes, timers and topic
consumers. Each batch is applied (``batch.BatchApplier``) and committed with no ``await``
in between on the embedded runtime, so readers on the event loop only ever see committed
state; a runtime whose commit is asynchronous (Kafka's transaction) passes a ``committer``,
and readers see the previous state until it completes. After the commit the processor
starts jobs, arms timers, resolves the callers' futures and tells its ``Hooks``: nothing
leaves the process before the state that caused it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PartitionMoved, TaskInvalidState, TaskMigrated, TooLarge
from ..machine.events import Event
from ..model.instance import Instance, copy_instance, decode_instance, encode_instance
from ..model.records import Outgoing, PendingJob
from ..store.base import Store, WriteBatch
from .background import Loop
from .batch import BatchApplier, Oversize, PostCommit
from .clock import Clock
from .items import BulkStep, Committer, InstanceEvent, Item, Settings
from .jobs import JobOutcome, Started

log = logging.getLogger(__name__)

#: Told after each commit what it committed (``PostCommit``: the changed instances, None for
#: deleted ones; the final state of deleted ones; each changed instance's state before the
#: batch; the messages appended) and the (topic, offset) of every message appended.
CommitHook = Callable[[PostCommit, list[tuple[str, int]]], None]


def _nothing(*args: Any) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """What a processor asks of its surroundings, given once at construction."""

    #: Run a job the batch started, after the commit (``JobRunner.submit``).
    run_job: Callable[[PendingJob], None] = _nothing
    #: Run a job before the commit, for its outcome to join the batch (``JobRunner.run_inline``);
    #: None: every job runs after the commit.
    run_inline: Callable[[PendingJob, Instance], JobOutcome | Started | None] | None = None
    cancel_job: Callable[[str, str], None] = _nothing
    set_timer: Callable[[str, str, float], None] = _nothing
    cancel_timer: Callable[[str, str], None] = _nothing
    committed: CommitHook = _nothing


class Processor(Loop):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        hooks: Hooks | None = None,
        committer: Committer | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.hooks = hooks or Hooks()
        # None: the store's own commit, synchronous; else an asynchronous commit that ends
        # with the store's (the Kafka transaction, then the local store as its checkpoint).
        self.committer = committer
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        # Committed instances, with their encoded bytes when known. A cached instance is
        # never changed: a batch applies events to a private copy (decoded from the bytes)
        # and replaces the entry after its commit. So anything handed out (API results,
        # job views, snapshots) stays as it was committed, without copying on every read.
        self.cache: OrderedDict[str, tuple[Instance, bytes | None]] = OrderedDict()
        self.transitions = 0
        self.batches = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_commit = 0.0
        self._bulk_queued = False  # a BulkStep is in the queue (one at a time)
        self._bulk_paused = False  # draining: no further steps (the jobs resume at the next start)
        self._committing = False  # an asynchronous commit is in flight
        self._stopping = False  # stop() waits for that commit: no batch after it

    # Inputs ---------------------------------------------------------------------------

    def submit(self, item: Item) -> None:
        self._idle.clear()
        self.queue.put_nowait(item)

    def submit_event(self, instance: str, event: Event, box: list[Outgoing] | None = None) -> None:
        self.submit(InstanceEvent(instance, event, None, box))

    def schedule_bulk(self) -> None:
        """Queue a step of the active bulk jobs, unless one is queued already. Queued from
        the event loop's next turn: the loop ``_run`` does not yield while its queue has
        items, and a job that queued its next step at once would hold the event loop (REST
        calls, consumers, jobs) until its end."""
        if not self._bulk_queued and not self._bulk_paused:
            self._bulk_queued = True
            asyncio.get_running_loop().call_soon(self.submit, BulkStep())

    def pause_bulk(self) -> None:
        """Queue no further bulk steps: a drain must not wait for a job to end."""
        self._bulk_paused = True

    async def call(self, instance: str, event: Event) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit(InstanceEvent(instance, event, fut))
        return await fut

    # State ----------------------------------------------------------------------------

    def committed_instance(self, instance_id: str) -> Instance | None:
        """The last committed state of an instance. Read-only: it is shared."""
        entry = self.cache.get(instance_id)
        if entry is not None:
            self.cache.move_to_end(instance_id)
            return entry[0]
        inst = self.store.get_instance(instance_id)
        if inst is not None:
            self._remember(inst, None)
        return inst

    def private_copy(self, instance_id: str) -> Instance | None:
        """A copy of the committed state that a batch may change."""
        inst = self.committed_instance(instance_id)
        if inst is None:
            return None
        data = self.cache[instance_id][1]
        return decode_instance(data) if data is not None else copy_instance(inst)

    def committed_size(self, instance_id: str) -> int:
        """The size of the committed record without its history tail (0 if there is none)."""
        inst = self.committed_instance(instance_id)
        if inst is None:
            return 0
        data = self.cache[instance_id][1]
        return (len(data) if data is not None else len(encode_instance(inst))) - len(inst.history_tail)

    def _remember(self, inst: Instance, data: bytes | None) -> None:
        self.cache[inst.id] = (inst, data)
        if len(self.cache) > self.settings.cache_size:
            self.cache.popitem(last=False)

    # Loop -----------------------------------------------------------------------------

    def start(self) -> None:
        self._start(self._run(), "daggerflow-processor")

    async def wait_idle(self) -> None:
        await self._idle.wait()

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being processed."""
        return self._idle.is_set()

    @property
    def failed(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def _run(self) -> None:
        while True:
            if self.queue.empty():
                self._idle.set()
            items = [await self.queue.get()]
            interval = self.settings.commit_interval
            if interval > 0:
                # Let the batch fill up until ``interval`` after the previous batch began.
                await self.clock.sleep_until(self._last_commit + interval)
                self._last_commit = self.clock.now()
            while len(items) < self.settings.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            if self.committer is None:
                self.process(items)
            else:
                await self.process_async(items, self.committer)
                if self._stopping:
                    return

    async def stop(self, finish_commit: float = 0.0) -> None:
        """Stop the loop. ``finish_commit``: how long an asynchronous commit in flight may
        take to finish first, no new batch starting after it; past that, or with 0, it is
        cancelled (its transaction aborted).

        Why let it finish: after a broker restart the coordinator may have skipped the markers
        of the previous, committed transaction (docs/kafka-runtime-notes.md, section 7) while
        this one wrote to the same partitions. A partition then counts both as one open
        transaction, and any abort of this one (ours, or the next owner's fence) drops the
        committed one's records too, while its input offsets stay committed: workflows stuck.
        Committing it commits both. A partition handed over at a rebalance commits what it has
        in hand, as Kafka Streams does on revocation."""
        task = self._task
        if finish_commit > 0 and task is not None and not task.done() and self._committing:
            self._stopping = True
            await asyncio.wait({task}, timeout=finish_commit)
        await super().stop()
        # Nothing is processed any more: wake whoever waits for idleness (the Kafka fetch
        # loop's backpressure), which would otherwise wait on a stopped task for good.
        self._idle.set()

    def process(self, items: list[Item]) -> None:
        try:
            batch, after = self._prepare(items)
            obs = self.settings.observer
            began = time.perf_counter() if obs is not None else 0.0
            appended = self.store.commit(batch, self.clock.now())
            if obs is not None:
                obs.batch_committed(len(items), time.perf_counter() - began)
        except BaseException as exc:
            self._failed(items, exc)
            raise
        self._post_commit(batch, after, appended)

    async def process_async(self, items: list[Item], committer: Committer) -> None:
        """``process`` with an asynchronous commit. Readers see the previous committed
        state until it completes (the cache changes only afterwards); new inputs queue."""
        try:
            batch, after = self._prepare(items)
            obs = self.settings.observer
            began = time.perf_counter() if obs is not None else 0.0
            self._committing = True
            try:
                appended = await committer(batch, self.clock.now())
            finally:
                self._committing = False
            if obs is not None:
                obs.batch_committed(len(items), time.perf_counter() - began)
        except BaseException as exc:
            self._failed(items, exc)
            raise
        self._post_commit(batch, after, appended)

    def _prepare(self, items: list[Item]) -> tuple[WriteBatch, PostCommit]:
        refused: dict[str, TooLarge] = {}
        dropped: set[str] = set()
        while True:
            batch = WriteBatch()
            after = PostCommit()
            run = BatchApplier(self, batch, after, self.clock.now(), self.hooks.run_inline, refused,
                               frozenset(dropped))  # fmt: skip
            for item in items:
                run.handle(item)
            run.run_jobs_inline()
            try:
                run.finish()
            except Oversize as exc:
                # Nothing is written yet: prepare the batch again, refusing what grew these
                # instances (their task fails with the error), so that the rest commits and
                # the batch never fails its commit again and again. Second time too large:
                # the instance gets no event of this batch at all (still terminates: each
                # round drops at least one more instance, and dropped ones do not change).
                for iid, problem in exc.problems.items():
                    log.error("instance %r is over a size limit, its change is refused: %s", iid, problem)
                    if iid in refused:
                        dropped.add(iid)
                    refused[iid] = problem
                continue
            self.transitions += run.transitions
            return batch, after

    def _failed(self, items: list[Item], exc: BaseException) -> None:
        # The cache still holds the last committed states: nothing to undo.
        if isinstance(exc, Exception):
            error: Exception = exc
        else:  # cancelled mid-commit: the processor is stopping (or its partition moved)
            error = PartitionMoved("the processor stopped before this call was committed")
        for item in items:
            fut = item.future
            if fut is not None and not fut.done():
                fut.set_exception(error)
        if not isinstance(exc, asyncio.CancelledError):
            log.error("a batch failed; the processor stops", exc_info=exc)
            # Callers queued behind the batch would wait forever on a loop that is gone. A
            # fenced task's callers send again (its partition has a new owner); others not.
            queued: Exception = (
                PartitionMoved(f"the partition's task was fenced: {exc}") if isinstance(exc, TaskMigrated)
                else TaskInvalidState(f"the engine's processor stopped after an error: {exc!r}")
            )  # fmt: skip
            while not self.queue.empty():
                fut = self.queue.get_nowait().future
                if fut is not None and not fut.done():
                    fut.set_exception(queued)

    def _post_commit(self, batch: WriteBatch, after: PostCommit, appended: list[tuple[str, int]]) -> None:
        self.batches += 1
        for iid, changed in after.changed.items():
            if changed is None:
                self.cache.pop(iid, None)
            else:
                self._remember(changed, batch.encoded.get(iid))
        for fut, value in after.results:
            if not fut.done():
                fut.set_result(value)
        for fut, error in after.errors:
            if not fut.done():
                fut.set_exception(error)
        hooks = self.hooks
        for instance, key in after.timers_cancel:
            hooks.cancel_timer(instance, key)
        for instance, key, due in after.timers_set:
            hooks.set_timer(instance, key, due)
        for instance, node in after.cancels:
            hooks.cancel_job(instance, node)
        for job in after.jobs:
            hooks.run_job(job)
        hooks.committed(after, appended)
        if after.bulk_stepped:
            self._bulk_queued = False
        if after.bulk_more:
            self.schedule_bulk()
