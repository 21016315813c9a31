"""Experiment 6: creating the runtime's topics with AIOKafkaAdminClient, and auto-creation.

  .venv/bin/python bench/kafka_spike/admin.py [--bootstrap 127.0.0.1:9092]

broker     broker settings that matter (session timeout bounds, transaction timeouts...).
create     a 12-partition compacted changelog (cleanup.policy=compact,
           min.compaction.lag.ms, segment.ms, min.cleanable.dirty.ratio): the response,
           the configs read back with describe_configs (value + source), the time until all
           12 partitions have a leader and accept a produce.
again      create_topics() for an existing topic, and with an invalid config: is anything
           raised, or is the error only in the response?
autocreate which client calls auto-create a topic on a broker with
           auto.create.topics.enable=true (producer send, producer partitions_for, consumer
           subscribe, consumer assign+end_offsets, admin describe_topics), and what a later
           create_topics() of the same name with 12 partitions/compact then does.
compaction does the log cleaner actually compact a transactional changelog on this broker
           (segment.ms=2000, min.compaction.lag.ms=0), aborted records included?
           (~20-40 s: the cleaner wakes up every log.cleaner.backoff.ms = 15 s)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code
from common import base_parser, drain, suffix

CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "60000",
    "segment.ms": "3600000",
    "min.cleanable.dirty.ratio": "0.1",
}


def errors_of(resp: Any) -> list[str]:
    """Per-topic errors of a CreateTopicsResponse as 'topic: ErrorClass (message)'."""
    out = []
    for t in resp.topic_errors:
        name, code = t[0], t[1]
        msg = t[2] if len(t) > 2 else ""
        out.append(f"{name}: {for_code(code).__name__ if code else 'ok'}" + (f" ({msg})" if msg else ""))
    return out


async def topic_shape(admin: AIOKafkaAdminClient, topic: str) -> str:
    desc = await admin.describe_topics([topic])
    parts = len(desc[0]["partitions"]) if desc and desc[0]["error_code"] == 0 else None
    cfg = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})]
    )
    policy = [e for e in cfg[0].resources[0][4] if e[0] == "cleanup.policy"]
    return f"partitions={parts} cleanup.policy={policy[0][1] if policy else '?'}"


async def exists(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()  # list_topics() asks for all topics: never auto-creates


BROKER_KEYS = [
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "group.coordinator.rebalance.protocols",
    "transaction.max.timeout.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "transactional.id.expiration.ms",
    "transaction.partition.verification.enable",
    "producer.id.expiration.ms",
    "auto.create.topics.enable",
    "num.partitions",
    "log.cleaner.backoff.ms",
    "offsets.retention.minutes",
]


async def scenario_broker(admin: AIOKafkaAdminClient) -> None:
    print("broker: settings the runtime depends on (describe_configs on broker 1)")
    cfg = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1", dict.fromkeys(BROKER_KEYS))]
    )
    for e in sorted(cfg[0].resources[0][4]):
        print(f"    {e[0]} = {e[1]}")


async def scenario_create(bootstrap: str, admin: AIOKafkaAdminClient) -> None:
    topic = f"changelog-{suffix()}"
    print(f"create: {topic}, 12 partitions, {CHANGELOG_CONFIG}")
    t0 = time.perf_counter()
    resp = await admin.create_topics([NewTopic(topic, 12, 1, topic_configs=CHANGELOG_CONFIG)])
    t_create = time.perf_counter() - t0
    print(f"  create_topics() returned {type(resp).__name__} in {t_create * 1000:.0f} ms: {errors_of(resp)}")
    cfg = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    # resources: (error_code, error_message, resource_type, resource_name, config_entries)
    entries = {e[0]: e for e in cfg[0].resources[0][4]}
    # DescribeConfigs v1+ entry: (name, value, read_only, config_source, is_sensitive, synonyms)
    sources = {1: "topic config", 4: "static broker config", 5: "default"}
    for k in [
        *CHANGELOG_CONFIG,
        "retention.ms",
        "max.compaction.lag.ms",
        "segment.bytes",
        "delete.retention.ms",
    ]:
        e = entries.get(k)
        if e is not None:
            print(f"    {k} = {e[1]}  (source: {sources.get(e[3], e[3])})")
    # time until every partition accepts a produce
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", retry_backoff_ms=20)
    await p.start()
    t1 = time.perf_counter()
    await asyncio.gather(*(p.send_and_wait(topic, b"v", key=b"k", partition=i) for i in range(12)))
    print(
        f"  all 12 partitions accepted a produce {(time.perf_counter() - t1) * 1000:.0f} ms after create_topics() returned"
    )
    await p.stop()


async def scenario_again(admin: AIOKafkaAdminClient) -> None:
    topic = f"again-{suffix()}"
    print("again: create twice, and with an invalid config")
    await admin.create_topics([NewTopic(topic, 12, 1, topic_configs=CHANGELOG_CONFIG)])
    for label, nt in [
        ("second create_topics()", NewTopic(topic, 12, 1, topic_configs=CHANGELOG_CONFIG)),
        (
            "cleanup.policy=bogus",
            NewTopic(f"bad-{suffix()}", 12, 1, topic_configs={"cleanup.policy": "bogus"}),
        ),
        ("replication_factor=3 on 1 broker", NewTopic(f"bad-{suffix()}", 12, 3)),
    ]:
        try:
            resp = await admin.create_topics([nt])
            print(f"  {label:<34} no exception; response: {errors_of(resp)}")
        except Exception as exc:
            print(f"  {label:<34} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")


async def scenario_autocreate(bootstrap: str, admin: AIOKafkaAdminClient) -> None:
    print("autocreate: which calls create a missing topic (broker num.partitions=3, cleanup.policy=delete)?")

    async def producer_send(t: str) -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            await p.send_and_wait(t, b"x")
        finally:
            await p.stop()

    async def producer_partitions_for(t: str) -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            await asyncio.wait_for(p.partitions_for(t), 5)
        finally:
            await p.stop()

    async def consumer_subscribe(t: str) -> None:
        c = AIOKafkaConsumer(t, bootstrap_servers=bootstrap, group_id=f"g-{suffix()}")
        await c.start()
        try:
            await c.getmany(timeout_ms=2000)
        finally:
            await c.stop()

    async def consumer_assign_end_offsets(t: str) -> None:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await c.start()
        try:
            tp = TopicPartition(t, 0)
            c.assign([tp])
            await asyncio.wait_for(c.end_offsets([tp]), 5)
        finally:
            await c.stop()

    async def admin_describe_topics(t: str) -> None:
        await admin.describe_topics([t])

    calls = {
        "producer.send_and_wait()": producer_send,
        "producer.partitions_for()": producer_partitions_for,
        "consumer subscribe + getmany()": consumer_subscribe,
        "consumer assign + end_offsets()": consumer_assign_end_offsets,
        "admin.describe_topics()": admin_describe_topics,
    }
    for label, fn in calls.items():
        t = f"auto-{suffix()}"
        outcome = "ok"
        try:
            await fn(t)
        except Exception as exc:
            outcome = f"raised {type(exc).__name__}"
        await asyncio.sleep(0.5)
        created = await exists(admin, t)
        shape = await topic_shape(admin, t) if created else ""
        print(f"  {label:<34} {outcome:<24} auto-created: {created} {shape}")

    t = f"race-{suffix()}"
    await producer_send(t)
    resp = await admin.create_topics([NewTopic(t, 12, 1, topic_configs=CHANGELOG_CONFIG)])
    print(f"  a client touched {t} first, then create_topics(12, compact): {errors_of(resp)}")
    print(f"    the topic is now {await topic_shape(admin, t)}  <- wrong shape, silently")


async def scenario_compaction(bootstrap: str, admin: AIOKafkaAdminClient) -> None:
    topic = f"compact-{suffix()}"
    cfg = {"cleanup.policy": "compact", "segment.ms": "2000", "min.compaction.lag.ms": "0",
           "min.cleanable.dirty.ratio": "0.01"}  # fmt: skip
    print(f"compaction: 1000 keys x 10 committed versions + 1 aborted transaction, {cfg}")
    await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=cfg)])
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"compact-{topic}", retry_backoff_ms=10
    )
    await p.start()
    for version in range(10):
        async with p.transaction():
            for k in range(1000):
                await p.send(topic, b"v%d" % version, key=b"k%04d" % k, partition=0)
    await p.begin_transaction()
    for k in range(1000):
        await p.send(topic, b"aborted", key=b"k%04d" % k, partition=0)
    await p.flush()
    await p.abort_transaction()
    await asyncio.sleep(2.5)
    async with p.transaction():  # a later record rolls the segment (segment.ms only applies on append)
        await p.send(topic, b"roll", key=b"roll", partition=0)
    await p.stop()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 60:
        raw = await drain(bootstrap, topic, isolation_level="read_uncommitted", idle_ms=300)
        if len(raw) < 5000:
            break
        await asyncio.sleep(3)
    committed = await drain(bootstrap, topic, idle_ms=300)
    latest = {r.key: r.value for r in committed}
    ok = all(v == b"v9" for k, v in latest.items() if k != b"roll")
    print(f"  after {time.perf_counter() - t0:.0f}s: {len(raw)} records left in the log (was 12001 incl. aborted); "
          f"read_committed sees {len(committed)}; latest value per key is the last committed: {ok}")  # fmt: skip


async def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--skip-compaction", action="store_true", help="skip the ~20 s log-cleaner check")
    args = parser.parse_args()
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        await scenario_broker(admin)
        await scenario_create(args.bootstrap, admin)
        await scenario_again(admin)
        await scenario_autocreate(args.bootstrap, admin)
        if not args.skip_compaction:
            await scenario_compaction(args.bootstrap, admin)
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
