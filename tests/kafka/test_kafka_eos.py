"""daggerflow.kafka against a real broker: topic admin, fencing as TaskMigrated, and a
consume-transform-produce loop that stays exactly-once across SIGKILLs of its worker process.

Skipped when no broker answers at KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), failed
instead when DAGGERFLOW_REQUIRE_KAFKA=1. Every test uses fresh topic, group and app names.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from daggerflow.errors import ConfigurationError, TaskMigrated
from daggerflow.kafka.admin import TopicSpec, ensure_application_topics, ensure_topics, internal_topics
from daggerflow.kafka.transactions import PartitionTransactions

WORKER = Path(__file__).resolve().parent / "eos_worker.py"

pytestmark = pytest.mark.timeout(120)



def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def drain(
    bootstrap: str, topic: str, partitions: int, isolation_level: str = "read_committed"
) -> list[Any]:
    """Every record of ``topic`` (no group), reading until each partition's position reaches its end
    (the last stable offset under read_committed: control records included)."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await c.end_offsets(tps)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[Any] = []
        async with asyncio.timeout(30):
            while True:
                for recs in (await c.getmany(timeout_ms=200)).values():
                    out.extend(recs)
                if all([await c.position(tp) >= ends[tp] for tp in tps]):
                    return out
    finally:
        await c.stop()


async def committed(
    bootstrap: str, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return {tp: await c.committed(tp) for tp in tps}
    finally:
        await c.stop()


# ---------------------------------------------------------------------------------------------
# topic admin
# ---------------------------------------------------------------------------------------------


async def test_ensure_topics_creates_the_internal_topics_then_accepts_them(broker: str) -> None:
    app = unique("dfapp")
    specs = internal_topics(app, 4).all()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        assert not {s.name for s in specs} & set(await admin.list_topics())
        shapes = await ensure_topics(broker, specs)
        assert {s.name for s in specs} <= set(await admin.list_topics())
    finally:
        await admin.close()
    changelog = shapes[f"{app}-changelog"]
    assert changelog.partitions == 4
    assert changelog.configs["cleanup.policy"] == "compact"
    assert changelog.configs["min.compaction.lag.ms"] == "60000"
    for name in (f"{app}-events", f"{app}-correlation"):
        assert shapes[name].partitions == 4
        assert shapes[name].configs["cleanup.policy"] == "delete"
    assert shapes[f"{app}-dead-letter"].partitions == 1
    # a second worker starting (or a restart) finds them and verifies them
    assert await ensure_topics(broker, specs) == shapes


async def test_ensure_topics_refuses_a_topic_of_the_wrong_shape(broker: str) -> None:
    name = unique("df-wrong")
    await ensure_topics(broker, [TopicSpec(name, 3)])  # the shape auto-creation gives: 3, delete
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(broker, [TopicSpec(name, 12, {"cleanup.policy": "compact"})])
    message = str(info.value)
    assert f"{name!r} has 3 partitions and cleanup.policy=delete" in message
    assert "needs 12 partitions and cleanup.policy=compact" in message
    # the same partition count with the wrong policy is refused too
    with pytest.raises(ConfigurationError, match=r"cleanup\.policy=compact"):
        await ensure_topics(broker, [TopicSpec(name, 3, {"cleanup.policy": "compact"})])


async def test_ensure_topics_refuses_a_topic_auto_created_by_a_client(broker: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "1", {"auto.create.topics.enable": None})]
        )
        entries = {e[0]: e[1] for e in response.resources[0][4]}
    finally:
        await admin.close()
    if entries.get("auto.create.topics.enable") != "true":
        pytest.skip("this broker does not auto-create topics")
    name = unique("df-auto")
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        await producer.send_and_wait(name, b"x")  # a client touches the name before the runtime
    finally:
        await producer.stop()
    with pytest.raises(ConfigurationError, match=f"{name}.*needs 12 partitions and cleanup.policy=compact"):
        await ensure_topics(broker, [TopicSpec(name, 12, {"cleanup.policy": "compact"})])


async def test_ensure_topics_reports_the_per_topic_errors_of_create_topics(broker: str) -> None:
    bogus, too_replicated = unique("df-bogus"), unique("df-rf")
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(broker, [TopicSpec(bogus, 1, {"cleanup.policy": "bogus"})])
    assert bogus in str(info.value) and "InvalidConfigurationError" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(broker, [TopicSpec(too_replicated, 1, replication_factor=3)])
    assert too_replicated in str(info.value) and "InvalidReplicationFactorError" in str(info.value)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        assert not {bogus, too_replicated} & set(await admin.list_topics())
    finally:
        await admin.close()


async def test_ensure_application_topics_creates_the_missing_ones_and_leaves_the_others(broker: str) -> None:
    existing, missing = unique("df-user"), unique("df-user")
    await ensure_topics(broker, [TopicSpec(existing, 3)])
    await ensure_application_topics(broker, [existing, missing], 2)
    await ensure_application_topics(broker, [existing, missing], 2)  # another worker: all exist
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()
    assert (partitions[existing], partitions[missing]) == (3, 2)


async def test_ensure_application_topics_reports_what_the_broker_refuses(broker: str) -> None:
    # Kafka refuses a name that differs from an existing one only by '.' against '_' (their
    # metric names would collide): a per-topic error of CreateTopics, which must not be ignored.
    suffix = uuid.uuid4().hex[:8]
    await ensure_application_topics(broker, [f"df_coll_{suffix}"], 1)
    with pytest.raises(ConfigurationError) as info:
        await ensure_application_topics(broker, [f"df.coll.{suffix}"], 1)
    assert f"'df.coll.{suffix}'" in str(info.value) and "refused" in str(info.value)


# ---------------------------------------------------------------------------------------------
# fencing
# ---------------------------------------------------------------------------------------------


async def test_a_zombie_producer_raises_task_migrated_and_commits_nothing(broker: str) -> None:
    app, group, source, out = unique("dfz"), unique("dfz-group"), unique("dfz-in"), unique("dfz-out")
    await ensure_topics(broker, [TopicSpec(source, 1), TopicSpec(out, 1)])
    tp = TopicPartition(source, 0)
    old, new = PartitionTransactions(broker, app, group), PartitionTransactions(broker, app, group)
    try:
        zombie = await old.start(0)
        await zombie.begin()
        await zombie.send(out, b"zombie", partition=0)
        await zombie.flush()  # in the log, uncommitted
        owner = await new.start(0)  # same transactional id: fences the zombie, aborts its transaction
        assert owner.transactional_id == zombie.transactional_id == f"{app}-0"
        with pytest.raises(TaskMigrated) as info:
            await zombie.commit({tp: 10})
        assert info.value.partition == 0 and zombie.migrated
        # aiokafka raises AssertionError from its FATAL_ERROR state now: still TaskMigrated
        with pytest.raises(TaskMigrated):
            await zombie.begin()
        with pytest.raises(TaskMigrated):
            await zombie.abort()
        await owner.begin()
        await owner.send(out, b"owner", partition=0)
        await owner.commit({tp: 5})
    finally:
        await old.close()
        await new.close()
    assert [r.value for r in await drain(broker, out, 1)] == [b"owner"]
    assert await committed(broker, group, [tp]) == {tp: 5}


async def test_a_fence_seen_only_by_a_delivery_is_task_migrated(broker: str) -> None:
    # fenced while idle, then begin + send without awaiting + commit: aiokafka's commit raises
    # AssertionError (not ProducerFenced); the delivery future holds the ProducerFenced
    app, group, out = unique("dfd"), unique("dfd-group"), unique("dfd-out")
    await ensure_topics(broker, [TopicSpec(out, 1)])
    old, new = PartitionTransactions(broker, app, group), PartitionTransactions(broker, app, group)
    try:
        zombie = await old.start(3)
        await zombie.begin()
        await zombie.send(out, b"first", partition=0)
        await zombie.commit()
        await new.start(3)
        await zombie.begin()
        await zombie.send(out, b"late", partition=0)
        with pytest.raises(TaskMigrated):
            await zombie.commit()
    finally:
        await old.close()
        await new.close()
    assert [r.value for r in await drain(broker, out, 1)] == [b"first"]


# ---------------------------------------------------------------------------------------------
# exactly-once across SIGKILL
# ---------------------------------------------------------------------------------------------


class WorkerProcess:
    """eos_worker.py in a subprocess whose stdout lines we follow."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[str] = []

    @classmethod
    async def spawn(
        cls, names: dict[str, str], partitions: int, stderr: Path, *extra: str, instance_id: str | None = None
    ) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER),
            "--bootstrap", names["bootstrap"], "--app", names["app"], "--group", names["group"],
            "--input", names["input"], "--output", names["output"], "--changelog", names["changelog"],
            "--partitions", str(partitions),
            *(["--instance-id", instance_id] if instance_id else []),
            *extra,
            stdout=asyncio.subprocess.PIPE, stderr=stderr.open("ab"),
        )  # fmt: skip
        return cls(proc, stderr)

    async def wait_for_line(self, predicate: Any, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise AssertionError(
                            f"worker exited ({await self.proc.wait()}): {self.diagnostics()}"
                        )
                    line = raw.decode().strip()
                    self.lines.append(line)
                    if predicate(line):
                        return line
        except TimeoutError:
            raise AssertionError(f"no expected line within {timeout} s: {self.diagnostics()}") from None

    def diagnostics(self) -> str:
        return f"stdout tail {self.lines[-10:]}, stderr tail {self.stderr.read_text()[-3000:]!r}"

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL


def eos_names(broker: str) -> dict[str, str]:
    sfx = uuid.uuid4().hex[:8]
    return {
        "bootstrap": broker,
        "app": f"dfeos-{sfx}",
        "group": f"dfeos-group-{sfx}",
        "input": f"dfeos-in-{sfx}",
        "output": f"dfeos-out-{sfx}",
        "changelog": f"dfeos-changelog-{sfx}",
    }


async def seed(broker: str, names: dict[str, str], partitions: int, per_partition: int) -> None:
    await ensure_topics(
        broker,
        [
            TopicSpec(names["input"], partitions),
            TopicSpec(names["output"], partitions),
            TopicSpec(names["changelog"], partitions, {"cleanup.policy": "compact"}),
        ],
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(names["input"], b"%08d" % i, key=b"k%d" % i, partition=i % partitions)
            for i in range(partitions * per_partition)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def verify_exactly_once(
    broker: str, names: dict[str, str], partitions: int, per_partition: int
) -> None:
    """read_committed: every input id once in the output, the per-partition state sequence exactly
    1..n, the changelog's last count n, and the group's offsets at the input ends."""
    n = partitions * per_partition
    out = await drain(broker, names["output"], partitions)
    ids = Counter(r.value.split(b"|")[0] for r in out)
    assert len(ids) == n, f"missing {n - len(ids)} ids"
    assert [i for i, c in ids.items() if c > 1] == []
    assert len(out) == n
    # the state (restored from the changelog at each activation) advanced exactly once per record
    sequences: dict[int, list[int]] = defaultdict(list)
    for r in out:
        sequences[r.partition].append(int(r.value.split(b"|")[1]))
    assert {p: s == list(range(1, per_partition + 1)) for p, s in sequences.items()} == dict.fromkeys(
        range(partitions), True
    )
    last_count: dict[int, int] = {}
    for r in await drain(broker, names["changelog"], partitions):
        if r.key == b"__count":
            last_count[r.partition] = int(r.value)
    assert last_count == dict.fromkeys(range(partitions), per_partition)
    tps = [TopicPartition(names["input"], p) for p in range(partitions)]
    assert await committed(broker, names["group"], tps) == dict.fromkeys(tps, per_partition)


async def test_consume_transform_produce_is_exactly_once_across_sigkill_and_restart(
    broker: str, tmp_path: Path
) -> None:
    partitions, per_partition = 4, 1000
    names = eos_names(broker)
    await seed(broker, names, partitions, per_partition)
    stderr = tmp_path / "worker.stderr"
    static = "worker-1"  # static membership: a restarted worker gets its partitions back at once

    # 1. killed while it holds a transaction open whose output is already in the log
    w = await WorkerProcess.spawn(names, partitions, stderr, "--hold-after-produce", "5", instance_id=static)
    await w.wait_for_line(lambda line: line.startswith("HOLDING"))
    await w.kill()

    # 2. restarted (fences the open transaction), killed mid-run at whatever it is doing
    w = await WorkerProcess.spawn(names, partitions, stderr, instance_id=static)
    await w.wait_for_line(lambda line: line.startswith("ACTIVE"))
    committed_txns = 0

    def eighth_commit(line: str) -> bool:
        nonlocal committed_txns
        committed_txns += line.startswith("TXN")
        return committed_txns >= 8

    await w.wait_for_line(eighth_commit)
    await w.kill()

    # 3. restarted again, runs to the end of the input
    w = await WorkerProcess.spawn(names, partitions, stderr, "--exit-when-done", instance_id=static)
    await w.wait_for_line(lambda line: line.startswith("DONE"), timeout=40)
    assert await w.proc.wait() == 0, w.diagnostics()

    await verify_exactly_once(broker, names, partitions, per_partition)
    # the first kill did leave aborted output in the log: the test exercised an open transaction
    raw = await drain(broker, names["output"], partitions, isolation_level="read_uncommitted")
    assert len(raw) >= partitions * per_partition + 100


async def test_a_worker_joining_mid_run_takes_over_partitions_exactly_once(
    broker: str, tmp_path: Path
) -> None:
    # dynamic membership: the join revokes every partition of the first worker while it is
    # processing (eager rebalance); in-flight transactions finish in on_revoked, records in hand
    # are dropped by the guard, and each partition is re-activated (fence, restore, seek) on its owner
    partitions, per_partition = 4, 1500
    names = eos_names(broker)
    await seed(broker, names, partitions, per_partition)
    args = ("--exit-when-done", "--batch", "50", "--delay-ms", "40")
    first = await WorkerProcess.spawn(names, partitions, tmp_path / "first.stderr", *args)
    await first.wait_for_line(lambda line: line.startswith("TXN"))
    second = await WorkerProcess.spawn(names, partitions, tmp_path / "second.stderr", *args)
    await asyncio.gather(
        first.wait_for_line(lambda line: line.startswith("DONE"), timeout=45),
        second.wait_for_line(lambda line: line.startswith("DONE"), timeout=45),
    )
    assert await first.proc.wait() == 0, first.diagnostics()
    assert await second.proc.wait() == 0, second.diagnostics()
    # the join happened mid-run: the first worker lost partitions, the second one processed some
    assert any(line.startswith("REVOKED [0, 1, 2, 3]") for line in first.lines), first.lines[:20]
    assert any(line.startswith("TXN") for line in second.lines), second.lines[:20]
    await verify_exactly_once(broker, names, partitions, per_partition)
