"""Schedules on the Kafka runtime: a schedule is owned by one partition (by its key, like an
instance), its timer is a durable timer there, and each tick fires exactly once across a
SIGKILL of the worker that owns it: the next owner restores the schedule from the changelog
and catches up (``catch_up="all"``) on the ticks that came due during the failover, and a
tick the killed worker was firing when it died creates the same instance id again, which is
idempotent. The application is ``tests/kafka/sched_app.py`` (a tick every 2 s, each sending
its instance id to ``{app}.ticks`` exactly once)."""

from __future__ import annotations

import calendar
import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from daggerflow.kafka.codec import partition_for
from daggerflow.model.schedule import schedule_key

from .cluster import Worker, read_topic, wait_until

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 4
EVERY = 2


async def web_url(worker: Worker) -> str:
    (started,) = await worker.wait_log(r"started on Kafka as a worker \(web (http://\S+)\)")
    return started.group(1)


def tick_of(iid: str) -> float:
    return float(calendar.timegm(time.strptime(iid.removeprefix("beat-"), "%Y%m%dT%H%M%SZ")))


@pytest.mark.parametrize("store", ["sqlite", "rocksdb"])
async def test_a_schedule_fires_once_per_tick_across_a_sigkill_of_its_owner(
    make_cluster: Callable[..., Any], store: str
) -> None:
    env = {"SCHED_EVERY": str(EVERY), "DAGGERFLOW_STORE": "rocksdb://" if store == "rocksdb" else ""}
    cluster = make_cluster(target="tests.kafka.sched_app:engine", partitions=PARTITIONS, env=env)
    workers = await cluster.start(2)
    urls = {w.name: await web_url(w) for w in workers}
    home = partition_for(schedule_key("beat"), PARTITIONS)
    topic = cluster.topic("ticks")

    async with httpx.AsyncClient(timeout=10) as http:

        async def owner() -> Worker | None:
            for w in cluster.running:
                stats = (await http.get(f"{urls[w.name]}/api/v1/stats")).json()
                if home in stats.get("partitions", []):
                    return w
            return None

        async def ticks() -> list[str]:
            return [r.key.decode() for r in await read_topic(cluster.bootstrap, topic)]

        first = await wait_until(owner, 60, message=f"an owner of partition {home}")
        await wait_until(lambda: _at_least(ticks, 3), 60, message="three ticks before the kill")
        # The schedule is listed by every worker (the owner's, forwarded), with its next ticks.
        other = next(w for w in workers if w is not first)
        listed = (await http.get(f"{urls[other.name]}/api/v1/schedules")).json()["items"]
        assert [s["name"] for s in listed] == ["beat"] and len(listed[0]["next_fire_times"]) == 5
        before = len(await ticks())
        first.sigkill()
        second = await wait_until(owner, 90, message=f"partition {home} to move to {other.name}")
        assert second is other
        await wait_until(lambda: _at_least(ticks, before + 4), 90, message="four more ticks after the failover")
        schedule = (await http.get(f"{urls[other.name]}/api/v1/schedules/beat")).json()

    await other.terminate_and_wait()
    got = await ticks()
    counts = Counter(got)
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}
    times = sorted(tick_of(i) for i in counts)
    gaps = {b - a for a, b in pairwise(times)}
    assert gaps == {float(EVERY)}, (times, cluster.dump_logs())  # every tick, none missed or doubled
    assert schedule["fired"] >= before + 4 and schedule["missed"] == 0
    stores = [p.name for p in (other.datadir / cluster.app).iterdir() if p.name.endswith((".rocks", ".db"))]
    assert stores and all(name.endswith(".rocks") == (store == "rocksdb") for name in stores), stores


async def _at_least(read: Callable[[], Any], n: int) -> bool:
    return len(await read()) >= n


async def test_schedule_actions_from_a_client_reach_the_owner(broker: str, tmp_path: Any) -> None:
    """A ``role="client"`` engine owns no partition: its put, pause, resume and delete go to
    the owner through the events topic, and it reads the result back from the owner's REST API."""
    import uuid

    from daggerflow import Dagger
    from daggerflow.errors import UnknownSchedule

    from ..integration.test_schedules import add_job
    from .cluster import delete_app_topics

    app = f"sched-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = dict(broker=f"kafka://{broker}", application_name=app, kafka_partitions=2)
    worker = Dagger(**options, datadir=str(tmp_path / "w"), web_port=0)
    client = Dagger(**options, datadir=str(tmp_path / "c"), web_port=None, role="client")
    for engine in (worker, client):
        add_job(engine)
    worker.schedule("code", "job", cron="0 3 * * *", timezone="Europe/Paris")
    await worker.start()
    await client.start()
    try:

        async def listed() -> list[str]:
            return [s.name for s in await client.list_schedules()]

        # The definition in code was applied at the worker's start (sent to the owner if its
        # partition was still being activated): the client sees it through the owner's API.
        await wait_until(listed, 30, message="the schedule defined in code, listed by the client")
        assert await listed() == ["code"]
        made = await client.put_schedule("rest", "job", every=3600, runtime_parameters={"a": 1})
        assert made.spec.every == 3600 and made.next_due is not None
        assert (await worker.get_schedule("rest")).spec.runtime_parameters == {"a": 1}
        assert (await client.pause_schedule("rest")).paused
        assert not (await client.resume_schedule("rest")).paused
        await client.delete_schedule("rest")
        with pytest.raises(UnknownSchedule):
            await worker.get_schedule("rest")
        assert [s.name for s in await client.list_schedules()] == ["code"]
    finally:
        await client.stop()
        await worker.stop()
        await delete_app_topics(broker, app)
