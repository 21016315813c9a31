"""Template versions and migrations on the Kafka runtime: two workers of v1 leave instances
waiting in a listener on partitions each of them owns; two workers of v2 take over the same
state, list both versions (counts merged across the workers) and one of them migrates every
instance: those on its own partitions through its pipeline, the others sent to their owner
through the events topic. The listener's messages then complete every instance under v2."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from daggerflow import Dagger
from daggerflow.model.instance import Instance

from ..integration.test_migration import LISTENER, RENAMED, later, orders
from ..integration.test_rest import ORDER_READY, listener_waiting
from .cluster import delete_app_topics

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 4
# The listener topic is not the application's (other runs, other tests use it): ids, which
# are the correlation values, unique to this run.
RUN = uuid.uuid4().hex[:6]
IDS = [f"k{i}-{RUN}" for i in range(10)]
LOST = f"lost-{RUN}"


async def until(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``check`` (group membership has no event to await here) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def owned(engine: Dagger) -> frozenset[int]:
    return engine.runtime.active_partitions  # type: ignore[union-attr, attr-defined, no-any-return]


async def both_own_partitions(a: Dagger, b: Dagger) -> None:
    def split() -> bool:
        pa, pb = owned(a), owned(b)
        return bool(pa) and bool(pb) and not pa & pb and len(pa | pb) == PARTITIONS

    await until(split, "both workers to own partitions")


def workers(broker: str, app: str, tmp_path: Path, version: int) -> list[Dagger]:
    out = []
    for name in ("a", "b"):
        engine = Dagger(broker=f"kafka://{broker}", application_name=app, kafka_partitions=PARTITIONS,
                        datadir=str(tmp_path / name), web_port=0)  # fmt: skip
        orders(engine, version=version)
        later(engine, with_finisher=version == 1)  # v2's deploy lost the Finisher class
        out.append(engine)
    return out


async def test_migrating_listener_waiting_instances_on_partitions_of_two_workers(
    broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = f"migrate-{uuid.uuid4().hex[:8]}"
    try:
        old = workers(broker, app, tmp_path, version=1)
        v1 = old[0].template_dags["orders"].spec.version()
        await asyncio.gather(*(e.start() for e in old))
        try:
            await both_own_partitions(*old)
            for iid in IDS:
                await old[0].template_dags["orders"].create_instance(iid, submit_task=True, order_id=iid)
            await old[0].template_dags["later"].create_instance(LOST, submit_task=True, order_id=LOST)
            for iid in [*IDS, LOST]:
                await old[0].wait_for(iid, listener_waiting, timeout=60)
            later_v1 = old[0].template_dags["later"].spec.version()
        finally:
            for engine in old:
                await engine.stop()

        new = workers(broker, app, tmp_path, version=2)
        v2 = new[0].template_dags["orders"].spec.version()
        caplog.set_level(logging.WARNING, logger="daggerflow")
        await asyncio.gather(*(e.start() for e in new))
        try:
            await both_own_partitions(*new)
            first, second = new
            # Each worker that activated the partition of LOST (the first one to start may have
            # held every partition before the group settled) warned once for that version.
            warnings = [r.getMessage() for r in caplog.records if later_v1 in r.getMessage()]
            assert 1 <= len(warnings) <= 2 and all("task types Finisher" in w for w in warnings), warnings
            assert len({w.split(" in ", 1)[1].split("/p0")[0] for w in warnings}) == len(warnings)
            runtime: Any = first.runtime
            theirs = [i for i in IDS if runtime.partition_of(i) in owned(second)]
            assert theirs and len(theirs) < len(IDS), "the instances should be on both workers' partitions"

            async with httpx.AsyncClient(base_url=str(first.web_url), timeout=30) as client:
                listed = {t["version"]: t for t in (await client.get("/api/v1/templates")).json()}
                assert listed[v1]["running"] == len(IDS) and not listed[v1]["current"]
                assert listed[v2]["current"] and listed[v2]["running"] == 0

                dry = await client.post("/api/v1/migrations", json={
                    "template": "orders", "from_version": v1, "node_map": {LISTENER: RENAMED}, "dry_run": True,
                })  # fmt: skip
                assert dry.status_code == 200, dry.text
                assert dry.json()["matched"] == len(IDS) and dry.json()["migrated"] == len(IDS)

            report = await first.migrate("orders", v1, node_map={LISTENER: RENAMED})
            assert report.migrated == len(IDS), report
            assert sorted(o.id for o in report.instances if o.sent) == sorted(theirs)

            def at_v2(inst: Instance) -> bool:
                return inst.template_version == v2 and listener_waiting(inst)

            for iid in IDS:
                await first.wait_for(iid, at_v2, timeout=60)
            listed_after = {v.version: v for v in await second.template_versions()}
            assert listed_after[v2].running == len(IDS) and listed_after[v1].running == 0

            for iid in IDS:
                await second.append(ORDER_READY, iid, json.dumps({"order_id": iid}))
            for iid in IDS:
                done = await first.wait_for(iid, lambda i: i.status == "COMPLETED", timeout=60)
                assert done.runtime_parameters.get("invoiced") is True, iid

            # The task whose class is gone fails naming it, on whichever worker owns it.
            await first.append(ORDER_READY, LOST, json.dumps({"order_id": LOST}))
            await first.wait_for(LOST, lambda i: i.status == "FAILURE", timeout=60)
            lost = await first.get_instance_state(LOST)
            assert lost is not None
            errors = [n.error for n in lost.nodes.values() if n.type_name == "Finisher"]
            assert errors and "task type 'Finisher' is not registered in this worker" in str(errors[0])
        finally:
            for engine in new:
                await engine.stop()
    finally:
        await delete_app_topics(broker, app)
