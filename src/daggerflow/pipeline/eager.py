"""Running coroutines eagerly: up to their first real wait, at once, without a task.

Most user code the pipeline runs never waits (a command task appends to its outbox and
returns, an agent only sends), so a task per call would cost a task, a scheduling round and
an event-loop turn for nothing. These helpers are Python 3.12's eager tasks, by hand for 3.11.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator, Iterable
from typing import Any, TypeVar


def start_eagerly(coro: Coroutine[Any, None, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` now, up to its first real wait, and return a task that continues it,
    or None if it finished (Python 3.12's eager tasks, by hand for 3.11).

    Most jobs never wait: a command task appends to its outbox and returns. Running them
    at once saves the task, the scheduling and an event-loop turn per job. The first step
    runs in a copy of the context, and the task continues in that same copy, so context
    variables set by the job (its outbox) never leak into the caller.
    """
    return _first_step(coro)[0]


T = TypeVar("T")


def _first_step(coro: Coroutine[Any, None, T]) -> tuple[asyncio.Task[T] | None, T | None]:
    """Run ``coro`` up to its first real wait in a copy of the context: (None, its result)
    if it finished, else (the task that continues it in that same context, None)."""
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration as done:
        return None, done.value
    task = asyncio.get_running_loop().create_task(_resume(coro, awaited), context=context)
    # A task cancelled before its first step never reaches ``coro``: close it then, so its
    # finally blocks (and the semaphore it holds) run now rather than at garbage collection.
    task.add_done_callback(lambda t: coro.close() if t.cancelled() else None)
    return task, None


async def gather_eagerly(coros: Iterable[Coroutine[Any, None, T]]) -> list[T]:
    """``asyncio.gather`` for coroutines that mostly finish without waiting (an agent that
    only sends): each runs at once, in its own context copy, up to its first real wait;
    only those that wait become tasks. Results in order; the first exception propagates
    (the other tasks are cancelled)."""
    results: list[Any] = []
    waiting: list[tuple[int, asyncio.Task[Any]]] = []
    try:
        for coro in coros:
            task, result = _first_step(coro)
            if task is not None:
                waiting.append((len(results), task))
            results.append(result)
        for index, task in waiting:
            results[index] = await task
    except BaseException as exc:
        for _, task in waiting:
            task.cancel()
        if waiting and not isinstance(exc, asyncio.CancelledError):
            await asyncio.wait([task for _, task in waiting])  # their finally blocks have run
        raise
    return results


async def _resume(coro: Coroutine[Any, None, T], awaited: Any) -> T:
    result: T = await _Continue(coro, awaited)
    return result


class _Continue:
    """Awaitable that drives an already started coroutine from where it stopped: it hands
    the awaited future to the task running it and passes results and exceptions back."""

    def __init__(self, coro: Coroutine[Any, None, Any], awaited: Any) -> None:
        self._coro = coro
        self._awaited = awaited

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._awaited
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # e.g. CancelledError from task.cancel()
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as done:
                    return done.value
