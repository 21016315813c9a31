"""Poison messages on the Kafka runtime (issue #3 §2): a listener message that cannot be
correlated goes to ``{app}-dead-letter`` with the error, and the worker keeps going (the
next message on the same partition is delivered). Uses the correlation tests' app."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("aiokafka")

from .cluster import decode, produce, read_topic
from .test_kafka_correlation import MakeCluster, corr_cluster, messages_of, start_waiting

pytestmark = pytest.mark.timeout(180)


async def test_a_poison_message_is_dead_lettered_and_the_next_one_delivered(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with corr_cluster(make_cluster, monkeypatch, workers=1) as (cluster, client, watcher):
        box = f"P-{uuid.uuid4().hex[:6]}"
        await start_waiting(client, watcher, "BoxWait", {"poisoned-1": box})

        topic = cluster.topic("boxes")
        # Same key, so both land on one partition, in this order.
        await produce(cluster.bootstrap, topic, [(b"k", {"no_box_here": 1}), (b"k", {"box_id": box})])
        await watcher.wait_completed(["poisoned-1"], timeout=60)
        last = (await watcher.poll()).last("poisoned-1")
        assert last is not None and messages_of(last) == [{"box_id": box}]

        letters = [decode(r.value) for r in await read_topic(cluster.bootstrap, f"{cluster.app}-dead-letter")]
        assert len(letters) == 1, letters
        letter = letters[0]
        assert letter["topic"] == topic
        assert "KeyError" in letter["error"] and "box_id" in letter["error"], letter
        assert "no_box_here" in str(letter["value"]), letter


async def test_dead_letters_go_to_the_configured_topic(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dead_letter_topic`` names the topic on Kafka too: it is created at start (the
    runtime's default ``{app}-dead-letter`` is not), and a poison message goes there."""
    env = {"CORR_DEAD_LETTER": "letters"}
    async with corr_cluster(make_cluster, monkeypatch, workers=1, env=env) as (cluster, client, watcher):
        box = f"P-{uuid.uuid4().hex[:6]}"
        await start_waiting(client, watcher, "BoxWait", {"poisoned-2": box})
        topic = cluster.topic("boxes")
        await produce(cluster.bootstrap, topic, [(b"k", {"no_box_here": 2}), (b"k", {"box_id": box})])
        await watcher.wait_completed(["poisoned-2"], timeout=60)

        letters = [decode(r.value) for r in await read_topic(cluster.bootstrap, cluster.topic("letters"))]
        assert [(letter["topic"], "no_box_here" in str(letter["value"])) for letter in letters] == [
            (topic, True)
        ]
        assert f"{cluster.app}-dead-letter" not in await topic_names(cluster.bootstrap)


async def topic_names(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
