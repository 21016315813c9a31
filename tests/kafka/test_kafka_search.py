"""Search on the Kafka runtime: two workers share six partitions; a parameter search asked of
either worker (REST, and a client engine's Python API) returns every match exactly once,
merged across the partitions both own, newest first (or in the order asked for)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from daggerflow.kafka.codec import partition_for

from .cluster import Cluster
from .test_owners import created, pizza_cluster

pytestmark = pytest.mark.timeout(300)


def customer(oid: str) -> str:
    return "even" if int(oid[1:]) % 2 == 0 else "odd"


async def test_search_across_partitions_of_two_workers(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"o{i:03d}" for i in range(30)]
    async with pizza_cluster(make_cluster, monkeypatch, ids, customer) as (cluster, view, client, http):
        urls = view.urls()
        assert len(urls) == 2
        everything = (await http.get(f"{urls[0]}/api/v1/instances", params={"limit": 1000})).json()
        newest_first = sorted(ids, key=lambda i: (created(everything, i), i), reverse=True)
        even = [i for i in newest_first if customer(i) == "even"]
        # The matches live on partitions of both workers.
        owners = {view.owner(partition_for(i, 6)).url for i in even}  # type: ignore[union-attr]
        assert owners == set(urls), owners
        for url in urls:
            r = await http.get(f"{url}/api/v1/instances", params={"param.customer_id": "even", "limit": 1000})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            assert [i["id"] for i in body["items"]] == even and body["total"] == len(even)
            # The listener's correlatable key is indexed by default; AND with a status.
            one = await http.get(f"{url}/api/v1/instances", params={"param.order_id": "o007", "status": "COMPLETED"})
            assert [i["id"] for i in one.json()["items"]] == ["o007"]
            # Paging over the merged order, oldest first on request.
            pages = []
            for offset in range(0, len(even), 4):
                page = await http.get(
                    f"{url}/api/v1/instances",
                    params={"param.customer_id": "even", "sort": "created", "limit": 4, "offset": offset},
                )
                pages.extend(i["id"] for i in page.json()["items"])
            assert pages == even[::-1]
            bad = await http.get(f"{url}/api/v1/instances", params={"colour": "red"})
            assert bad.status_code == 400 and "colour" in bad.json()["error"]
        # A client engine (owns nothing) asks both workers.
        found = await client.list_instances_async(params={"customer_id": "odd"}, limit=1000)
        assert [i.id for i in found] == [i for i in newest_first if customer(i) == "odd"]
        assert await client.count_instances_async(params={"customer_id": "odd"}) == len(ids) - len(even)
    assert await cluster.stop_all() == [0, 0]
