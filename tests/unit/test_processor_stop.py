"""Stopping a processor with a commit in flight (``Processor.stop(finish_commit=...)``): the
commit may finish within the bound and no batch starts after it; past the bound, or without
one, it is cancelled and its callers told the partition moved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daggerflow import ManualClock
from daggerflow.errors import PartitionMoved
from daggerflow.pipeline.items import Purge, Settings
from daggerflow.pipeline.processor import Processor
from daggerflow.store.base import WriteBatch
from daggerflow.store.factory import open_store


class HeldCommit:
    """A committer that signals it began and waits to be let through."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.began = asyncio.Event()
        self.release = asyncio.Event()
        self.commits = 0

    async def __call__(self, batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        self.began.set()
        await self.release.wait()
        self.commits += 1
        appended: list[tuple[str, int]] = self.store.commit(batch, ts)
        return appended


def started(tmp: Any) -> tuple[Processor, HeldCommit]:
    store = open_store("memory://", datadir=str(tmp), application_name="t")
    committer = HeldCommit(store)
    processor = Processor(store, ManualClock(1000.0), Settings(), committer=committer)
    processor.start()
    return processor, committer


def purge() -> tuple[Purge, asyncio.Future[Any]]:
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    return Purge(1000.0, 500.0, future=done), done


async def test_a_commit_in_flight_finishes_and_nothing_starts_after_it(tmp_path: Any) -> None:
    processor, committer = started(tmp_path)
    first, first_done = purge()
    second, second_done = purge()
    processor.submit(first)
    await committer.began.wait()
    processor.submit(second)  # queued behind the commit in flight
    stopping = asyncio.create_task(processor.stop(finish_commit=30.0))
    await asyncio.sleep(0)  # (let stop() see the commit in flight before it is let through)
    committer.release.set()
    await stopping
    assert first_done.result() == 0 and committer.commits == 1
    assert not second_done.done()  # never started: the next owner reads its input again
    assert processor.task is None


async def test_past_the_bound_the_commit_is_cancelled(tmp_path: Any) -> None:
    processor, committer = started(tmp_path)
    item, done = purge()
    processor.submit(item)
    await committer.began.wait()
    await processor.stop(finish_commit=0.01)
    assert committer.commits == 0
    with pytest.raises(PartitionMoved):
        done.result()


async def test_without_a_bound_the_commit_is_cancelled_at_once(tmp_path: Any) -> None:
    processor, committer = started(tmp_path)
    item, done = purge()
    processor.submit(item)
    await committer.began.wait()
    committer.release.set()  # it could finish now, but stop() does not wait for it
    await processor.stop()
    assert committer.commits == 0 and isinstance(done.exception(), PartitionMoved)


async def test_a_waiter_for_idleness_wakes_when_the_processor_stops(tmp_path: Any) -> None:
    """(The Kafka fetch loop waits for a task with a long queue to become idle: a task closed
    meanwhile must not hold the fetch loop, and every other partition, for good.)"""
    processor, committer = started(tmp_path)
    item, done = purge()
    processor.submit(item)
    await committer.began.wait()
    waiting = asyncio.create_task(processor.wait_idle())
    await processor.stop()
    await asyncio.wait_for(waiting, 5)
    assert isinstance(done.exception(), PartitionMoved)
