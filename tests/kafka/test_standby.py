"""Standby replicas (runtime/standby.py) on a real broker: committed WriteBatches of a real
source store go, as changelog records, to a compacted two-partition topic in Kafka
transactions; StandbyReplicas tails them into real local stores, which end up equal to
the sources; aborted transactions are never applied; release() and set_partitions() close
the stores they drop, and a restore_from_topic into the released file then reads nothing
(the standby's checkpoint is past the trailing commit markers), or only what came later.
Needs ``tools/kafka/broker start``; skipped without a broker unless
DAGGERFLOW_REQUIRE_KAFKA=1, which makes it fail."""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daggerflow.kafka.restore import restore_from_topic
from daggerflow.model.instance import Correlation, Instance, Node
from daggerflow.store.base import PendingJob, Store, WriteBatch
from daggerflow.store.changelog import Record, batch_records
from daggerflow.store.factory import open_store

from ..changelog_support import dump

HAS_ROCKSDB = importlib.util.find_spec("rocksdict") is not None  # the rocksdb extra

aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.errors import for_code  # noqa: E402

from daggerflow.kafka.standby import StandbyReplicas  # noqa: E402

PARTITIONS = 2
KINDS = ["sqlite", pytest.param("rocksdb", marks=pytest.mark.skipif(not HAS_ROCKSDB, reason="no rocksdict"))]


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """A compacted changelog topic, created before any other client touches the name
    (a consumer's metadata request would auto-create it with the wrong shape)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}
        response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        for topic, code, *message in response.topic_errors:
            if code:  # create_topics() does not raise per-topic errors
                raise for_code(code)(f"create_topics({topic}): {message}")
    finally:
        await admin.close()


def inst(iid: str, status: str = "NOT_STARTED", at: float = 1.0) -> Instance:
    root = Node(id=iid, name="tpl", kind="workflow", status=status, time_created=1.0)
    return Instance(id=iid, template_name="tpl", template_version="1", nodes={iid: root}, lastupdated=at)


class Source:
    """The active side of one partition: a real store whose committed batches become
    changelog records produced to ``topic``/``partition``, one transaction per batch."""

    def __init__(self, store: Store, producer: AIOKafkaProducer, topic: str, partition: int) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.partition = partition
        self.records = 0

    async def commit(self, batch: WriteBatch, *, abort: bool = False) -> list[Record]:
        if not abort:
            self.store.commit(batch, time.time())
        records = batch_records(batch, time.time())
        await self.producer.begin_transaction()
        sent = [await self.producer.send(self.topic, v, key=k, partition=self.partition) for k, v in records]
        await asyncio.gather(*sent)
        if abort:
            await self.producer.abort_transaction()
        else:
            await self.producer.commit_transaction()
            self.records += len(records)
        return records


def first_batch(prefix: str, n: int) -> WriteBatch:
    batch = WriteBatch()
    for i in range(n):
        iid = f"{prefix}-{i}"
        batch.instances[iid] = inst(iid)
        batch.index_put.append((Correlation("orders", "order_id", iid), iid, "listen", False))
        batch.set_timer(iid, "timeout", 1000.0 + i)
    batch.jobs_put.append(PendingJob(f"{prefix}-0", "deliver", "job", 1, b"payload"))
    batch.positions[f"{prefix}-consumer"] = 7
    return batch


def second_batch(prefix: str, n: int) -> WriteBatch:
    """Completes half the instances, deletes one, ends their listeners, timers and the job."""
    batch = WriteBatch()
    for i in range(0, n, 2):
        iid = f"{prefix}-{i}"
        batch.instances[iid] = inst(iid, "COMPLETED", 2.0)
        batch.index_del.append((Correlation("orders", "order_id", iid), iid, "listen"))
        batch.cancel_timer(iid, "timeout")
    batch.instances[f"{prefix}-1"] = None
    batch.index_del.append((Correlation("orders", "order_id", f"{prefix}-1"), f"{prefix}-1", "listen"))
    batch.cancel_timer(f"{prefix}-1", "timeout")
    batch.jobs_del.append((f"{prefix}-0", "deliver", 1))
    batch.positions[f"{prefix}-consumer"] = 8
    return batch


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def until_end(consumer: AIOKafkaConsumer, tp: Any, end: int, timeout: float = 20.0) -> None:
    """Wait until the last stable offset of ``tp`` reaches ``end``."""
    deadline = time.monotonic() + timeout
    while (await consumer.end_offsets([tp]))[tp] < end:
        if time.monotonic() > deadline:
            raise AssertionError(f"{tp} did not reach end offset {end}")
        await asyncio.sleep(0.02)


def restore_consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )


class Rig:
    """A compacted changelog topic, a source store and a transactional producer per
    partition, a StandbyReplicas whose stores are files under ``tmp_path/standby``, and a
    restore consumer (the active side's, after a failover)."""

    def __init__(self, broker: str, tmp_path: Path, kind: str) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self.kind = kind
        self.topic = f"test-standby-{uuid.uuid4().hex[:8]}"
        self.opened: dict[int, list[Store]] = {}
        self.sources: list[Source] = []
        self.standby = StandbyReplicas(broker, self.topic, self.open_local, poll_ms=100)
        self.consumer = restore_consumer(broker)

    def url(self, name: str) -> str:
        path = self.tmp_path / name
        return f"sqlite:///{path}.db" if self.kind == "sqlite" else f"rocksdb:///{path}"

    def open(self, name: str) -> Store:
        return open_store(self.url(name), datadir=str(self.tmp_path), application_name="t")

    def open_local(self, p: int) -> Store:
        """The runtime's ``open_store(p)``: the file the active task of ``p`` uses."""
        store = self.open(f"standby/p{p:03d}")
        self.opened.setdefault(p, []).append(store)
        return store

    def caught_up(self, p: int) -> bool:
        """The standby store of ``p`` holds what its source holds."""
        return p in self.standby.partitions and dump(self.opened[p][-1]) == dump(self.sources[p].store)

    async def __aenter__(self) -> Rig:
        await create_topic(self.broker, self.topic, PARTITIONS)
        for p in range(PARTITIONS):
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker,
                transactional_id=f"standby-test-{uuid.uuid4().hex[:8]}-{p}",
                retry_backoff_ms=10,
                linger_ms=0,
            )
            await producer.start()
            self.sources.append(Source(self.open(f"source{p}"), producer, self.topic, p))
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.standby.stop()
        await self.consumer.stop()
        for source in self.sources:
            await source.producer.stop()
            source.store.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_standby_tails_changelog_and_hands_over(
    broker: str, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiokafka.producer.sender, "BACKOFF_OVERRIDE", 0.002)
    async with Rig(broker, tmp_path, kind) as rig:
        topic, sources, standby, consumer, opened = (
            rig.topic,
            rig.sources,
            rig.standby,
            rig.consumer,
            rig.opened,
        )
        url, caught_up = rig.url, rig.caught_up
        # Records written before the standby starts: it reads them from the beginning.
        for p in range(PARTITIONS):
            await sources[p].commit(first_batch(f"p{p}", 20))
        await standby.start()
        await standby.set_partitions({0, 1})
        assert standby.partitions == {0, 1}

        await until(lambda: caught_up(0) and caught_up(1), "the standbys to catch up")
        await until(lambda: standby.lag() == {0: 0, 1: 0}, "lag 0")

        # More records while it runs, and a zombie's aborted transaction that would delete
        # everything: the standby applies the first and never the second.
        zombie = WriteBatch(instances={f"p0-{i}": None for i in range(20)})
        await sources[0].commit(zombie, abort=True)
        await sources[0].commit(second_batch("p0", 20))
        await until(lambda: caught_up(0), "the second batch on partition 0")
        held = opened[0][-1]
        completed = held.get_instance("p0-2")
        assert completed is not None and completed.root.status == "COMPLETED"
        assert held.get_instance("p0-1") is None and held.get_instance("p0-3") is not None
        await until(lambda: standby.lag()[0] == 0, "lag 0 after the second batch")
        # Caught up and quiet: the checkpoint moves past the commit markers on its own.
        tp0 = aiokafka.TopicPartition(topic, 0)
        end0 = (await consumer.end_offsets([tp0]))[tp0]
        await until(lambda: held.changelog_checkpoint(0) == end0 - 1, "the checkpoint at the end")

        # Failover of partition 0 to this worker: release, then the active task opens the
        # same file (the lock is free) and restores; the standby had everything, markers
        # included, so the restore reads nothing.
        await standby.release(0)
        assert standby.partitions == {1}
        await standby.release(0)  # not held: a no-op
        active = open_store(url("standby/p000"), datadir=str(tmp_path), application_name="t")
        try:
            assert dump(active) == dump(sources[0].store)
            result = await restore_from_topic(active, consumer, topic, 0, timeout=30)
            assert result.records == 0 and result.start == result.end, result
        finally:
            active.close()

        # Partition 1 keeps being tailed after partition 0 left the assignment.
        await sources[1].commit(second_batch("p1", 20))
        await until(lambda: caught_up(1), "the second batch on partition 1")

        # A standby that is released while its partition moves on restores only the tail.
        await standby.release(1)
        tail = WriteBatch(instances={"p1-late": inst("p1-late")})
        tp1 = aiokafka.TopicPartition(topic, 1)
        before = (await consumer.end_offsets([tp1]))[tp1]
        tail_records = await sources[1].commit(tail)
        # commit_transaction() returns before the markers are written: until then the last
        # stable offset (what a restore reads up to) does not include the tail.
        await until_end(consumer, tp1, before + len(tail_records) + 1)
        active = open_store(url("standby/p001"), datadir=str(tmp_path), application_name="t")
        try:
            result = await restore_from_topic(active, consumer, topic, 1, timeout=30)
            assert result.records == len(tail_records) == 1, result
            assert dump(active) == dump(sources[1].store)
        finally:
            active.close()

        # Back to standby for both (resuming each from its checkpoint), then partition 1 is
        # no longer wanted: set_partitions closes its store.
        await standby.set_partitions({0, 1})
        assert standby.partitions == {0, 1}
        await sources[0].commit(WriteBatch(instances={"p0-late": inst("p0-late")}))
        await until(lambda: caught_up(0) and caught_up(1), "both standbys after the handover")
        await standby.set_partitions({0})
        assert standby.partitions == {0}
        reopened = open_store(url("standby/p001"), datadir=str(tmp_path), application_name="t")
        try:
            assert dump(reopened) == dump(sources[1].store)
            again = await restore_from_topic(reopened, consumer, topic, 1, timeout=30)
            assert again.records == 0 and again.start == again.end, again
        finally:
            reopened.close()

        await standby.stop()
        assert standby.partitions == frozenset()
        # stop() closed partition 0's store too.
        closed = open_store(url("standby/p000"), datadir=str(tmp_path), application_name="t")
        closed.close()


async def test_standby_survives_churn_while_the_changelog_grows(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set changes (release, re-add, drop) while both partitions are written to: every
    change reassigns the consumer under in-flight fetches. In the end each standby equals
    its source, and a restore after release reads no records."""
    monkeypatch.setattr(aiokafka.producer.sender, "BACKOFF_OVERRIDE", 0.002)
    async with Rig(broker, tmp_path, "sqlite") as rig:
        standby, sources = rig.standby, rig.sources
        await standby.start()
        await standby.set_partitions({0, 1})
        commits = 0
        changed = asyncio.Event()

        async def write() -> None:
            nonlocal commits
            for n in range(30):
                for p in range(PARTITIONS):
                    batch = WriteBatch()
                    for i in range(5):
                        iid = f"p{p}-{i}"
                        batch.instances[iid] = inst(iid, "RUNNING", float(n))
                        batch.set_timer(iid, "t", float(n))
                    if n % 7 == 3:
                        await sources[p].commit(WriteBatch(instances={f"p{p}-0": None}), abort=True)
                    await sources[p].commit(batch)
                commits += 1
                changed.set()

        churn = [
            lambda: standby.release(0),
            lambda: standby.set_partitions({0, 1}),
            lambda: standby.set_partitions({1}),
            lambda: standby.release(1),
            lambda: standby.set_partitions({0}),
            lambda: standby.set_partitions({0, 1}),
        ]
        writer = asyncio.create_task(write())
        steps = 0
        while not writer.done():
            # One change of the set per commit of the writer, in the middle of its tail.
            waiter = asyncio.ensure_future(changed.wait())
            await asyncio.wait({writer, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            changed.clear()
            await churn[steps % len(churn)]()
            steps += 1
        await writer
        assert commits == 30 and steps >= 20, steps
        await standby.set_partitions({0, 1})
        await until(lambda: rig.caught_up(0) and rig.caught_up(1), "both standbys after the churn")
        await until(lambda: standby.lag() == {0: 0, 1: 0}, "lag 0 after the churn")
        for p in range(PARTITIONS):
            await standby.release(p)
            active = rig.open(f"standby/p{p:03d}")
            try:
                result = await restore_from_topic(active, rig.consumer, rig.topic, p, timeout=30)
                assert result.records == 0, result
                assert dump(active) == dump(sources[p].store)
            finally:
                active.close()
