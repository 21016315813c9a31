"""The worker's long-lived loops, and which of them end the worker when they end.

A fatal loop only ends by failing, and it leaves a whole consumer group unread: better a
worker that exits and is restarted than one that looks alive and reads nothing. The other
loops recover by themselves (or are recovered by a watchdog), so they never end the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NamedTuple

from ..pipeline.background import cancel_and_wait, first_to_end


class LoopSpec(NamedTuple):
    fatal: bool
    started_by: str
    what: str


#: Every long-lived loop of a worker. The runtime starts (or adopts) the first four through
#: the ``Supervisor``; the others are started by their components, named here so that this
#: is the one list.
LOOPS: dict[str, LoopSpec] = {
    "fetch": LoopSpec(True, "KafkaRuntime", "the main group's poll phase (fetch.FetchLoop)"),
    "topic-loop": LoopSpec(True, "KafkaRuntime", "a listener router's or agent's group (topic_loop.TopicLoop)"),
    "job-runner": LoopSpec(True, "KafkaRuntime", "waits for the shared job runner to fail (pipeline.jobs.JobRunner)"),
    "standby-updater": LoopSpec(False, "ActiveTasks", "recomputes the standby replicas when the owners change"),
    "watchdog": LoopSpec(
        False, "ActiveTasks", "one per partition task: re-activates it when its processor fails"
    ),
    "processor": LoopSpec(False, "PartitionTask", "one per partition task; watched by its watchdog"),
    "timers": LoopSpec(False, "PartitionTask", "one per partition task: feeds due timers to the processor"),
    "standby-tail": LoopSpec(False, "StandbyReplicas", "tails the standby partitions' changelogs"),
    "hanging-reaper": LoopSpec(False, "HangingTransactions", "ends transactions a broker restart left open"),
    "owners-tail": LoopSpec(False, "OwnersView", "tails the owners topic"),
}


class Supervisor:
    """The loops the runtime started, by name; ``vital_task`` ends with the first fatal one."""

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._vital: asyncio.Task[None] | None = None

    def spawn(
        self, kind: str, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"daggerflow-{name or kind}")
        self.adopt(kind, task, name=name)
        return task

    def adopt(self, kind: str, task: asyncio.Task[None], *, name: str | None = None) -> None:
        """Supervise a loop a component started (``kind`` must be in ``LOOPS``)."""
        assert kind in LOOPS, kind
        key = name or kind
        self._tasks[key] = (kind, task)
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, done: asyncio.Task[None]) -> None:
        entry = self._tasks.get(key)
        if entry is not None and entry[1] is done and not LOOPS[entry[0]].fatal:
            del self._tasks[key]  # (a fatal one stays: vital_task must see it end)

    def get(self, name: str) -> asyncio.Task[None] | None:
        entry = self._tasks.get(name)
        return None if entry is None else entry[1]

    def tasks(self, kind: str) -> list[asyncio.Task[None]]:
        return [task for k, task in self._tasks.values() if k == kind]

    def vital_task(self) -> asyncio.Task[None]:
        """A task that ends when the first fatal loop ends, like it. With none (a client) it
        ends only when cancelled."""
        if self._vital is None or self._vital.done():
            fatal = [task for kind, task in self._tasks.values() if LOOPS[kind].fatal]
            if len(fatal) == 1:
                return fatal[0]
            coro = first_to_end(fatal) if fatal else asyncio.Event().wait()
            self._vital = asyncio.create_task(coro, name="daggerflow-vital")  # type: ignore[arg-type]
        return self._vital

    async def stop(self, name: str) -> None:
        entry = self._tasks.pop(name, None)
        if entry is not None:
            await cancel_and_wait(entry[1])

    async def stop_all(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)
        if self._vital is not None:
            await cancel_and_wait(self._vital)
            self._vital = None
