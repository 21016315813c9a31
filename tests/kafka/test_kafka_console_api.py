"""The console's reads on the Kafka runtime: two corr_app workers share 12 partitions, one
waiting instance per partition; either worker's ``/api/v1/listeners``, ``/api/v1/overview``
and node counts cover the instances of both (fanned out through the internal routes and
merged), and so does a client engine that owns nothing. ``/api/v1/workers`` shows each
partition's owner, and the partitions of a SIGKILLed owner as not answering until the
survivor takes them over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from daggerflow.kafka.codec import partition_for

from .cluster import Cluster, Worker, produce, wait_until
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


async def test_node_counts_limit_is_the_newest_of_both_workers_together(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 instances over both workers, the 4 oldest completed: node counts of the newest 5
    count 5 instances (not 5 of each worker), and only waiting ones; of the newest 10, the
    two youngest completed ones too."""
    ids = ids_on_every_partition("nc")
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, client, watcher):
        values = {iid: f"v-{iid}" for iid in ids}
        await start_waiting(client, watcher, "BoxWait", values)
        urls = [await web_url(w) for w in cluster.running]
        async with httpx.AsyncClient(timeout=10) as http:
            listing = (await http.get(f"{urls[0]}/api/v1/instances",
                                      params={"template": "BoxWait", "sort": "created", "limit": 100})).json()  # fmt: skip
            oldest_first = [(i["time_created"], i["id"]) for i in listing["items"]]
            assert sorted(i for _, i in oldest_first) == sorted(ids)
            done = [iid for _, iid in oldest_first[:4]]
            await produce(cluster.bootstrap, cluster.topic("boxes"), [(b"k", {"box_id": [values[i] for i in done]})])
            await watcher.wait_completed(done, timeout=60)
            created = sorted((t for t, _ in oldest_first), reverse=True)

            def expected(limit: int) -> int:
                # Ties with the limit-th newest's creation time are all counted (documented).
                return sum(1 for t in created if t >= created[limit - 1])

            for url in urls:
                five = (await http.get(f"{url}/api/v1/templates/BoxWait/node-counts", params={"limit": 5})).json()
                assert five["scanned"] == expected(5) and five["truncated"] is True, (url, five)
                assert all(set(by) == {"EXECUTING"} for by in five["nodes"].values()), five  # the newest only
                assert {"EXECUTING": expected(5)} in five["nodes"].values()
                ten = (await http.get(f"{url}/api/v1/templates/BoxWait/node-counts", params={"limit": 10})).json()
                assert ten["scanned"] == expected(10) and ten["truncated"] is True, (url, ten)
                assert {"EXECUTING": 8, "COMPLETED": expected(10) - 8} in ten["nodes"].values(), ten
                every = (await http.get(f"{url}/api/v1/templates/BoxWait/node-counts", params={"limit": 12})).json()
                assert every["scanned"] == len(ids) and every["truncated"] is False
        # A client engine (it holds no partition) asks both workers, in the same two rounds.
        part = await client.node_counts("BoxWait", limit=5)
        assert part.scanned == expected(5) and part.truncated is True
        assert all(set(by) == {"EXECUTING"} for by in part.nodes.values())


async def test_workers_show_who_owns_each_partition_and_an_owner_that_stopped_answering(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with corr_cluster(make_cluster, monkeypatch) as (cluster, _client, _watcher):
        first, second = cluster.running
        urls = [await web_url(w) for w in (first, second)]
        async with httpx.AsyncClient(timeout=10) as http:

            async def workers(url: str) -> dict[str, Any]:
                r = await http.get(f"{url}/api/v1/workers")
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                return body

            async def all_active(url: str, count: int) -> dict[str, Any] | None:
                body = await workers(url)
                states = {p["state"] for p in body["partitions"]}
                return body if len(body["workers"]) == count and states == {"active"} else None

            for url in urls:
                body = await wait_until(lambda url=url: all_active(url, 2), 60, 0.2, f"both workers at {url}")
                assert body["workers"][0]["url"] == url  # the worker asked comes first
                held = [set(w["partitions"]) for w in body["workers"]]
                assert held[0] and held[1] and not held[0] & held[1] and held[0] | held[1] == set(range(PARTITIONS))
                by_id = {w["worker"]: set(w["partitions"]) for w in body["workers"]}
                assert all(p["partition"] in by_id[p["worker"]] for p in body["partitions"])
                assert all(w["runtime"] == "kafka" and w["started"] > 0 for w in body["workers"])
            page = await http.get(f"{urls[1]}/ui/workers")
            assert page.status_code == 200 and 'id="partitions-ok"' in page.text
            assert page.text.count('data-state="active"') == PARTITIONS
            dashboard = await http.get(f"{urls[1]}/ui/")
            assert dashboard.status_code == 200 and 'id="dash-partitions"' not in dashboard.text

            # SIGKILL: the owners topic still names the dead worker until the group rebalances.
            dead = {w["worker"] for w in (await workers(urls[0]))["workers"] if w["url"] == urls[1]}
            second.sigkill()

            async def no_answer() -> list[int]:
                rows = (await workers(urls[0]))["partitions"]
                return [p["partition"] for p in rows if p["state"] == "no_answer" and p["worker"] in dead]

            lost = await wait_until(no_answer, 30, 0.1, "the killed worker's partitions as not answering")
            page = await http.get(f"{urls[0]}/ui/workers")
            assert page.status_code == 200 and 'id="partitions-troubled"' in page.text
            assert page.text.count('data-state="no_answer"') == len(lost)
            dashboard = await http.get(f"{urls[0]}/ui/")  # the dashboard warns too
            assert dashboard.status_code == 200 and 'id="dash-partitions"' in dashboard.text
            # The survivor takes them over.
            body = await wait_until(lambda: all_active(urls[0], 1), 120, 0.5, "the survivor holding every partition")
            assert body["workers"][0]["partitions"] == list(range(PARTITIONS))
            second.start()
            await second.wait_ready()
