"""The fetch loop's ordering barrier (``FetchLoop.handed_over``): an owner's own call waits
until the events other workers sent to its partition before are in the task's queue. A fake
consumer stands in for aiokafka's (its ``getmany`` and the position the loop reads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from daggerflow.kafka import codec, fetch
from daggerflow.kafka.admin import internal_topics
from daggerflow.kafka.fetch import FetchLoop
from daggerflow.kafka.guard import AssignmentGuard
from daggerflow.kafka.listeners import ListenerRouting
from daggerflow.kafka.records import ForwardEncoder
from daggerflow.machine.events import PatchParameters
from daggerflow.pipeline.items import InstanceEvent

TOPICS = internal_topics("app", 2)
TP = TopicPartition(TOPICS.events.name, 0)


class FakeConsumer:
    """``getmany`` returns the batches put in ``batches`` (else waits); the position of a
    partition moves past a batch's records as it is returned, as aiokafka's does."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[dict[TopicPartition, list[Any]]] = asyncio.Queue()
        self.positions: dict[TopicPartition, int] = {TP: 0}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        try:
            batch = await asyncio.wait_for(self.batches.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}
        for tp, records in batch.items():
            self.positions[tp] = records[-1].offset + 1
        return batch


class FakeTask:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.processor = SimpleNamespace(queue=SimpleNamespace(qsize=lambda: 0))

    def submit(self, item: Any) -> None:
        self.items.append(item)


def record(offset: int, n: int) -> Any:
    value = codec.encode(PatchParameters({"n": n}, None))
    return SimpleNamespace(offset=offset, key=b"i1", value=value, headers=(), timestamp=0)


Running = tuple[FetchLoop, FakeConsumer, FakeTask]


@pytest.fixture
async def loop_parts(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """A fetch loop running over the fake consumer, feeding one task (partition 0)."""
    consumer, task = FakeConsumer(), FakeTask()

    def state(c: FakeConsumer, tp: TopicPartition) -> Any:
        return SimpleNamespace(position=c.positions[tp], has_valid_position=True)

    monkeypatch.setattr(fetch, "partition_state", state)
    guard = AssignmentGuard()
    guard.activate(TP, 0)
    routing = ListenerRouting("app", TOPICS, 2, ForwardEncoder(TOPICS, 2))
    loop = FetchLoop(consumer, guard, lambda p: task if p == 0 else None, routing)
    runner = asyncio.create_task(loop.run())
    yield loop, consumer, task
    runner.cancel()


async def test_records_sent_before_are_handed_over_first(loop_parts: Running) -> None:
    loop, consumer, task = loop_parts
    waiting = asyncio.create_task(loop.handed_over(TP, 3))
    await asyncio.sleep(0)
    assert not waiting.done()  # offsets 0..2 not fetched yet
    consumer.batches.put_nowait({TP: [record(0, 0), record(1, 1)]})
    while len(task.items) < 2:  # (handed over, and the loop looked at the waiter before polling again)
        await asyncio.sleep(0)
    assert not waiting.done()  # offset 2 still missing
    consumer.batches.put_nowait({TP: [record(2, 2)]})
    await asyncio.wait_for(waiting, 1)
    # Released only after the loop handed offset 2 to the task: a call queued now is behind it.
    assert [i.event.changes["n"] for i in task.items if isinstance(i, InstanceEvent)] == [0, 1, 2]


async def test_nothing_sent_before_returns_at_once(loop_parts: Running) -> None:
    loop, consumer, task = loop_parts
    consumer.batches.put_nowait({TP: [record(0, 0)]})
    while not task.items:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the loop is back in getmany
    # Caught up, and the loop waits in getmany: no need to wait for its next round.
    waiting = asyncio.create_task(loop.handed_over(TP, 1))
    await asyncio.sleep(0)
    assert waiting.done()


async def test_a_waiter_whose_caller_gave_up_is_dropped(loop_parts: Running) -> None:
    loop, consumer, _task = loop_parts
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(loop.handed_over(TP, 5), 0.05)
    consumer.batches.put_nowait({TP: [record(0, 0)]})
    consumer.batches.put_nowait({TP: [record(1, 1)]})
    while consumer.positions[TP] < 2 or not consumer.batches.empty():
        await asyncio.sleep(0.005)
    assert loop._waiters == []  # the cancelled one is not kept
