"""The console on the Kafka runtime: the console of either worker shows every instance,
whichever worker owns it (it reads through the REST API, which asks the owners), and opens
an instance that the other worker owns."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

pytest.importorskip("aiokafka")

from daggerflow.kafka.codec import partition_for

from .cluster import Cluster
from .test_owners import pizza_cluster

pytestmark = pytest.mark.timeout(300)


async def test_each_workers_console_lists_and_opens_the_instances_of_both(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"k{i:02d}" for i in range(16)]
    async with pizza_cluster(make_cluster, monkeypatch, ids) as (cluster, view, _client, http):
        urls = view.urls()
        assert len(urls) == 2
        owner = {i: view.owner(partition_for(i, 6)).url for i in ids}  # type: ignore[union-attr]
        assert set(owner.values()) == set(urls)
        for url in urls:
            page = await http.get(f"{url}/ui/instances", params={"limit": 50})
            assert page.status_code == 200, page.text
            listed = set(re.findall(r'href="/ui/instances/(k\d\d)"', page.text))
            assert listed == set(ids)
            # An instance the other worker owns opens here too.
            other = next(i for i in ids if owner[i] != url)
            detail = await http.get(f"{url}/ui/instances/{other}")
            assert detail.status_code == 200 and other in detail.text and "COMPLETED" in detail.text.upper()
            whoami = (await http.get(f"{url}/api/v1/whoami")).json()
            assert whoami["runtime"] == "kafka" and whoami["test_messages"] is False
    assert await cluster.stop_all() == [0, 0]
