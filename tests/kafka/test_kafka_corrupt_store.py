"""A partition's local store is a cache of its changelog: one that cannot be opened is wiped
and restored from the beginning of the changelog (Kafka Streams' TaskCorruptedException), so
a worker whose files were damaged while it was down comes back with every instance and every
index entry, instead of retrying the broken file forever."""

from __future__ import annotations

import pytest

pytest.importorskip("aiokafka")

from .cluster import UpdatesWatcher
from .test_kafka_runtime import (
    MakeCluster,
    answer_ready,
    assert_completed_once_each,
    create_all,
    order_ids,
    pizza_client,
    wait_all_ordered,
)

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 4


async def test_a_corrupt_local_store_is_wiped_and_restored_from_the_changelog(
    make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workflows wait for READY (the kitchen is off): their state and their index entries are
    in the stores. The worker stops; every store file is overwritten with garbage; it starts
    again, wipes and restores each store, and the READY answers complete every workflow
    exactly once; workflows created afterwards complete too."""
    cluster = make_cluster(partitions=PARTITIONS, env={"DAGGERFLOW_KITCHEN": "off"})
    (worker,) = await cluster.start(1)
    ids = order_ids(60)
    later = order_ids(20, prefix="n")
    watcher = UpdatesWatcher(cluster.bootstrap, cluster.topic("updates"))
    try:
        async with pizza_client(cluster, monkeypatch) as client:
            await create_all(client, ids)
            await wait_all_ordered(cluster, ids)
            assert await cluster.stop_all() == [0]

            stores = sorted((worker.datadir / cluster.app).glob("p*.db"))
            assert len(stores) == PARTITIONS, stores
            for path in stores:
                path.write_bytes(b"this is not a database " * 512)
                for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                    if side.exists():
                        side.write_bytes(b"garbage" * 64)

            worker.start()
            await worker.wait_ready()
            wiped = await worker.wait_log(r"task (\d+): the local store (\S+) is unusable", count=PARTITIONS)
            assert sorted(int(m.group(1)) for m in wiped) == list(range(PARTITIONS))
            assert {m.group(2) for m in wiped} == {str(p) for p in stores}

            await answer_ready(cluster, ids)
            await watcher.wait_completed(ids, timeout=120)

            await create_all(client, later)
            await answer_ready(cluster, later)
            await watcher.wait_completed(later, timeout=120)
        await assert_completed_once_each(cluster, watcher, ids + later)
    finally:
        await watcher.close()
    assert await cluster.stop_all() == [0]
