"""The main group's partition tasks on this worker (Kafka Streams' active tasks with their
state directory): what the ``TaskManager``'s activation hooks do for a stateful task, and
what watches it afterwards.

Activating task p, after the fence: close what an earlier epoch of p left open here, put p's
partitions on the hanging-transaction watch and end its previous owners' open transactions
(``close_previous``); take p's store over from the standby replicas, open it and restore it
from the changelog, publish this worker as p's owner, start the ``PartitionTask``
(``restore``). A watchdog re-activates a task whose processor failed.

The changelog, not the local file, is the source of truth: a store that cannot be opened or
read (``StoreError``, ``StateCorrupted``) is wiped and restored from the beginning of its
changelog (Kafka Streams' TaskCorruptedException), never retried as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import time
from typing import Any

from ..errors import ChangelogError, StoreError
from ..pipeline.background import cancel_and_wait
from ..pipeline.items import Settings
from ..pipeline.partition import PartitionTask
from ..pipeline.ports import RuntimeParts
from ..store.base import Store
from ..store.factory import open_store
from ..store.lockfile import LockFile, private_dirs
from . import codec
from .collector import CommitStats, GroupClients, PartitionCommitter
from .compat import stop_consumer
from .context import WorkerContext
from .guard import AssignmentGuard
from .hanging.watch import HangingWatch
from .owners import Owner, OwnersView, owner_record
from .restore import restore_from_topic
from .settings import groupless_consumer
from .standby import StandbyReplicas, standby_partitions
from .task_manager import TaskManager, activation_step

log = logging.getLogger("daggerflow.kafka")

#: Partitions restored at the same time (each restore holds a consumer).
RESTORE_CONSUMERS = 4


class ActiveTasks:
    def __init__(
        self, worker: WorkerContext, parts: RuntimeParts, group: GroupClients, guard: AssignmentGuard
    ) -> None:
        self.worker = worker
        self.config = worker.config
        self.topics = worker.topics
        self.context = parts.context
        self._settings = parts.settings
        self.group = group
        self.web_url: str | None = None
        self.tasks: dict[int, PartitionTask] = {}
        self.stats = CommitStats()
        self.manager = TaskManager(group.consumer, group.transactions, guard, name=worker.config.app,
                                   close_previous=self._close_previous, restore=self._restore,
                                   on_revoked=self._revoked)  # fmt: skip
        self.hanging: HangingWatch | None = None
        self.owners: OwnersView | None = None
        self.standby: StandbyReplicas | None = None
        # Restore consumers: a restore assigns its consumer one partition, so concurrent
        # activations (a failover moves several partitions at once) each take one.
        self._restore_pool: asyncio.Queue[Any] = asyncio.Queue()
        self._restore_consumers: list[Any] = []
        self._standby_lock = asyncio.Lock()
        self._standby_dirty = asyncio.Event()

    async def start(self, owners: OwnersView, hanging: HangingWatch, web_url: str | None) -> None:
        self.owners, self.hanging, self.web_url = owners, hanging, web_url
        cfg = self.config
        for _ in range(RESTORE_CONSUMERS):
            restorer = groupless_consumer(cfg.connection, fetch_max_wait_ms=100,
                                          max_partition_fetch_bytes=4 * 1024 * 1024)  # fmt: skip
            await restorer.start()
            self._restore_consumers.append(restorer)
            self._restore_pool.put_nowait(restorer)
        if cfg.standbys > 0:
            self.standby = StandbyReplicas(cfg.connection, self.topics.changelog.name, self.open_store)
            await self.standby.start()
            owners.on_change(lambda _owners: self._standby_dirty.set())
            self.worker.supervisor.spawn("standby-updater", self._update_standbys())

    async def stop(self, timeout: float) -> None:
        """Stop the standbys, let the tasks commit what they hold (within ``timeout``), then
        leave the group and close every task and the restore consumers."""
        await self.worker.supervisor.stop("standby-updater")
        if self.standby is not None:
            await self.standby.stop()
        for task in self.tasks.values():
            task.processor.pause_bulk()  # bulk jobs resume at the partitions' next activation
        idle = [asyncio.create_task(t.processor.wait_idle()) for t in self.tasks.values() if t.failed is None]
        if idle:
            _, late = await asyncio.wait(idle, timeout=timeout)
            for waiter in late:
                waiter.cancel()
            if late:
                log.warning("%d partition tasks still busy after %.0f s; their inputs are read again by "
                            "the next owner", len(late), timeout)  # fmt: skip
        await self.manager.close()  # no activation may start (or retry) from here on
        await stop_consumer(self.group.consumer)  # its revocation closes the tasks...
        for p in list(self.tasks):  # ...or else this does
            await self._close(p)
        for watchdog in self.worker.supervisor.tasks("watchdog"):
            await cancel_and_wait(watchdog)
        await self.group.transactions.close()
        for restorer in self._restore_consumers:
            await stop_consumer(restorer)
        self._restore_consumers.clear()

    # Lookups -------------------------------------------------------------------------------

    def task(self, p: int) -> PartitionTask | None:
        """Task p if this worker holds it now (not being closed or re-activated)."""
        task = self.tasks.get(p)
        return None if task is None or task.closed else task

    def running(self) -> list[PartitionTask]:
        return [t for t in self.tasks.values() if not t.closed]

    # Stores --------------------------------------------------------------------------------

    def store_path(self, p: int) -> str:
        base = os.path.join(self.config.datadir, self.config.app)
        private_dirs(base)
        suffix = "rocks" if self.config.store_kind == "rocksdb" else "db"
        return os.path.join(base, f"p{p:03d}.{suffix}")

    def open_store(self, p: int) -> Store:
        url = f"{self.config.store_kind}:///{os.path.abspath(self.store_path(p))}"
        store = open_store(url, datadir=self.config.datadir, application_name=self.config.app,
                           durability=self.config.durability)  # fmt: skip
        # p's correlation index holds the entries p owns, of instances anywhere: a search by
        # waiting listener reads p's running instances instead.
        store.local_correlations = False
        return store

    async def _open_restored(self, p: int) -> Store:
        """p's store, restored to the end of its changelog; wiped and restored from the
        beginning if the local copy is unusable."""
        try:
            return await self._open_and_restore(p)
        except ChangelogError:
            raise  # the changelog itself cannot be read: a fresh restore would fail alike
        except StoreError as exc:
            path = self.store_path(p)
            log.warning("task %d: the local store %s is unusable (%s): wiping it and restoring it from the "
                        "changelog", p, path, exc)  # fmt: skip
            wipe_store(path)
            return await self._open_and_restore(p)

    async def _open_and_restore(self, p: int) -> Store:
        store = self.open_store(p)
        try:
            restorer = await self._restore_pool.get()
            try:
                await restore_from_topic(store, restorer, self.topics.changelog.name, p)
            finally:
                self._restore_pool.put_nowait(restorer)
        except BaseException:
            store.close()
            raise
        return store

    # Activation hooks --------------------------------------------------------------------

    async def _close_previous(self, p: int) -> None:
        await self._close(p)
        if self.hanging is not None:
            await self.hanging.watch(p)  # before the restore, which reads the changelog up to its LSO
            await self.hanging.end_fenced(self.group.transactions, self.config.app, p)

    async def _restore(self, p: int) -> None:
        async with self._standby_lock:  # no standby update in between
            if self.standby is not None:
                await self.standby.release(p)  # its store file is ours now, warm
        store = await self._open_restored(p)
        try:
            known = self.owners.owner(p) if self.owners is not None else None
            if known is None or known.worker != self.worker.worker_id or known.url != self.web_url:
                # A transaction on the broker: bounded like the fence, so a commit that never
                # ends is a logged, retried activation, not a partition paused in silence.
                async with activation_step("publishing this worker as the owner", p):
                    await self._publish_owner(p, self.group.transactions[p])
        except BaseException:
            store.close()
            raise
        self._start_task(p, store)

    async def _publish_owner(self, p: int, producer: Any) -> None:
        """Publish this worker as p's owner with p's fenced producer (a zombie cannot
        overwrite it). Skipped by the caller when the owners topic already says so."""
        await producer.begin()
        key, value = owner_record(Owner(p, self.web_url, self.worker.worker_id, time.time()))
        await producer.send(self.worker.owners_topic, value, key=key)
        await producer.commit()

    def _start_task(self, p: int, store: Store) -> None:
        committer = PartitionCommitter(self.worker.collector, self.group, p, store, self.topics.changelog.name,
                                       self.worker.forwards, self.stats)  # fmt: skip
        task = PartitionTask(p, store, self._task_settings(p), self.context, committer)
        self.tasks[p] = task  # before it starts: a resumed job may report at once
        task.start()
        self.worker.supervisor.spawn("watchdog", self._watch(p, task), name=f"watch-{p}")

    def _task_settings(self, p: int) -> Settings:
        n = self.config.partitions
        return dataclasses.replace(
            self._settings,
            partition=p,
            owns_instance=lambda iid: codec.partition_for(iid, n) == p,
            owns_correlation=lambda at: codec.partition_of_correlation(at, n) == p,
        )

    async def _revoked(self, partitions: frozenset[int]) -> None:
        for p in sorted(partitions):
            if self.hanging is not None:
                self.hanging.unwatch(p)
            await self._close(p)
        self._standby_dirty.set()  # a revoked partition may now be one to keep warm

    async def _close(self, p: int) -> None:
        task = self.tasks.pop(p, None)
        if task is None:
            return
        n = self.config.partitions
        self.context.jobs.cancel_where(lambda iid: codec.partition_for(iid, n) == p)
        await task.close()

    # Watching ------------------------------------------------------------------------------

    async def _watch(self, p: int, task: PartitionTask) -> None:
        """A task whose commit failed is closed as a zombie and activated again (fence,
        restore, committed offsets): its uncommitted inputs are read again."""
        processing = task.processor.task
        assert processing is not None
        try:
            await asyncio.shield(processing)
        except asyncio.CancelledError:
            if not processing.done():
                raise  # this watchdog was cancelled (shutdown), not the processor
        except Exception:
            pass  # the processor failed: handled below
        if task.closed or self.tasks.get(p) is not task:
            return
        log.warning("task %d stopped (%r): re-activating it", p, task.failed)
        try:
            await self._close(p)
        except Exception:
            log.exception("closing task %d failed; re-activating it anyway", p)
        await self.manager.handle_migrated(p)

    async def _update_standbys(self) -> None:
        """Keep standby replicas of the partitions ``standby_partitions`` gives this worker
        (recomputed whenever the owners change), never of one it owns or is activating."""
        assert self.standby is not None and self.owners is not None
        while True:
            await self._standby_dirty.wait()
            self._standby_dirty.clear()
            owners = {p: o.worker for p, o in self.owners.owners().items()}
            async with self._standby_lock:  # an activation cannot take a store over in between
                wanted = standby_partitions(owners, self.worker.worker_id, self.config.standbys)
                wanted -= set(self.tasks) | self.manager.owned
                try:
                    await self.standby.set_partitions(wanted)
                except Exception:
                    log.warning(
                        "updating standby replicas failed; retrying at the next change", exc_info=True
                    )
            if wanted:
                log.info("standby replicas: %s (lag %s)", sorted(wanted), self.standby.lag())


def wipe_store(path: str) -> None:
    """Delete a partition's local store (the SQLite file with its ``-wal``/``-shm``, or the
    RocksDB directory), holding its lock: a store another worker has open is not touched
    (``StoreError``)."""
    lock = LockFile(path)
    lock.acquire(path)
    try:
        if os.path.isdir(path):
            shutil.rmtree(path)
        for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
    finally:
        lock.release()
