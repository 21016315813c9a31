"""The console's reads on the Kafka runtime: two corr_app workers share 12 partitions, one
waiting instance per partition; either worker's ``/api/v1/listeners``, ``/api/v1/overview``
and node counts cover the instances of both (fanned out through the internal routes and
merged), and so does a client engine that owns nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from daggerflow.kafka.codec import partition_for

from .cluster import Cluster, Worker
from .test_kafka_correlation import PARTITIONS, corr_cluster, ids_on_every_partition, start_waiting

pytestmark = pytest.mark.timeout(240)


async def web_url(worker: Worker) -> str:
    (started,) = await worker.wait_log(r"started on Kafka as a worker \(web (http://\S+)\)")
    return started.group(1)


async def test_listeners_overview_and_node_counts_cover_both_workers(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ids_on_every_partition("cw")
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, client, watcher):
        await start_waiting(client, watcher, "BoxWait", {iid: f"v-{iid}" for iid in ids})
        urls = [await web_url(w) for w in cluster.running]
        topic = cluster.topic("boxes")
        async with httpx.AsyncClient(timeout=10) as http:
            owned: dict[str, set[str]] = {}
            for url in urls:
                partitions = set((await http.get(f"{url}/api/v1/stats")).json()["partitions"])
                owned[url] = {i for i in ids if partition_for(i, PARTITIONS) in partitions}
            assert all(owned.values()) and set.union(*owned.values()) == set(ids), owned
            for url in urls:
                body: dict[str, Any] = (await http.get(f"{url}/api/v1/listeners", params={"limit": 1000})).json()
                assert sorted(i["instance"] for i in body["items"]) == sorted(ids), (url, body)
                assert body["total"] == len(ids) and body["topics"] == [{"topic": topic, "count": len(ids)}]
                assert all(i["value"] == f"v-{i['instance']}" and i["key"] == "box_id" for i in body["items"])
                since = [i["since"] for i in body["items"]]
                assert since == sorted(since)
                # Pages of the merged order.
                paged: list[str] = []
                for offset in range(0, len(ids), 5):
                    page = (await http.get(f"{url}/api/v1/listeners", params={"limit": 5, "offset": offset})).json()
                    paged.extend(i["instance"] for i in page["items"])
                assert paged == [i["instance"] for i in body["items"]]

                overview = (await http.get(f"{url}/api/v1/overview")).json()
                assert overview["workers"] == 2 and overview["listeners_open"] == len(ids)
                counts = {(c["template"], c["status"]): c["count"] for c in overview["counts"]}
                assert counts[("BoxWait", "EXECUTING")] == len(ids)
                assert len(overview["oldest_listeners"]) == 10
                assert overview["throughput"]["transitions"] > 0

                nodes = (await http.get(f"{url}/api/v1/templates/BoxWait/node-counts")).json()
                assert nodes["scanned"] == len(ids) and nodes["truncated"] is False
                assert {"EXECUTING": len(ids)} in nodes["nodes"].values()

                timers = (await http.get(f"{url}/api/v1/timers")).json()
                assert timers["total"] == 0 and timers["items"] == []
                assert (await http.get(f"{url}/api/v1/listeners", params={"limit": 0})).status_code == 400
        # A client engine (no partitions) asks both workers.
        part = await client.list_listeners(limit=1000)
        assert sorted(i.instance for i in part.items) == sorted(ids) and part.total == len(ids)
        assert (await client.overview()).workers == 2
