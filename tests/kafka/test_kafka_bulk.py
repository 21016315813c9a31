"""A bulk retry on the Kafka runtime (issue #10 §4): 160 FAILURE workflows spread over 4
partitions owned by two workers; a bulk retry job is started through one worker's REST API,
and the other worker is SIGKILLed while its partitions are mid-job. The survivor takes their
partitions over, restores their shares of the job from the changelog and finishes them:
every matched workflow is retried exactly once (each COMPLETED, each command sent exactly
once, read_committed; the job counts every one done and none failed, which a second retry
of an instance, no longer FAILURE, would have counted). The app is ``tests/integration/bulk_worker.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from .cluster import exactly_once, field_counts, read_topic, wait_until

pytestmark = pytest.mark.timeout(300)

N = 160


@pytest.mark.parametrize("store", ["sqlite", "rocksdb"])
async def test_a_bulk_retry_spanning_two_workers_survives_a_sigkill_mid_job(
    make_cluster: Callable[..., Any], tmp_path: Path, store: str
) -> None:
    flag = tmp_path / "gate-closed"
    flag.write_text("closed")
    env = {"BULK_FLAG": str(flag), "BULK_STORE": "rocksdb://" if store == "rocksdb" else ""}
    cluster = make_cluster(target="tests.integration.bulk_worker:engine", partitions=4, env=env)
    workers = await cluster.start(2)
    urls = []
    for w in workers:
        (started,) = await w.wait_log(r"started on Kafka as a worker \(web (http://\S+)\)")
        urls.append(started.group(1))

    async def assignment() -> list[set[int]] | None:
        async with httpx.AsyncClient(timeout=10) as http:
            owned = [set((await http.get(f"{u}/api/v1/stats")).json().get("partitions", [])) for u in urls]
        settled = all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == {0, 1, 2, 3}
        return owned if settled else None

    owned = await wait_until(assignment, 60, message="both workers own partitions")
    victim = workers[1]
    victims = owned[1]
    ids = [f"ship-{n:03d}" for n in range(N)]
    async with httpx.AsyncClient(base_url=urls[0], timeout=30) as http:
        for iid in ids:
            r = await http.post("/api/v1/templates/Ship/instances", json={"id": iid})
            assert r.status_code == 201, r.text

        async def all_failed() -> bool:
            r = await http.get("/api/v1/instances", params={"status": "FAILURE", "limit": 1})
            return r.status_code == 200 and r.json()["total"] == N

        await wait_until(all_failed, 90, message=f"{N} workflows FAILURE")
        flag.unlink()
        body: dict[str, Any] = {"action": "retry", "filter": {"status": "FAILURE", "template": "Ship"}}
        r = await http.post("/api/v1/instances/bulk", json={**body, "dry_run": True})
        assert r.status_code == 200 and r.json() == {"matched": N}, r.text
        r = await http.post("/api/v1/instances/bulk", json={**body, "batch_size": 1})
        assert r.status_code == 200, r.text
        job = r.json()["job"]
        assert r.json()["matched"] == N

        async def victim_mid_job() -> dict[str, Any] | None:
            r = await http.get(f"/api/v1/bulk/{job}")
            if r.status_code != 200:
                return None
            shares = {s["partition"]: s for s in r.json()["shares"]}
            mid = [p for p in victims if p in shares and shares[p]["done"] > 0 and shares[p]["remaining"] > 0]
            return r.json() if mid else None

        at_kill = await wait_until(victim_mid_job, 60, 0.02, "the victim's partitions mid-job")
        # The same job again, asked of the other worker, is refused: the check spans workers.
        # And each worker lists the job with every partition's share.
        async with httpx.AsyncClient(base_url=urls[1], timeout=30) as other:
            again = await other.post("/api/v1/instances/bulk", json={**body, "batch_size": 1})
            listed = (await other.get("/api/v1/bulk")).json()
        assert again.status_code == 409 and job in again.json()["error"], again.text
        assert [j["job"] for j in listed] == [job] and listed[0]["partitions_missing"] == 0, listed
        victim.sigkill()
        print(f"SIGKILLed {victim.name} (partitions {sorted(victims)}) at {at_kill['done']} of {N} done")
        assert at_kill["state"] == "running" and at_kill["remaining"] > 0

        async def job_done() -> dict[str, Any] | None:
            r = await http.get(f"/api/v1/bulk/{job}")
            return r.json() if r.status_code == 200 and r.json()["state"] == "done" else None

        done = await wait_until(job_done, 120, 0.25, "the bulk job done on the survivor")
        assert (done["matched"], done["done"], done["failed"], done["remaining"]) == (N, N, 0, 0), done
        assert sorted(s["partition"] for s in done["shares"]) == [0, 1, 2, 3]

        async def all_completed() -> bool:
            r = await http.get("/api/v1/instances", params={"status": "COMPLETED", "limit": 1})
            return r.status_code == 200 and r.json()["total"] == N

        await wait_until(all_completed, 60, message=f"{N} workflows COMPLETED")
        stats = (await http.get("/api/v1/stats")).json()
        assert set(stats["partitions"]) == {0, 1, 2, 3}, stats
    kinds = {p.suffix for p in (workers[0].datadir / cluster.app).iterdir()} - {".lock", ".db-wal", ".db-shm"}
    assert kinds == {".rocks" if store == "rocksdb" else ".db"}, kinds
    shipped = await read_topic(cluster.bootstrap, cluster.topic("shipped"))
    exactly_once(field_counts(shipped, "id"), ids, "commands sent by the retried workflows")
