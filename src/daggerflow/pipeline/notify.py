"""After a commit, on either runtime: log the lifecycle events it committed (``lifecycle``),
wake the callers waiting for an instance to reach a state, and hand the committed instances
to the update callbacks.

The processor calls the observer synchronously after each commit (``Hooks.committed``);
callbacks are user code, so they run in a task of their own and one that lags behind or
raises never holds up the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..model.instance import Instance
from .background import cancel_and_wait
from .batch import PostCommit
from .lifecycle import log_commit
from .observe import PipelineObserver

log = logging.getLogger(__name__)

Predicate = Callable[[Instance], bool]


class CommitObserver:
    def __init__(
        self,
        view: Callable[[Instance], Any],
        callbacks: Sequence[Callable[[Any], Awaitable[Any]]] = (),
        dead_letter_topic: str | None = None,
        telemetry: PipelineObserver | None = None,
    ) -> None:
        self._view = view
        self._telemetry = telemetry
        self._dead_letter_topic = dead_letter_topic
        self._callbacks = list(callbacks)
        self._waiters: dict[str, list[tuple[Predicate, asyncio.Future[Instance]]]] = {}
        self._updates: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._callbacks:
            self._updates = asyncio.Queue()
            self._task = asyncio.create_task(self._notify_updates(), name="daggerflow-updates")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._updates = None
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()

    async def wait(self, instance_id: str, check: Predicate, timeout: float | None) -> Instance:
        """The first committed state of ``instance_id`` that satisfies ``check``, from now on
        (the caller has checked the current state)."""
        fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(instance_id, []).append((check, fut))
        return await asyncio.wait_for(fut, timeout)

    def __call__(self, after: PostCommit, appended: list[tuple[str, int]]) -> None:
        changed, deleted = after.changed, after.deleted
        log_commit(changed, deleted, after.before, after.appends, self._dead_letter_topic)
        if self._telemetry is not None:
            self._telemetry.committed(changed, deleted, after.before, after.telemetry)
        for iid, inst in changed.items():
            if inst is None:
                inst = deleted.get(iid)  # waiters see the final state of a deleted instance
            if inst is None:
                continue
            waiters = self._waiters.get(iid)
            if waiters:
                remaining = []
                for check, fut in waiters:
                    if fut.done():
                        continue
                    if check(inst):
                        fut.set_result(inst)
                    else:
                        remaining.append((check, fut))
                if remaining:
                    self._waiters[iid] = remaining
                else:
                    del self._waiters[iid]
            if self._updates is not None:
                # Committed instances are never changed afterwards, so a callback that lags
                # behind still sees the state of this commit.
                self._updates.put_nowait(self._view(inst))

    async def _notify_updates(self) -> None:
        assert self._updates is not None
        while True:
            view = await self._updates.get()
            for callback in self._callbacks:
                try:
                    await callback(view)
                except Exception:
                    log.exception("task_update_callback %r failed", callback)
