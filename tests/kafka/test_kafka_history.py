"""The history on the Kafka runtime: two pizza workers; every worker's REST API (and a client
engine without one) answers with the history its owner holds, the same everywhere; after the
owner of some instances is SIGKILLed, the survivor restores their history (record tails and
store rows) from the changelog with the rest of the state."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from daggerflow.demo.pizza import TEMPLATE
from daggerflow.kafka.codec import partition_for
from daggerflow.model.history import FLUSH_ENTRIES

from .cluster import Cluster, wait_until
from .test_owners import pizza_cluster

pytestmark = pytest.mark.timeout(300)

PATCHES = FLUSH_ENTRIES + 4  # a parked instance's history: a store row and a tail


async def history(http: httpx.AsyncClient, url: str, iid: str) -> list[dict[str, Any]]:
    r = await http.get(f"{url}/api/v1/instances/{iid}/history", params={"limit": 1000})
    assert r.status_code == 200, (url, iid, r.status_code, r.text)
    body = r.json()
    assert body["next"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_history_through_any_worker_and_after_a_failover(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"h{i:03d}" for i in range(12)]
    async with pizza_cluster(make_cluster, monkeypatch, ids) as (cluster, view, client, http):
        urls = view.urls()
        # Parked instances (not submitted) patched many times: their history fills a row.
        parked = ["park-a", "park-b", "park-c", "park-d"]
        for pid in parked:
            params = {"order_id": pid, "customer_id": "c", "pizza_type": "margherita"}
            await client.create_instance(client.get_template(TEMPLATE), pid, params, submit_task=False)

            async def created(pid: str = pid) -> bool:
                return (await http.get(f"{urls[0]}/api/v1/instances/{pid}")).status_code == 200

            await wait_until(created, 60, 0.1, f"{pid} created")
            # Through each worker in turn: the owner applies its own patch only after the one
            # the other worker sent it just before (the order is checked below).
            applied = 0
            for n in range(PATCHES):
                r = await http.patch(f"{urls[n % 2]}/api/v1/instances/{pid}/parameters", params={"actor": f"op{n}"},
                                     json={"n": n})  # fmt: skip
                assert r.status_code == 200, r.text
                applied += r.json()["runtime_parameters"].get("n") == n
            # The owner's answers show their patch applied (it did not fall back to the topic).
            assert applied >= PATCHES // 2, applied

            async def patched(pid: str = pid) -> bool:
                return len(await history(http, urls[0], pid)) == PATCHES + 1

            await wait_until(patched, 60, 0.2, f"{pid}'s patches applied")

        before: dict[str, list[dict[str, Any]]] = {}
        for iid in ids + parked:
            seen = [await history(http, url, iid) for url in urls]
            assert seen[0] == seen[1], iid  # the owner's and the forwarded answer agree
            before[iid] = seen[0]
            page = await client.history(iid, limit=1000)  # a client engine: forwarded as well
            assert len(page.items) == len(seen[0])
        for iid in ids:
            events = [e["event"] for e in before[iid]]
            assert events[0] == "create" and "deliver" in events, events
            delivered = next(e for e in before[iid] if e["event"] == "deliver")
            assert delivered["partition"] >= 0 and delivered["offset"] >= 0 and delivered["topic"]
            assert before[iid][-1]["changes"][-1] == {"node": iid, "from": "EXECUTING", "to": "COMPLETED"}
        for pid in parked:
            assert [e["actor"] for e in before[pid][1:]] == [f"op{n}" for n in range(PATCHES)]
        r = await http.get(f"{urls[0]}/api/v1/instances/nope/history")
        assert r.status_code == 404 and "nope" in r.json()["error"]
        assert (await http.get(f"{urls[1]}/api/v1/instances/h000/history", params={"after": "x"})).status_code == 400

        # The owner of most parked instances dies (their rows must come back); the survivor
        # restores their state from the changelog.
        w0, w1 = cluster.workers
        owners = view.owners()
        victim, survivor = (w1, w0) if _owned(owners, w1.pid, parked) >= _owned(owners, w0.pid, parked) else (w0, w1)
        assert _owned(owners, victim.pid, parked) >= 2
        survivor_url = next(o.url for o in owners.values() if f"-{survivor.pid}-" in o.worker)
        assert survivor_url is not None
        victim.sigkill()
        await wait_until(lambda: view.urls() == [survivor_url], 90, 0.2, "the survivor to own everything")

        async def same(iid: str) -> bool:
            r = await http.get(f"{survivor_url}/api/v1/instances/{iid}/history", params={"limit": 1000})
            assert r.status_code in (200, 503), (iid, r.status_code, r.text)
            return r.status_code == 200 and r.json()["items"] == before[iid]

        for iid in ids + parked:
            await wait_until(functools.partial(same, iid), 60, 0.1, f"{iid}'s history from the survivor")
    assert await cluster.stop_all() == [0]


def _owned(owners: dict[int, Any], pid: int, ids: list[str]) -> int:
    mine = {p for p, o in owners.items() if f"-{pid}-" in o.worker}
    return sum(partition_for(i, 6) in mine for i in ids)
