"""Smoke test for the broker started by tools/kafka/broker (needs aiokafka).

    tools/kafka/broker start
    .venv/bin/python tools/kafka/smoke_test.py [BOOTSTRAP]

Checks: admin topic creation, plain produce/consume, auto-created topics,
a transactional producer (one committed and one aborted transaction) read
with isolation_level=read_committed, and a two-consumer group splitting the
partitions of a topic. Prints timings; exits non-zero on the first failure.
"""

import asyncio
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOT = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"


def step(name, t0):
    print(f"ok  {name:<48} {time.monotonic() - t0:6.2f}s", flush=True)


async def consume_all(topic, n, **kw):
    c = AIOKafkaConsumer(topic, bootstrap_servers=BOOT, auto_offset_reset="earliest", **kw)
    await c.start()
    got = []
    try:
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(m.value for m in msgs)
        # make sure nothing extra shows up
        extra = await c.getmany(timeout_ms=500)
        for msgs in extra.values():
            got.extend(m.value for m in msgs)
    finally:
        await c.stop()
    return got


async def main():
    sfx = uuid.uuid4().hex[:8]

    t0 = time.monotonic()
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await admin.start()
    topic = f"smoke-{sfx}"
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    assert topic in await admin.list_topics()
    await admin.close()
    step("admin create_topics", t0)

    t0 = time.monotonic()
    p = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all")
    await p.start()
    try:
        await p.send_and_wait(topic, b"hello", partition=0)
        await p.send_and_wait(f"auto-{sfx}", b"auto")  # auto.create.topics.enable
    finally:
        await p.stop()
    assert await consume_all(topic, 1) == [b"hello"]
    assert await consume_all(f"auto-{sfx}", 1) == [b"auto"]
    step("produce/consume (+ auto-created topic)", t0)

    t0 = time.monotonic()
    txt = f"txn-{sfx}"
    tp = AIOKafkaProducer(bootstrap_servers=BOOT, transactional_id=f"smoke-{sfx}")
    await tp.start()
    try:
        async with tp.transaction():
            await tp.send_and_wait(txt, b"committed-1", partition=0)
            await tp.send_and_wait(txt, b"committed-2", partition=0)
        await tp.begin_transaction()
        await tp.send_and_wait(txt, b"aborted", partition=0)
        await tp.abort_transaction()
        async with tp.transaction():
            await tp.send_and_wait(txt, b"committed-3", partition=0)
    finally:
        await tp.stop()
    step("transactional producer (commit, abort, commit)", t0)
    t0 = time.monotonic()
    rc = await consume_all(txt, 3, isolation_level="read_committed")
    assert rc == [b"committed-1", b"committed-2", b"committed-3"], rc
    ru = await consume_all(txt, 4, isolation_level="read_uncommitted")
    assert b"aborted" in ru, ru
    step("read_committed hides the aborted record", t0)

    t0 = time.monotonic()
    gt = f"group-{sfx}"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await admin.start()
    await admin.create_topics([NewTopic(gt, num_partitions=4, replication_factor=1)])
    await admin.close()
    consumers = [
        AIOKafkaConsumer(gt, bootstrap_servers=BOOT, group_id=f"g-{sfx}",
                         auto_offset_reset="earliest")
        for _ in range(2)
    ]
    for c in consumers:
        await c.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in consumers:
                await c.getmany(timeout_ms=200)
            sizes = [len(c.assignment()) for c in consumers]
            if sorted(sizes) == [2, 2]:
                break
        assert sorted(sizes) == [2, 2], sizes
    finally:
        for c in consumers:
            await c.stop()
    step("two-consumer group splits 4 partitions 2+2", t0)
    print("smoke test: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
