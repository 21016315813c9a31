"""start_eagerly: jobs run at once up to their first wait, then continue as tasks."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from daggerflow.pipeline.eager import gather_eagerly, start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outside")


async def test_a_job_that_never_waits_finishes_without_a_task() -> None:
    done: list[str] = []

    async def job() -> None:
        done.append("ran")

    assert start_eagerly(job()) is None
    assert done == ["ran"]  # already, before any await here


async def test_a_waiting_job_continues_as_a_task_and_keeps_its_context() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def job() -> None:
        VAR.set("inside")
        await gate.wait()
        seen.append(VAR.get())

    task = start_eagerly(job())
    assert task is not None and not task.done()
    assert VAR.get() == "outside"  # the job's context variable did not leak to the caller
    gate.set()
    await task
    assert seen == ["inside"]


async def test_results_and_exceptions_pass_through() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    task = start_eagerly(fails())
    assert task is not None
    with pytest.raises(ValueError, match="boom"):
        await task


@pytest.mark.parametrize("started", [True, False])
async def test_cancelling_the_task_cancels_the_job(started: bool) -> None:
    """Whether or not the continuing task has taken its first step yet."""
    cleaned: list[str] = []

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")

    task = start_eagerly(hangs())
    assert task is not None
    if started:
        await asyncio.wait({task}, timeout=0)  # one loop turn: the task steps and waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_gather_eagerly_keeps_order_and_only_waits_for_what_waits() -> None:
    gate = asyncio.Event()
    steps: list[str] = []

    async def quick(n: int) -> int:
        steps.append(f"quick{n}")
        return n

    async def slow(n: int) -> int:
        steps.append(f"slow{n}-start")
        await gate.wait()
        steps.append(f"slow{n}-end")
        return n

    gathering = asyncio.ensure_future(gather_eagerly([quick(1), slow(2), quick(3)]))
    await asyncio.sleep(0)  # the gather's first step: every coroutine ran up to its first wait
    assert steps == ["quick1", "slow2-start", "quick3"]
    gate.set()
    assert await gathering == [1, 2, 3]


async def test_gather_eagerly_propagates_the_first_error_and_cancels_the_rest() -> None:
    cleaned: list[str] = []

    async def hangs() -> int:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")
        return 0

    async def fails() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await gather_eagerly([hangs(), fails()])
    assert cleaned == ["finally"]
