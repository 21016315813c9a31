"""The Kafka runtime with RocksDB partition stores (``store="rocksdb://"``, the ``rocksdb``
extra): pizza workflows on two workers, one of them SIGKILLed and restarted on its RocksDB
directories, every workflow completed once."""

from __future__ import annotations

import pytest

pytest.importorskip("aiokafka")
pytest.importorskip("rocksdict")

from .cluster import UpdatesWatcher
from .test_kafka_runtime import MakeCluster, assert_completed_once_each, create_all, order_ids, pizza_client

pytestmark = pytest.mark.timeout(240)


async def test_pizza_on_rocksdb_stores_across_a_sigkill(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(env={"DAGGERFLOW_STORE": "rocksdb://"})
    _, w1 = await cluster.start(2)
    first, second = order_ids(150), [f"r{i:05d}" for i in range(100)]
    watcher = UpdatesWatcher(cluster.bootstrap, cluster.topic("updates"))
    try:
        async with pizza_client(cluster, monkeypatch) as client:
            await create_all(client, first)
            await watcher.wait_completed(first, timeout=120)
            stores = sorted(p.name for p in (w1.datadir / cluster.app).iterdir() if p.is_dir())
            assert stores and all(name.endswith(".rocks") for name in stores), stores
            w1.sigkill()
            w1.start()  # the same datadir: its RocksDB stores are the restore's checkpoint
            await w1.wait_ready()
            await create_all(client, second)
            await watcher.wait_completed(first + second, timeout=120)
        await assert_completed_once_each(cluster, watcher, first + second)
    finally:
        await watcher.close()
    assert await cluster.stop_all() == [0, 0]
