"""One durable timer service for triggers, intervals, deadlines, timeouts and retries.

Timers are persisted by the processor (in the same commit as the state that set them);
this service only keeps an in-memory heap of the committed ones and, when one is due,
sends ``TimerFired`` to the processor. It sleeps until the earliest due time, so timers
fire within milliseconds of it, and it is woken when an earlier timer is set.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from .background import Loop
from .clock import Clock

log = logging.getLogger(__name__)


class TimerService(Loop):
    def __init__(self, clock: Clock, fire: Callable[[str, str], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._heap: list[tuple[float, str, str]] = []
        self._due: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def set(self, instance: str, key: str, due: float) -> None:
        self._due[(instance, key)] = due
        heapq.heappush(self._heap, (due, instance, key))
        if self._heap[0][0] == due:
            self._wake.set()

    def cancel(self, instance: str, key: str) -> None:
        self._due.pop((instance, key), None)  # the heap entry is skipped lazily

    def next_due(self) -> float | None:
        """The due time of the earliest armed timer (None: none is armed)."""
        heap = self._heap
        while heap and self._due.get((heap[0][1], heap[0][2])) != heap[0][0]:
            heapq.heappop(heap)  # cancelled or re-armed: _run would skip it too
        return heap[0][0] if heap else None

    def start(self) -> None:
        self._start(self._run(), "daggerflow-timers")

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, instance, key = heapq.heappop(self._heap)
                if self._due.get((instance, key)) == due:
                    del self._due[(instance, key)]
                    self._fire(instance, key)
            if not self._heap:
                await self._wake.wait()
                continue
            sleeper = asyncio.ensure_future(self._clock.sleep_until(self._heap[0][0]))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
