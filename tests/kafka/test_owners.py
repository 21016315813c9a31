"""The owners view against a real broker: catch-up, tailing, garbage, tombstones, transactions.

Records are written with plain producers, as a task's producer writes them; every test uses a
fresh topic created like the runtime creates ``{app}-owners`` (compacted, one partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from daggerflow import Dagger
from daggerflow.demo.pizza import TEMPLATE
from daggerflow.errors import ConfigurationError
from daggerflow.kafka.admin import TopicSpec, ensure_topics
from daggerflow.kafka.codec import partition_for
from daggerflow.kafka.owners import Owner, OwnersView, owner_record, parse_owner

from .cluster import Cluster, wait_until

pytestmark = pytest.mark.timeout(300)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def topic(broker: str) -> str:
    name = unique("owners")
    await ensure_topics(broker, [TopicSpec(name, 1, {"cleanup.policy": "compact"})])
    return name


@pytest.fixture
async def producer(broker: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=True)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def put(producer: AIOKafkaProducer, topic: str, owner: Owner) -> None:
    key, value = owner_record(owner)
    await producer.send_and_wait(topic, value, key=key)


async def until(condition: object, timeout: float = 10.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def o(
    partition: int, worker: str = "w1", url: str | None = "http://127.0.0.1:1", since: float = 1.0
) -> Owner:
    return Owner(partition, url, worker, since)


def test_record_round_trip() -> None:
    owner = Owner(7, "http://10.0.0.1:6066", "host-1234", 1_700_000_000.25)
    key, value = owner_record(owner)
    assert key == b"7"
    assert parse_owner(key, value) == owner
    assert parse_owner(b"3", b'{"partition":3,"url":null,"worker":"w","since":5}') == Owner(3, None, "w", 5.0)
    assert parse_owner(b"3", None) is None  # tombstone


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"1", b"not json"),
        (b"1", b"[1,2]"),
        (b"1", b'{"partition":"1","url":null,"worker":"w","since":1}'),
        (b"2", b'{"partition":1,"url":null,"worker":"w","since":1}'),  # key disagrees
        (None, b'{"partition":1,"url":null,"worker":"w","since":1}'),
        (b"1", b'{"partition":1,"url":5,"worker":"w","since":1}'),
        (b"1", b'{"partition":1,"url":null,"since":1}'),
        (b"1", b'{"partition":1,"url":null,"worker":"w","since":"now"}'),
        (b"1", b'{"partition":true,"url":null,"worker":"w","since":1}'),
        (b"\xff", b"\xff\xfe"),
        (b"1", b"[" * 100_000),
    ],
)
def test_garbage_is_none(key: bytes | None, value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert parse_owner(key, value) is None
    assert "malformed record on the owners topic" in caplog.text


async def test_catch_up_then_tail(broker: str, topic: str, producer: AIOKafkaProducer) -> None:
    for p in range(3):
        await put(producer, topic, o(p, "w1", "http://127.0.0.1:1001"))
    await put(producer, topic, o(1, "w2", "http://127.0.0.1:1002", since=2.0))  # replaces p1's

    view = OwnersView(broker, topic)
    seen: list[dict[int, Owner]] = []
    view.on_change(seen.append)
    await view.start()
    try:
        # start() returns caught up: no waiting needed for what was there before.
        assert view.owners() == {
            0: o(0, "w1", "http://127.0.0.1:1001"),
            1: o(1, "w2", "http://127.0.0.1:1002", since=2.0),
            2: o(2, "w1", "http://127.0.0.1:1001"),
        }
        assert view.urls() == ["http://127.0.0.1:1001", "http://127.0.0.1:1002"]
        assert view.owner(5) is None
        assert seen and seen[-1] == view.owners()

        # Tailing: a new partition, a move, an owner without a REST URL.
        await put(producer, topic, o(5, "w3", None))
        assert await view.wait_owner(5, timeout=10) == o(5, "w3", None)
        await put(producer, topic, o(0, "w2", "http://127.0.0.1:1002", since=3.0))
        await until(lambda: view.owner(0) == o(0, "w2", "http://127.0.0.1:1002", since=3.0))
        assert view.urls() == ["http://127.0.0.1:1001", "http://127.0.0.1:1002"]  # None is no URL
        await until(lambda: seen[-1] == view.owners())
    finally:
        await view.stop()


async def test_empty_topic_and_wait_owner(broker: str, topic: str, producer: AIOKafkaProducer) -> None:
    view = OwnersView(broker, topic)
    await view.start()
    try:
        assert view.owners() == {} and view.urls() == []
        with pytest.raises(TimeoutError):
            await view.wait_owner(0, timeout=0.3)
        waiter = asyncio.create_task(view.wait_owner(0, timeout=10))
        await asyncio.sleep(0)  # the waiter waits before the record exists
        await put(producer, topic, o(0))
        assert await waiter == o(0)
        # other_than: wait for a new owner of a partition whose owner did not answer.
        stale = o(0)
        waiter = asyncio.create_task(view.wait_owner(0, timeout=10, other_than=stale))
        await asyncio.sleep(0)
        assert not waiter.done()
        await put(producer, topic, o(0, "w2", since=9.0))
        assert await waiter == o(0, "w2", since=9.0)
    finally:
        await view.stop()


async def test_garbage_and_tombstones(
    broker: str, topic: str, producer: AIOKafkaProducer, caplog: pytest.LogCaptureFixture
) -> None:
    await put(producer, topic, o(0))
    await producer.send_and_wait(topic, b"garbage", key=b"0")  # must not replace partition 0's owner
    await producer.send_and_wait(topic, b'{"partition": 1}', key=b"1")
    await put(producer, topic, o(2))
    await producer.send_and_wait(topic, None, key=b"2")  # tombstone: p2 has no recorded owner
    await producer.send_and_wait(topic, None, key=b"junk")  # a tombstone of a foreign key
    view = OwnersView(broker, topic)
    await view.start()
    try:
        assert view.owners() == {0: o(0)}
        assert "malformed record on the owners topic" in caplog.text
        # The tail survives them too.
        await producer.send_and_wait(topic, b"\x00\x01", key=b"3")
        await producer.send_and_wait(topic, None, key=b"0")
        await put(producer, topic, o(4))
        await view.wait_owner(4, timeout=10)
        assert view.owners() == {4: o(4)}
    finally:
        await view.stop()


async def test_aborted_transactions_are_not_seen(broker: str, topic: str) -> None:
    """Owner records come from the tasks' transactional producers: a zombie's aborted record must
    not become the owner, and a committed one is seen only once committed."""
    txn = AIOKafkaProducer(bootstrap_servers=broker, transactional_id=unique("owners-txn"))
    await txn.start()
    view = OwnersView(broker, topic)
    try:
        await txn.begin_transaction()
        key, value = owner_record(o(0, "zombie"))
        await txn.send_and_wait(topic, value, key=key)
        await txn.abort_transaction()
        await txn.begin_transaction()
        key, value = owner_record(o(1, "w1"))
        await txn.send_and_wait(topic, value, key=key)
        await txn.commit_transaction()

        await view.start()
        assert view.owners() == {1: o(1, "w1")}

        await txn.begin_transaction()
        key, value = owner_record(o(2, "w1"))
        await txn.send_and_wait(topic, value, key=key)
        await asyncio.sleep(0.5)  # give a read_uncommitted view time to (wrongly) see it
        assert view.owner(2) is None
        await txn.commit_transaction()
        assert await view.wait_owner(2, timeout=10) == o(2, "w1")
    finally:
        await view.stop()
        await txn.stop()


async def test_missing_topic_is_a_configuration_error(broker: str) -> None:
    name = unique("owners-missing")
    view = OwnersView(broker, name)
    with pytest.raises(ConfigurationError, match="does not exist"):
        await view.start(timeout=1.0)
    # ...and looking for it did not auto-create it (with the broker defaults, the wrong shape).
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        assert name not in await admin.list_topics()
    finally:
        await admin.close()


# ---------------------------------------------------------------------------------------------
# end to end: worker processes of the pizza app publish their owners; reads reach the owners
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pizza_cluster(
    make_cluster: Callable[..., Cluster],
    monkeypatch: pytest.MonkeyPatch,
    ids: list[str],
    customer: Callable[[str], str] = lambda oid: "c",
) -> AsyncIterator[tuple[Cluster, OwnersView, Dagger, httpx.AsyncClient]]:
    """Two pizza workers sharing 6 partitions, a view of their owners, a client engine (no REST
    API, owns nothing) that created ``ids``, all COMPLETED; and an HTTP client."""
    cluster = make_cluster(partitions=6)
    await cluster.start(2)
    view = OwnersView(cluster.bootstrap, f"{cluster.app}-owners")
    await view.start()
    try:
        # Both workers serve some partitions (owner records are written on activation).
        await wait_until(lambda: len(view.owners()) == 6 and len(view.urls()) == 2, 60, 0.1, "owners of 6")
        for key, value in cluster.env(cluster.root / "client").items():
            monkeypatch.setenv(key, value)
        from daggerflow.demo import kafka_app

        client = kafka_app.build(role="client")
        async with client, httpx.AsyncClient(timeout=10) as http:
            for oid in ids:
                params = {"order_id": oid, "customer_id": customer(oid), "pizza_type": "margherita"}
                await client.create_instance(client.get_template(TEMPLATE), oid, params, submit_task=True)

            async def completed(url: str) -> int:
                r = await http.get(f"{url}/api/v1/instances", params={"status": "COMPLETED", "limit": 1})
                return int(r.json()["total"]) if r.status_code == 200 else -1

            urls = view.urls()
            await wait_until(
                lambda: _all_equal([completed(u) for u in urls], len(ids)), 90, 0.2, f"{len(ids)} COMPLETED"
            )
            yield cluster, view, client, http
    finally:
        await view.stop()


async def test_any_worker_answers_for_any_instance(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker's REST API answers for every instance, a client reads any instance, listings
    merge both workers."""
    ids = [f"o{i:03d}" for i in range(40)]
    async with pizza_cluster(make_cluster, monkeypatch, ids) as (cluster, view, client, http):
        urls = view.urls()
        owned_by = {u: 0 for u in urls}
        for oid in ids:
            owner = view.owner(partition_for(oid, 6))
            assert owner is not None and owner.url in owned_by
            owned_by[owner.url] += 1
            for url in urls:
                r = await http.get(f"{url}/api/v1/instances/{oid}")
                assert r.status_code == 200, (url, oid, r.text)
                assert r.json()["id"] == oid and r.json()["status"]["code"] == "COMPLETED"
            got = await client.get_instance(oid)
            assert got is not None and got.id == oid
        assert all(owned_by.values()), owned_by  # both owners were really asked
        for url in urls:
            assert (await http.get(f"{url}/api/v1/instances/nope")).status_code == 404
            body = (await http.get(f"{url}/api/v1/instances", params={"limit": 1000})).json()
            assert body["total"] == len(ids)
            oldest_first = sorted(ids, key=lambda i: (created(body, i), i))
            assert [i["id"] for i in body["items"]] == oldest_first[::-1]  # newest first
            listed = (await http.get(f"{url}/tasks/instances", params={"limit": 15, "offset": 30})).json()
            assert [i["id"] for i in listed] == oldest_first[30:]  # Dagger's route: creation order
    assert await cluster.stop_all() == [0, 0]


async def test_no_instance_is_reported_missing_across_a_failover(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker is SIGKILLed; the survivor takes its partitions over. While a partition is
    (re-)activated a read may fail with 503 (retry), but an existing instance is never a 404."""
    ids = [f"o{i:03d}" for i in range(40)]
    async with pizza_cluster(make_cluster, monkeypatch, ids) as (cluster, view, _client, http):
        w0, w1 = cluster.workers
        # (worker ids are "<host>-<pid>-<random>")
        survivor = next(o.url for o in view.owners().values() if f"-{w0.pid}-" in o.worker)
        assert survivor is not None
        w1.sigkill()
        await wait_until(lambda: view.urls() == [survivor], 90, 0.2, "the survivor to own everything")

        async def answered(oid: str) -> bool:
            r = await http.get(f"{survivor}/api/v1/instances/{oid}")
            assert r.status_code in (200, 503), (oid, r.status_code, r.text)
            return r.status_code == 200

        for oid in ids:
            await wait_until(functools.partial(answered, oid), 30, 0.1, f"{oid} from the survivor")
        body = (await http.get(f"{survivor}/api/v1/instances", params={"limit": 1000})).json()
        assert body["total"] == len(ids)
    assert await cluster.stop_all() == [0]


async def _all_equal(counts: list[Any], expected: int) -> bool:
    return all(c == expected for c in await asyncio.gather(*counts))


def created(body: dict[str, Any], iid: str) -> float:
    return float(next(i["time_created"] for i in body["items"] if i["id"] == iid))
