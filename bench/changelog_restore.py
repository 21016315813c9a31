"""Changelog restore rate (issue #3): restore N instance records from a compacted changelog
topic on the broker into a fresh SQLite store and a fresh RocksDB store.

    tools/kafka/broker start
    .venv/bin/python bench/changelog_restore.py                       # 100,000 records
    .venv/bin/python bench/changelog_restore.py --records 20000 --stores sqlite

Setup: a fresh one-partition topic (``cleanup.policy=compact``). N pizza instances (the
README's workflow, ``daggerflow.demo.pizza``, with the order listener EXECUTING: a waiting
instance, its node tree and runtime parameters) become changelog records through
``daggerflow.store.changelog.batch_records``, written by a transactional producer that
commits every ``--txn`` records (as the runtime writes its changelog: the log holds commit
markers between the batches).

Measured, per store: ``restore_from_topic`` with a group-less ``read_committed`` consumer,
from ``end_offsets()`` to the last record applied through ``Store.commit`` (``--chunk``
records per commit, each also writing the checkpoint). The "read only" line is the same
consumer loop without applying anything: the broker and client part of the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from typing import Any

import aiokafka.producer.sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from daggerflow import Dagger
from daggerflow.demo.pizza import register_pizza_workflow
from daggerflow.kafka.restore import restore_from_topic
from daggerflow.model.instance import Instance
from daggerflow.model.template import instantiate
from daggerflow.store.base import WriteBatch
from daggerflow.store.changelog import batch_records
from daggerflow.store.factory import open_store


def pizza_instances(n: int) -> list[Instance]:
    """``n`` pizza instances waiting on their READY listener."""
    engine = Dagger(web_port=None)

    async def deliver(_: Any) -> None:
        return None

    spec = register_pizza_workflow(engine, deliver=deliver).spec  # type: ignore[attr-defined]
    now = time.time()
    out = []
    for i in range(n):
        inst = instantiate(
            spec,
            f"order-{i:08d}",
            {"order_id": f"O-{i:08d}", "customer_id": f"C-{i % 1000:04d}", "pizza_type": "margherita"},
            now=now + i * 1e-4,
        )
        for node in inst.nodes.values():
            if node.kind == "workflow" or node.name.endswith((".Order", "_command_task")):
                node.status = "COMPLETED" if node.name.endswith("_command_task") else "EXECUTING"
            elif node.name.endswith("_listener_task"):
                node.status = "EXECUTING"
        out.append(inst)
    return out


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000", "segment.ms": "3600000"}
        response = await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
        for name, code, *message in response.topic_errors:
            if code:
                raise for_code(code)(f"create_topics({name}): {message}")
    finally:
        await admin.close()


async def write(
    bootstrap: str, topic: str, instances: list[Instance], per_txn: int
) -> tuple[int, int, float]:
    """Produce the instances' changelog records; return (records, value bytes, seconds)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"bench-changelog-{uuid.uuid4().hex[:8]}",
        retry_backoff_ms=10,
        linger_ms=5,
        max_batch_size=1 << 20,
    )
    await producer.start()
    records = size = 0
    t0 = time.perf_counter()
    try:
        for start in range(0, len(instances), per_txn):
            batch = WriteBatch(instances={i.id: i for i in instances[start : start + per_txn]})
            recs = batch_records(batch, 0.0)
            async with producer.transaction():
                sent = [await producer.send(topic, v, key=k, partition=0) for k, v in recs]
                await asyncio.gather(*sent)
            records += len(recs)
            size += sum(len(v or b"") for _, v in recs)
    finally:
        await producer.stop()
    return records, size, time.perf_counter() - t0


def consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )


async def read_only(bootstrap: str, topic: str, chunk: int) -> tuple[int, float]:
    c = consumer(bootstrap)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        t0 = time.perf_counter()
        end = (await c.end_offsets([tp]))[tp]
        c.assign([tp])
        c.seek(tp, 0)
        n = 0
        while await c.position(tp) < end:
            fetched = await c.getmany(tp, timeout_ms=100, max_records=chunk)
            n += len(fetched.get(tp, ()))
        return n, time.perf_counter() - t0
    finally:
        await c.stop()


async def restore(bootstrap: str, topic: str, kind: str, chunk: int, expected: Instance) -> tuple[int, float]:
    directory = tempfile.mkdtemp(prefix="changelog-restore-")
    url = f"sqlite:///{directory}/state.db" if kind == "sqlite" else f"rocksdb:///{directory}/state"
    store = open_store(url, datadir=directory, application_name="bench")
    c = consumer(bootstrap)
    await c.start()
    try:
        result = await restore_from_topic(store, c, topic, 0, chunk=chunk)
        count = store.count_instances(status=None, template=None)
        if count != result.records or store.get_instance(expected.id) != expected:
            raise SystemExit(
                f"{kind}: restored {count} instances from {result.records} records, or a wrong one"
            )
        return result.records, result.seconds
    finally:
        await c.stop()
        store.close()
        shutil.rmtree(directory, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--txn", type=int, default=1000, help="records per producer transaction")
    parser.add_argument("--chunk", type=int, default=10_000, help="records per restore commit")
    parser.add_argument("--stores", default="sqlite,rocksdb")
    args = parser.parse_args()
    aiokafka.producer.sender.BACKOFF_OVERRIDE = 0.002  # docs/kafka-runtime-notes.md §4

    instances = pizza_instances(args.records)
    topic = f"bench-changelog-{uuid.uuid4().hex[:8]}"
    await create_topic(args.bootstrap, topic)
    n, size, seconds = await write(args.bootstrap, topic, instances, args.txn)
    print(f"topic {topic}: {n:,} instance records, {size / n:.0f} B per value on average")
    print(f"  write (transactional, {args.txn} per txn): {n / seconds:,.0f} records/s ({seconds:.2f} s)")
    got, seconds = await read_only(args.bootstrap, topic, args.chunk)
    print(f"  read only (no store):          {got / seconds:,.0f} records/s ({seconds:.2f} s)")
    for kind in args.stores.split(","):
        got, seconds = await restore(args.bootstrap, topic, kind, args.chunk, instances[-1])
        print(
            f"  restore into {kind + ':':8}        {got / seconds:,.0f} records/s ({got:,} in {seconds:.2f} s)"
        )


if __name__ == "__main__":
    asyncio.run(main())
