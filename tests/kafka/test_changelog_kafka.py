"""The store changelog on a real broker: a real engine workload's committed batches go to a
compacted topic, one Kafka transaction per batch; a fresh store restored from the topic with
a read_committed consumer equals the original (instances, listing indexes, correlation index,
timers, jobs, positions, dedupe ids, buffered messages). Needs ``tools/kafka/broker start``;
skipped without a broker unless DAGGERFLOW_REQUIRE_KAFKA=1, which makes it fail."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from daggerflow import Dagger, ManualClock
from daggerflow.kafka.restore import restore_from_topic
from daggerflow.store.changelog import Record
from daggerflow.store.factory import open_store

from ..changelog_support import Capture, OrderWorkload, dump, logical, workload_engine_options

try:
    import rocksdict
except ImportError:  # pragma: no cover - the rocksdb extra is part of the dev install
    rocksdict = None

aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: E402
from aiokafka.errors import for_code  # noqa: E402

WORKFLOWS = 300



async def create_changelog_topic(bootstrap: str, name: str) -> None:
    """A one-partition compacted topic (the changelog of one partition's store), created
    through the admin client before any other client touches the name."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}
        response = await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
        for topic, code, *message in response.topic_errors:
            if code:  # create_topics() does not raise per-topic errors
                raise for_code(code)(f"create_topics({topic}): {message}")
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        entries = {e[0]: e[1] for r in described for res in r.resources for e in res[4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


class TransactionalSink:
    """Produces each batch's records to partition 0 of ``topic`` in its own transaction,
    in commit order (a queue drained by one task)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.queue: asyncio.Queue[list[Record]] = asyncio.Queue()
        self.transactions = 0
        self.records = 0
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=f"changelog-test-{uuid.uuid4().hex[:8]}",
            retry_backoff_ms=10,
            linger_ms=0,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        self.task = asyncio.create_task(self._run())

    def put(self, records: list[Record]) -> None:
        self.queue.put_nowait(records)

    async def _run(self) -> None:
        while True:
            records = await self.queue.get()
            try:
                async with self.producer.transaction():
                    sent = [await self.producer.send(self.topic, v, key=k, partition=0) for k, v in records]
                    await asyncio.gather(*sent)
                self.transactions += 1
                self.records += len(records)
            finally:
                self.queue.task_done()

    async def drained(self, timeout: float = 60.0) -> None:
        join = asyncio.ensure_future(self.queue.join())
        assert self.task is not None
        done, _ = await asyncio.wait({join, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            join.cancel()
            self.task.result()  # the producer failed: raise its error
        assert join in done, "changelog producer did not catch up"

    async def aborted(self, records: list[Record]) -> None:
        """Send records in a transaction that is aborted: read_committed never sees them."""
        await self.producer.begin_transaction()
        sent = [await self.producer.send(self.topic, v, key=k, partition=0) for k, v in records]
        await asyncio.gather(*sent)
        await self.producer.abort_transaction()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.producer.stop()


def restore_consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )


async def test_engine_changelog_restores_from_kafka(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20 ms -> 2 ms after each commit (docs/kafka-runtime-notes.md §4): ~300 transactions.
    monkeypatch.setattr(aiokafka.producer.sender, "BACKOFF_OVERRIDE", 0.002)
    topic = f"test-changelog-{uuid.uuid4().hex[:8]}"
    await create_changelog_topic(broker, topic)
    sink = TransactionalSink(broker, topic)
    await sink.start()
    engine = Dagger(
        store=f"sqlite:///{tmp_path}/engine.db",
        web_port=None,
        clock=ManualClock(),
        **workload_engine_options(),
    )
    workload = OrderWorkload(engine, WORKFLOWS)
    try:
        async with engine:
            store = engine.runtime.store
            capture = Capture(store, sink=sink.put)
            await workload.run(capture)
            await sink.drained()
            commits = capture.commits
            expected_raw, expected = dump(store), logical(store, capture.probes)
            assert capture.commits == commits, "the engine was quiescent while its state was read"
            capture.sink = None  # the changelog ends here: what follows is not compared
            batches = len(capture.batches)
            # A transaction that aborts (a zombie's): it would delete every instance.
            first_keys = [k for batch in capture.batches for k, _ in batch if k[:1] == b"i"]
            await sink.aborted([(k, None) for k in first_keys])
            await workload.finish()
    finally:
        await sink.stop()

    assert sink.transactions == batches > WORKFLOWS
    assert expected["timers"] and expected["jobs"] and any(expected["index"].values())
    assert any(expected["buffered"].values()) and all(expected["seen"].values()) and expected["positions"]
    kinds = ["sqlite"] + (["rocksdb"] if rocksdict is not None else [])
    for kind in kinds:
        url = f"sqlite:///{tmp_path}/restored.db" if kind == "sqlite" else f"rocksdb:///{tmp_path}/restored"
        restored = open_store(url, datadir=str(tmp_path), application_name="t")
        consumer = restore_consumer(broker)
        await consumer.start()
        try:
            result = await restore_from_topic(restored, consumer, topic, 0, timeout=60)
            assert result.start == 0 and result.records == sink.records
            assert logical(restored, capture.probes) == expected
            if kind == "sqlite":
                assert dump(restored) == expected_raw
            # The checkpoint is the last record's offset: a second restore reads nothing.
            assert restored.changelog_checkpoint(0) is not None
            again = await restore_from_topic(restored, consumer, topic, 0, timeout=60)
            assert again.records == 0 and again.start == again.end
            print(
                f"\nrestore into {kind}: {result.records} changelog records "
                f"({sink.transactions} transactions) in {result.seconds * 1000:.0f} ms "
                f"= {result.rate:,.0f} records/s"
            )
        finally:
            await consumer.stop()
            restored.close()
