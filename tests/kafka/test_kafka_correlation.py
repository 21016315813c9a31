"""Correlation on the Kafka runtime (issue #3 §3), with the app of tests/kafka/corr_app.py on
two worker processes against a real broker.

Listener topics keep their producers' keys: the tests produce with plain aiokafka producers
and keys that have nothing to do with the instances. A message is routed by correlation
value to the owner of that value's index partition, which forwards it to each waiting
instance's owner; so one message can complete instances on several partitions, and an
early message can wait (``unmatched_message_ttl``) at the index owner.

To know that a message has been *handled* before the next step, a test sends, right after
it and with the same key, a marker message for a waiting marker instance whose correlation
value lies on the same correlation partition: that partition is read in order, so once the
marker's instance completes, the message before it has been through its index owner.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from .cluster import Cluster, UpdatesWatcher, produce, waiting_on_listener

pytestmark = pytest.mark.timeout(180)

CORR_APP = f"{Path(__file__).resolve().parent / 'corr_app.py'}:engine"
PARTITIONS = 12
MakeCluster = Callable[..., Cluster]


@contextlib.asynccontextmanager
async def corr_cluster(
    make_cluster: MakeCluster,
    monkeypatch: pytest.MonkeyPatch,
    workers: int = 2,
    precreate: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Cluster, Any, UpdatesWatcher]]:
    """Workers of a fresh corr_app application, a client engine of it and its update topic.
    ``precreate``: listener topics (short names) to create first with that many partitions:
    with another count than the application's, a topic is not co-partitioned with the
    correlation index and is re-routed by its own consumer group. ``env``: of the workers
    and the client."""
    cluster = make_cluster(target=CORR_APP, partitions=PARTITIONS, env=env)
    if precreate:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(cluster.topic(t), n, 1) for t, n in precreate.items()])
        finally:
            await admin.close()
    await cluster.start(workers)
    for key, value in cluster.env(cluster.root / "client").items():
        monkeypatch.setenv(key, value)
    from . import corr_app

    client = corr_app.build(role="client")
    watcher = UpdatesWatcher(cluster.bootstrap, cluster.topic("updates"))
    try:
        async with client:
            yield cluster, client, watcher
    finally:
        await watcher.close()
    assert await cluster.stop_all() == [0] * workers


async def start_waiting(
    client: Any, watcher: UpdatesWatcher, template: str, ids_to_value: dict[str, str]
) -> None:
    """Create and submit one instance per id, waiting on its value; return once each has a
    listener task waiting (committed, so its index entry is on its way to the index owner,
    ahead of any message produced from now on)."""
    tpl = client.get_template(template)
    for iid, value in ids_to_value.items():
        await client.create_instance(tpl, iid, {"box_id": value}, submit_task=True)
    await watcher.wait_for(ids_to_value, waiting_on_listener, 60, f"{template} instances waiting")


def partition_of(topic: str, value: str) -> int:
    """The correlation partition of (topic, "box_id", value), as the runtime computes it."""
    from daggerflow.kafka.codec import partition_of_correlation
    from daggerflow.model.instance import Correlation

    return partition_of_correlation(Correlation(topic, "box_id", value), PARTITIONS)


def value_on_partition(topic: str, partition: int, prefix: str) -> str:
    """A fresh correlation value of ``topic`` whose index lives on ``partition``."""
    for i in range(100_000):
        value = f"{prefix}-{i}"
        if partition_of(topic, value) == partition:
            return value
    raise AssertionError("no value found")


def ids_on_every_partition(prefix: str) -> list[str]:
    """One instance id per partition (instances are partitioned by id)."""
    from daggerflow.kafka.codec import partition_for

    found: dict[int, str] = {}
    i = 0
    while len(found) < PARTITIONS:
        iid = f"{prefix}-{i}"
        found.setdefault(partition_for(iid, PARTITIONS), iid)
        i += 1
    return [found[p] for p in sorted(found)]


def ids_off_partition(partition: int, prefix: str, n: int) -> list[str]:
    """``n`` instance ids that live on another partition than ``partition``."""
    from daggerflow.kafka.codec import partition_for

    candidates = (f"{prefix}-{i}" for i in range(100_000))
    return [iid for iid in candidates if partition_for(iid, PARTITIONS) != partition][:n]


def messages_of(snapshot: dict[str, Any]) -> list[Any]:
    return list((snapshot.get("runtime_parameters") or {}).get("messages", []))


# ---------------------------------------------------------------------------------------------


async def test_one_message_completes_instances_on_every_partition(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 instances, one on each partition, wait on one box; one message with an unrelated
    key completes all of them (and only them). A message listing three other values then
    completes the three instances waiting on those, whatever their partitions."""
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, client, watcher):
        box = f"B-{uuid.uuid4().hex[:6]}"
        together = ids_on_every_partition("together")
        others = {f"other-{i}": f"O-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)}
        await start_waiting(client, watcher, "BoxWait", {iid: box for iid in together} | others)

        await produce(cluster.bootstrap, cluster.topic("boxes"), [(b"some-unrelated-key", {"box_id": box})])
        await watcher.wait_completed(together, timeout=60)
        progress = await watcher.poll()
        for iid in together:
            last = progress.last(iid)
            assert last is not None and messages_of(last) == [{"box_id": box}], (iid, last)
        assert not progress.with_status("COMPLETED", others), "a message for one box completed others"

        listing = {"box_id": list(others.values())}
        await produce(cluster.bootstrap, cluster.topic("boxes"), [(b"another-key", listing)])
        await watcher.wait_completed(others, timeout=60)
        progress = await watcher.poll()
        for iid in others:
            last = progress.last(iid)
            assert last is not None and messages_of(last) == [listing], (iid, last)
        assert not progress.update_count_problems()


async def test_an_early_message_waits_for_its_instance_within_the_ttl(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ``{app}.early`` (unmatched_message_ttl=600 s) a message that arrives before any
    instance waits for it is kept by its index owner and delivered when an instance starts
    waiting. On ``{app}.boxes`` (no TTL) the same sequence drops the early message: the
    late instance keeps waiting until a second message comes."""
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, client, watcher):
        tag = uuid.uuid4().hex[:6]
        early_topic, boxes_topic = cluster.topic("early"), cluster.topic("boxes")
        early_value, dropped_value = f"E-{tag}", f"N-{tag}"
        # Markers on the same correlation partitions as the early messages.
        early_marker = value_on_partition(early_topic, partition_of(early_topic, early_value), f"EM-{tag}")
        boxes_marker = value_on_partition(boxes_topic, partition_of(boxes_topic, dropped_value), f"BM-{tag}")
        await start_waiting(client, watcher, "EarlyWait", {"early-marker": early_marker})
        await start_waiting(client, watcher, "BoxWait", {"boxes-marker": boxes_marker})

        early = {"box_id": early_value, "n": 1}
        await produce(cluster.bootstrap, early_topic, [(b"k", early), (b"k", {"box_id": early_marker})])
        dropped = {"box_id": dropped_value, "n": 1}
        await produce(cluster.bootstrap, boxes_topic, [(b"k", dropped), (b"k", {"box_id": boxes_marker})])
        await watcher.wait_completed(["early-marker", "boxes-marker"], timeout=60)

        # Both early messages have been through their index owners; now the instances come.
        await client.create_instance(
            client.get_template("EarlyWait"), "late", {"box_id": early_value}, submit_task=True
        )
        await client.create_instance(
            client.get_template("BoxWait"), "late-no-ttl", {"box_id": dropped_value}, submit_task=True
        )
        await watcher.wait_completed(["late"], timeout=60)
        last = (await watcher.poll()).last("late")
        assert last is not None and messages_of(last) == [early]

        # Without a TTL the early message was dropped: the instance waits for a new one.
        await watcher.wait_for(["late-no-ttl"], waiting_on_listener, 60, "late-no-ttl waiting")
        second = {"box_id": dropped_value, "n": 2}
        await produce(cluster.bootstrap, boxes_topic, [(b"k", second)])
        await watcher.wait_completed(["late-no-ttl"], timeout=60)
        last = (await watcher.poll()).last("late-no-ttl")
        assert last is not None and messages_of(last) == [second]


@pytest.mark.parametrize("partitions", [PARTITIONS, 5], ids=["read-by-tasks", "re-routed"])
async def test_a_message_id_seen_twice_is_delivered_once(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    """The dedupe listener names messages (get_message_id): m1, m1, m2 on one key, then m1
    again on another key (another partition of the listener topic, possibly) and m3 with
    ``last``: the instance ran for m1, m2 and m3 once each. Both ways a listener topic is
    read: co-partitioned with the index (the application's partition count: the partition
    tasks read it) and not (5 partitions: its own group re-routes it)."""
    precreate = {"dedupe": partitions} if partitions != PARTITIONS else None
    async with corr_cluster(make_cluster, monkeypatch, precreate=precreate) as (cluster, client, watcher):
        for worker in cluster.running:
            found = re.search(r"listener topics read by the partition tasks: (.*)", worker.log())
            assert found is not None, worker.tail()
            assert cluster.topic("boxes") in found.group(1)
            assert (cluster.topic("dedupe") in found.group(1)) == (partitions == PARTITIONS)
        value = f"D-{uuid.uuid4().hex[:6]}"
        await start_waiting(client, watcher, "DedupeWait", {"d1": value})
        topic = cluster.topic("dedupe")

        def msg(msg_id: str, last: bool = False) -> dict[str, Any]:
            return {"box_id": value, "msg_id": msg_id, "last": last}

        await produce(cluster.bootstrap, topic, [(b"k1", msg("m1")), (b"k1", msg("m1")), (b"k1", msg("m2"))])

        def has_m2(snapshot: dict[str, Any]) -> bool:
            return "m2" in (snapshot.get("runtime_parameters") or {}).get("seen", [])

        # In order on one key: when m2 has run, both copies of m1 have been handled.
        [snapshot] = (await watcher.wait_for(["d1"], has_m2, 60, "d1 has seen m2")).values()
        assert snapshot["runtime_parameters"]["seen"] == ["m1", "m2"]

        await produce(
            cluster.bootstrap, topic, [(b"other-key", msg("m1", last=True)), (b"other-key", msg("m3", True))]
        )
        await watcher.wait_completed(["d1"], timeout=60)
        last = (await watcher.poll()).last("d1")
        assert last is not None and last["runtime_parameters"]["seen"] == ["m1", "m2", "m3"]
        assert not watcher.progress.update_count_problems()


async def test_match_only_one_holds_per_listener_when_the_index_owner_holds_no_instance(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ``{app}.shared`` SharedWait's listener is normal and FirstWait's is match_only_one.
    Every instance lives on another partition than the value's index entry, so the index
    owner forwards each delivery knowing only what the entry carries. One message completes
    both normal waiters and one first-come waiter; a second message completes the other."""
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, client, watcher):
        topic = cluster.topic("shared")
        value = f"S-{uuid.uuid4().hex[:6]}"
        home = partition_of(topic, value)
        normal = ids_off_partition(home, f"normal-{value}", 2)
        first = ids_off_partition(home, f"first-{value}", 2)
        await start_waiting(client, watcher, "SharedWait", dict.fromkeys(normal, value))
        await start_waiting(client, watcher, "FirstWait", dict.fromkeys(first, value))

        one, two = {"box_id": value, "n": 1}, {"box_id": value, "n": 2}
        await produce(cluster.bootstrap, topic, [(b"k", one)])
        await watcher.wait_completed(normal, timeout=60)
        await watcher.wait_count(first, 1, timeout=60)
        await produce(cluster.bootstrap, topic, [(b"k", two)])
        await watcher.wait_completed(first, timeout=60)

        progress = await watcher.poll()
        received = {}
        for iid in [*normal, *first]:
            last = progress.last(iid)
            assert last is not None, iid
            received[iid] = messages_of(last)
        assert [received[iid] for iid in normal] == [[one], [one]], received
        assert sorted(received[iid][0]["n"] for iid in first) == [1, 2], received
        assert all(len(received[iid]) == 1 for iid in first), received


@pytest.mark.parametrize("partitions", [PARTITIONS, 5], ids=["read-by-tasks", "re-routed"])
async def test_a_retry_of_a_message_that_matched_nothing_is_delivered(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    """m1 for a value nobody waits on (no TTL: dropped) leaves no dedupe id: the producer's
    retry of m1, once an instance waits, is delivered. Both ways a listener topic is read.
    The instance lives on another partition than the value's index entry, so its entry
    reaches the index owner through the correlation topic, after the first m1."""
    precreate = {"dedupe": partitions} if partitions != PARTITIONS else None
    async with corr_cluster(make_cluster, monkeypatch, precreate=precreate) as (cluster, client, watcher):
        topic = cluster.topic("dedupe")
        tag = uuid.uuid4().hex[:6]
        value = f"R-{tag}"
        home = partition_of(topic, value)
        marker = value_on_partition(topic, home, f"RM-{tag}")
        await start_waiting(client, watcher, "DedupeWait", {"retry-marker": marker})

        first = {"box_id": value, "msg_id": "m1", "last": False}
        await produce(
            cluster.bootstrap,
            topic,
            [(b"k", first), (b"k", {"box_id": marker, "msg_id": "mk", "last": True})],
        )
        # In order on one correlation partition: once the marker ran, m1 has been handled.
        await watcher.wait_completed(["retry-marker"], timeout=60)

        (iid,) = ids_off_partition(home, f"retried-{tag}", 1)
        await start_waiting(client, watcher, "DedupeWait", {iid: value})
        await produce(cluster.bootstrap, topic, [(b"k", {"box_id": value, "msg_id": "m1", "last": True})])
        await watcher.wait_completed([iid], timeout=60)
        last = (await watcher.poll()).last(iid)
        assert last is not None and last["runtime_parameters"]["seen"] == ["m1"]
