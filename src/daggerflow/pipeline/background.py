"""Helpers for the runtime's long-lived asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background loop and wait until it has unwound.

    A loop that already failed is not raised again here: its failure was observed (and
    handled) by whoever watches it; stopping it must not fail too."""
    if task is None:
        return
    if task.done():
        if not task.cancelled():
            task.exception()  # mark it retrieved
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception:
            log.warning("%s failed while stopping", task.get_name(), exc_info=True)


class Loop:
    """A long-lived task of the pipeline (a processor, timers, a topic reader): started once,
    stopped by cancelling it and waiting until it has unwound."""

    _task: asyncio.Task[None] | None = None

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._task = asyncio.create_task(coro, name=name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running loop, while started: it ends only by failing (or being stopped)."""
        return self._task


async def first_to_end(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for the first of ``tasks`` to end, and end like it: its exception, or a
    ``RuntimeError`` naming it (the tasks given are meant to run until cancelled)."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            error.add_note(f"{task.get_name()} failed")  # which loop: for the worker's last words
            raise error
    raise RuntimeError(f"{sorted(t.get_name() for t in done)} ended")
