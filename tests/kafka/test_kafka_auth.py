"""Forwarded reads between Kafka workers whose REST APIs require API tokens.

Two pizza worker processes on one application, each configured by ``$DAGGERFLOW_API_TOKEN``:

- w0 accepts only ``admin:SHARED``; w1 accepts ``read:SHARED`` and its own ``admin:OWN``.
  A worker presents its first admin token: w0 forwards with SHARED, which w1 accepts, so a read
  at w0 of an instance owned by w1 succeeds; w1 forwards with OWN, which w0 refuses, so a read at
  w1 of an instance owned by w0 is a clean 503 (ForwardError), not a 500.
- A client engine with SHARED reads every instance from its owner; one without a token is
  refused with a ForwardError naming the reason.
- Neither token appears in the workers' logs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

pytest.importorskip("aiokafka")

from daggerflow.demo.pizza import TEMPLATE
from daggerflow.errors import ForwardError
from daggerflow.kafka.codec import partition_for
from daggerflow.kafka.owners import OwnersView

from .cluster import Cluster, wait_until

pytestmark = pytest.mark.timeout(300)

SHARED = "shared-T0ken-5d2a9e1f7c3b84"
OWN = "own-T0ken-w1-8e4f0a6b2d9c17"
PARTITIONS = 4


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_workers_sharing_a_token_forward_reads_and_others_are_refused_cleanly(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(partitions=PARTITIONS)
    w0, w1 = cluster.add(), cluster.add()
    w0.env["DAGGERFLOW_API_TOKEN"] = f"admin:{SHARED}"
    w1.env["DAGGERFLOW_API_TOKEN"] = f"admin:{OWN},read:{SHARED}"
    await asyncio.gather(w0.start().wait_ready(), w1.start().wait_ready())
    view = OwnersView(cluster.bootstrap, f"{cluster.app}-owners")
    await view.start()
    try:
        def balanced() -> bool:
            # Both workers in the group and the assignment settled (two partitions each): a
            # view taken while w1 joins would still name w0 for partitions about to move.
            owners = view.owners()
            per_url = Counter(o.url for o in owners.values())
            return len(owners) == PARTITIONS and sorted(per_url.values()) == [PARTITIONS // 2] * 2

        await wait_until(balanced, 60, 0.1, "two partitions owned by each worker")
        url_of = {
            w.name: next(o.url for o in view.owners().values() if f"-{w.pid}-" in o.worker) for w in (w0, w1)
        }
        ids = [f"o{i:03d}" for i in range(16)]
        owner_of = {oid: view.owner(partition_for(oid, PARTITIONS)) for oid in ids}
        on_w0 = [i for i in ids if (o := owner_of[i]) is not None and o.url == url_of["w0"]]
        on_w1 = [i for i in ids if (o := owner_of[i]) is not None and o.url == url_of["w1"]]
        assert on_w0 and on_w1 and len(on_w0) + len(on_w1) == len(ids)

        for key, value in cluster.env(cluster.root / "client").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DAGGERFLOW_API_TOKEN", SHARED)
        from daggerflow.demo import kafka_app

        client = kafka_app.build(role="client")
        monkeypatch.delenv("DAGGERFLOW_API_TOKEN")
        anonymous = kafka_app.build(role="client")
        assert anonymous.config.api_tokens == ()
        async with client, anonymous, httpx.AsyncClient(timeout=10) as http:
            for oid in ids:
                params = {"order_id": oid, "customer_id": "c", "pizza_type": "margherita"}
                await client.create_instance(client.get_template(TEMPLATE), oid, params, submit_task=True)

            async def completed() -> bool:
                # w0's listing merges w1's partitions: forwarded with SHARED.
                r = await http.get(f"{url_of['w0']}/api/v1/instances", params={"status": "COMPLETED", "limit": 1},
                                   headers=bearer(SHARED))  # fmt: skip
                assert r.status_code == 200, r.text
                return bool(r.json()["total"] == len(ids))

            await wait_until(completed, 90, 0.2, f"{len(ids)} COMPLETED, listed at w0")

            # At w0 every instance answers: its own, and w1's through w1's internal route.
            for oid in ids:
                r = await http.get(f"{url_of['w0']}/api/v1/instances/{oid}", headers=bearer(SHARED))
                assert r.status_code == 200, (oid, r.text)
                assert r.json()["status"]["code"] == "COMPLETED"
            # w1 answers for its own; for w0's it presents OWN, which w0 refuses: 503, one JSON error.
            for oid in on_w1:
                own = await http.get(f"{url_of['w1']}/api/v1/instances/{oid}", headers=bearer(SHARED))
                assert own.status_code == 200, (oid, own.text)
            refused = await http.get(f"{url_of['w1']}/api/v1/instances/{on_w0[0]}", headers=bearer(SHARED))
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["type"] == "ForwardError" and body["status"] == 503
            assert "the owner refused this process's API token (401)" in body["error"]
            assert SHARED not in refused.text and OWN not in refused.text
            # The REST API itself still asks for a token.
            assert (await http.get(f"{url_of['w0']}/api/v1/instances/{on_w0[0]}")).status_code == 401
            assert (await http.get(f"{url_of['w1']}/internal/v1/count")).status_code == 401

            # A client engine forwards with its token; one without is refused, cleanly.
            for oid in ids:
                got = await client.get_instance(oid)
                assert got is not None and got.id == oid
            with pytest.raises(ForwardError) as caught:
                await anonymous.get_instance(on_w1[0])
            assert caught.value.status == 401
            assert "the owner refused a read without an API token (401)" in str(caught.value)
    finally:
        await view.stop()
    assert await cluster.stop_all() == [0, 0]
    for worker in (w0, w1):
        log = worker.log(whole=True)
        assert "worker ready" in log
        assert SHARED not in log and OWN not in log
