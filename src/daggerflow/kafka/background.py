"""Stopping a background consumer: a task tailing partitions with a consumer of its own
(``OwnersView``, ``StandbyReplicas``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from .compat import stop_consumer


async def stop_tail(
    task: asyncio.Task[None] | None,
    consumer: Any,
    *,
    release: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Cancel the tail ``task`` and wait for it, then ``release()`` what it worked on (if given:
    nothing polls any more, and the consumer still exists), then stop ``consumer`` (if any).

    The consumer is stopped as it is, not unassigned first: taking the assignment away under
    in-flight fetches is what makes aiokafka 0.14's ``stop()`` hang (see ``stop_consumer``)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if release is not None:
        await release()
    if consumer is not None:
        await stop_consumer(consumer)
