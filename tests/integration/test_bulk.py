"""Bulk actions on the embedded runtime (SQLite, or RocksDB with DAGGERFLOW_TEST_STORE=rocksdb):
through the Python API, REST on a real server (``web``/``client``) and the CLI.

``Broken`` fails while ``BROKEN`` says so and counts its runs per instance, so a test can
tell that every matched instance ran again exactly once after a bulk retry.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, ManualClock, TaskInvalidState
from daggerflow.errors import InvalidInput, UnknownJob
from daggerflow.model.bulk import BulkProgress
from daggerflow.store.factory import open_store

from .test_repair import cli, settled
from .test_rest import create, listener_waiting

RUNS: Counter[str] = Counter()
BROKEN = {"on": True}


class Broken(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        RUNS[workflow_instance.id] += 1
        if BROKEN["on"]:
            raise RuntimeError("broken for now")


def add_broken(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    task = helper.generic_executor_task_builder(task_type=Broken, name="Work")
    process = helper.generic_process_builder(process_name="Main", root_task=task)
    engine.add_template("broken", helper.generic_template(template_name="broken", root_process=process))


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    BROKEN["on"] = True


async def failed_instances(engine: Dagger, n: int, prefix: str = "b") -> list[str]:
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    for iid in ids:
        await create(engine, "broken", iid, kind="x" if int(iid[-4:]) % 2 else "y")
    for iid in ids:
        assert (await settled(engine, iid)).status == "FAILURE"
    return ids


async def until_done(engine: Dagger, job: str, timeout: float = 60.0) -> BulkProgress:
    async with asyncio.timeout(timeout):
        while True:
            found = await engine.bulk_job(job)
            if found.state == "done":
                return found
            await asyncio.sleep(0.01)


async def test_dry_run_counts_and_a_retry_job_retries_each_matched_instance_once(
    make_engine: Callable[..., Dagger],
) -> None:
    async with make_engine() as engine:
        add_broken(engine)
        ids = await failed_instances(engine, 30)
        odd = [i for i in ids if int(i[-4:]) % 2]
        dry = await engine.bulk("retry", {"status": "failure", "param.kind": "x"}, dry_run=True)
        assert dry.matched == len(odd) and dry.job is None
        assert all(RUNS[i] == 1 for i in ids)  # the dry run changed nothing
        BROKEN["on"] = False
        started = await engine.bulk("retry", {"status": "FAILURE", "param.kind": "x"}, batch_size=4)
        assert started.matched == len(odd) and started.job is not None
        done = await until_done(engine, started.job)
        assert (done.matched, done.done, done.failed, done.remaining) == (len(odd), len(odd), 0, 0)
        assert done.finished is not None and done.partitions == 1 and done.actor is None
        for iid in ids:
            inst = await settled(engine, iid)
            assert inst.status == ("COMPLETED" if iid in odd else "FAILURE"), iid
            assert RUNS[iid] == (2 if iid in odd else 1), iid
        # A second job over the same instances finds them COMPLETED: each one failed, with a reason.
        again = await engine.bulk("retry", {"template": "broken", "param.kind": "x"})
        assert again.job is not None
        redone = await until_done(engine, again.job)
        assert (redone.done, redone.failed) == (0, len(odd))
        assert "only a FAILURE workflow can be retried" in redone.errors[0]
        assert all(RUNS[i] == (2 if i in odd else 1) for i in ids)


async def test_a_stop_job_stops_waiting_workflows_and_counts_ended_ones_as_failed(
    make_engine: Callable[..., Dagger],
) -> None:
    from .test_rest import register_templates

    async with make_engine() as engine:
        register_templates(engine)
        for n in range(6):
            await create(engine, "orders", f"o{n}", order_id=f"o{n}")
            await settled(engine, f"o{n}", listener_waiting)
        started = await engine.bulk("stop", {"template": "orders"}, actor="ops")
        assert started.job is not None and started.matched == 6
        done = await until_done(engine, started.job)
        assert (done.done, done.failed, done.actor) == (6, 0, "ops")
        for n in range(6):
            assert (await settled(engine, f"o{n}")).status == "STOPPED"
        later = await engine.bulk("stop", {"template": "orders"})
        assert later.job is not None
        assert (await until_done(engine, later.job)).failed == 6


async def test_bad_requests_are_refused_in_the_callers_words(make_engine: Callable[..., Dagger]) -> None:
    async with make_engine() as engine:
        add_broken(engine)
        with pytest.raises(InvalidInput, match="unknown filter bogus"):
            await engine.bulk("retry", {"bogus": 1})
        with pytest.raises(InvalidInput, match="action must be one of"):
            await engine.bulk("restart", {})
        with pytest.raises(InvalidInput, match="batch_size"):
            await engine.bulk("stop", {}, batch_size=0)
        with pytest.raises(UnknownJob):
            await engine.bulk_job("0123456789abcdef")
        with pytest.raises(UnknownJob):
            await engine.bulk_job("../x")


async def test_a_restart_mid_job_resumes_it_and_acts_on_each_instance_once(
    make_engine: Callable[..., Dagger], tmp_path: Path
) -> None:
    engine = make_engine()
    add_broken(engine)
    async with engine:
        ids = await failed_instances(engine, 40)
        BROKEN["on"] = False
        started = await engine.bulk("retry", {"template": "broken"}, batch_size=1)
        assert started.job is not None
        async with asyncio.timeout(30):
            while (await engine.bulk_job(started.job)).done < 5:
                await asyncio.sleep(0)
    # Stopped mid-job: the next steps were not queued; what was committed stays done.
    store = open_store(engine.config.store, datadir=str(tmp_path), application_name="dagger")
    try:
        share = store.bulk_share(started.job)
        assert share is not None and 5 <= share.done < 40 and share.finished is None, share
        assert len(store.bulk_items(started.job, 100)) == share.remaining
    finally:
        store.close()
    again = make_engine()
    add_broken(again)
    async with again:
        done = await until_done(again, started.job)
        assert (done.done, done.failed, done.remaining) == (40, 0, 0)
        for iid in ids:
            assert (await settled(again, iid)).status == "COMPLETED"
    assert all(RUNS[i] == 2 for i in ids), {i: RUNS[i] for i in ids if RUNS[i] != 2}


async def test_normal_work_goes_on_while_a_big_job_runs(make_engine: Callable[..., Dagger]) -> None:
    from .test_rest import register_templates

    async with make_engine() as engine:
        add_broken(engine)
        register_templates(engine)
        await failed_instances(engine, 300)
        BROKEN["on"] = False
        started = await engine.bulk("retry", {"template": "broken"}, batch_size=1)
        assert started.job is not None
        # A new workflow is created, waits for its message and completes while the job runs.
        await create(engine, "orders", "fresh", order_id="fresh")
        await settled(engine, "fresh", listener_waiting)
        await engine.append("order_ready", None, '{"order_id": "fresh"}')
        assert (await settled(engine, "fresh", lambda i: i.status == "COMPLETED")).status == "COMPLETED"
        meanwhile = await engine.bulk_job(started.job)
        assert meanwhile.state == "running" and meanwhile.remaining > 0, meanwhile
        assert (await until_done(engine, started.job)).done == 300


async def test_rest_bulk_dry_run_job_progress_and_errors(web: Dagger, client: httpx.AsyncClient) -> None:
    add_broken(web)
    ids = await failed_instances(web, 12)
    r = await client.post("/api/v1/instances/bulk", json={"action": "retry", "filter": {"status": "FAILURE"},
                                                         "dry_run": True})  # fmt: skip
    assert r.status_code == 200 and r.json() == {"matched": 12}, r.text
    for body, needle in (
        ({"action": "retry", "filter": {"nope": "1"}}, "unknown filter nope"),
        ({"action": "retry", "filter": {"created_after": "yesterday"}}, "created_after"),
        ({"action": "explode", "filter": {}}, "action"),
        ({"action": "stop", "filter": [1]}, "filter"),
        ({"action": "stop", "unknown": 1}, "unknown"),
    ):
        r = await client.post("/api/v1/instances/bulk", json=body)
        assert r.status_code == 400 and needle in r.json()["error"], (body, r.text)
        if isinstance(body.get("filter"), dict) and body["filter"]:
            assert r.json()["filter"] == next(iter(body["filter"])), r.text
    BROKEN["on"] = False
    slow = {"action": "retry", "filter": {"status": "FAILURE"}, "batch_size": 1}
    r = await client.post("/api/v1/instances/bulk", json=slow, params={"actor": "ops"})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert r.json()["matched"] == 12
    second = await client.post("/api/v1/instances/bulk", json=slow)
    if second.status_code != 409:  # only if the first job had finished already
        assert second.status_code == 200 and (await web.bulk_job(job)).state == "done"
    else:
        assert job in second.json()["error"]
    async with asyncio.timeout(30):
        while (p := (await client.get(f"/api/v1/bulk/{job}")).json())["state"] != "done":
            await asyncio.sleep(0.01)
    assert (p["matched"], p["done"], p["failed"], p["remaining"], p["actor"]) == (12, 12, 0, 0, "ops"), p
    assert p["shares"] == [{"partition": 0, "matched": 12, "done": 12, "failed": 0, "remaining": 0,
                            "finished": p["finished"]}]  # fmt: skip
    assert all(RUNS[i] == 2 for i in ids)
    assert (await client.get("/api/v1/bulk/0123456789abcdef")).status_code == 404
    assert (await client.get("/api/v1/bulk/nope")).status_code == 404
    document = (await client.get("/openapi.json")).json()
    assert "/api/v1/instances/bulk" in document["paths"] and "/api/v1/bulk/{job}" in document["paths"]


async def test_cli_bulk_retry_and_stop(web: Dagger) -> None:
    from .test_rest import register_templates  # noqa: F401  (the web fixture registered them)

    url = web.web_url
    assert url is not None
    add_broken(web)
    ids = await failed_instances(web, 5)
    code, out = await cli(url, "retry", "--filter", "status=FAILURE", "--filter", "template=broken", "--dry-run")
    assert code == 0 and "5 instances match" in out, out
    code, out = await cli(url, "retry", "--filter", "bogus=1")
    assert code == 2 and "unknown filter bogus" in out, out
    code, out = await cli(url, "retry", "--filter", "status")
    assert code == 2 and "NAME=VALUE" in out, out
    code, out = await cli(url, "retry", "x1", "--filter", "status=FAILURE")
    assert code == 2 and "no INSTANCE_ID" in out, out
    BROKEN["on"] = False
    code, out = await cli(url, "retry", "--filter", "status=FAILURE")
    assert code == 0 and "5 instances matched" in out and "done: done 5, failed 0, remaining 0" in out, out
    assert all(RUNS[i] == 2 for i in ids)
    for n in range(3):
        await create(web, "orders", f"s{n}", order_id=f"s{n}")
        await settled(web, f"s{n}", listener_waiting)
    code, out = await cli(url, "stop", "--filter", "template=orders", "--no-wait")
    assert code == 0 and "bulk stop job" in out, out
    code, out = await cli(url, "stop", "--filter", "template=orders", "--filter", "status=STOPPED", "--json")
    assert code == 0 and '"state": "done"' in out, out
    for n in range(3):
        assert (await settled(web, f"s{n}", lambda i: i.status == "STOPPED")).status == "STOPPED"
    await create(web, "orders", "one", order_id="one")
    code, out = await cli(url, "stop", "one")
    assert code == 0 and "stopped one (STOPPED)" in out, out


async def test_a_bulk_job_refuses_a_second_one_like_it_while_it_runs(
    make_engine: Callable[..., Dagger], clock: ManualClock
) -> None:
    async with make_engine(clock=clock) as engine:
        add_broken(engine)
        await failed_instances(engine, 50)
        BROKEN["on"] = False
        first = await engine.bulk("retry", {"status": "FAILURE"}, batch_size=1)
        with pytest.raises(TaskInvalidState, match=str(first.job)):
            await engine.bulk("retry", {"status": "failure"})
        other = await engine.bulk("stop", {"status": "FAILURE"}, dry_run=True)
        assert other.job is None
        assert first.job is not None
        assert (await until_done(engine, first.job)).done == 50


async def test_bulk_jobs_are_listed_newest_first_by_python_rest_and_cli(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    add_broken(web)
    await failed_instances(web, 4)
    BROKEN["on"] = False
    first = await web.bulk("retry", {"status": "FAILURE", "param.kind": "x"}, actor="ops")
    assert first.job is not None
    await until_done(web, first.job)
    clock.advance(1)  # the engine's clock orders the jobs: one started at the same instant would tie
    second = await web.bulk("retry", {"status": "FAILURE", "param.kind": "y"})
    assert second.job is not None
    await until_done(web, second.job)
    listed = await web.bulk_jobs()
    assert [j.job for j in listed] == [second.job, first.job]
    assert [(j.state, j.matched, j.done, j.partitions_missing) for j in listed] == [("done", 2, 2, 0)] * 2
    assert [j.job for j in await web.bulk_jobs(limit=1)] == [second.job]
    with pytest.raises(InvalidInput, match="limit"):
        await web.bulk_jobs(limit=0)
    r = await client.get("/api/v1/bulk")
    assert r.status_code == 200, r.text
    assert [(j["job"], j["state"], j["actor"]) for j in r.json()] == [(second.job, "done", None),
                                                                      (first.job, "done", "ops")]  # fmt: skip
    assert [j["job"] for j in (await client.get("/api/v1/bulk", params={"limit": 1})).json()] == [second.job]
    assert (await client.get("/api/v1/bulk", params={"limit": 0})).status_code == 400
    assert "/api/v1/bulk" in (await client.get("/openapi.json")).json()["paths"]
    url = web.web_url
    assert url is not None
    code, out = await cli(url, "bulk")
    assert code == 0 and first.job in out and second.job in out and "param.kind=y" in out, out
    code, out = await cli(url, "bulk", first.job, "--json")
    assert code == 0 and '"state": "done"' in out, out


def test_a_job_whose_start_missed_partitions_is_incomplete_after_the_grace() -> None:
    from daggerflow.model.bulk import START_GRACE, BulkShare, BulkSpec, progress

    spec = BulkSpec(id="0123456789abcdef", action="retry", filter={}, created=1000.0)
    shares = [BulkShare(spec=spec, partition=p, matched=3, done=3, finished=1001.0) for p in (0, 2)]
    assert progress(spec, [], 4, 1001.0).state == "starting"
    soon = progress(spec, shares, 4, 1001.0)
    assert (soon.state, soon.partitions_missing, soon.done) == ("running", 2, 6)
    late = progress(spec, shares, 4, 1000.0 + START_GRACE)
    assert (late.state, late.partitions_missing) == ("incomplete", 2)
    assert progress(spec, [], 4, 1000.0 + START_GRACE).state == "incomplete"
    every = [BulkShare(spec=spec, partition=p, matched=1, done=1, finished=1001.0) for p in range(4)]
    assert progress(spec, every, 4, 5000.0).state == "done"


async def test_a_start_that_did_not_reach_a_partition_is_incomplete_and_sent_again_by_the_same_call(
    make_engine: Callable[..., Dagger], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daggerflow.model.bulk import START_GRACE

    async with make_engine(clock=clock) as engine:
        add_broken(engine)
        ids = await failed_instances(engine, 6)
        BROKEN["on"] = False
        runtime = engine.runtime
        assert runtime is not None
        real_start = runtime.bulk_start
        sent: list[str] = []

        async def lost(spec: Any) -> int | None:  # the start never reaches the partition
            sent.append(spec.id)
            return None

        monkeypatch.setattr(runtime, "bulk_start", lost)
        first = await engine.bulk("retry", {"status": "FAILURE"})
        assert first.job is not None and sent == [first.job]
        assert (await engine.bulk_job(first.job)).state == "starting"
        with pytest.raises(TaskInvalidState, match=first.job):  # refused while it may still arrive
            await engine.bulk("retry", {"status": "FAILURE"})
        clock.advance(START_GRACE)
        late = await engine.bulk_job(first.job)
        assert (late.state, late.partitions_missing) == ("incomplete", 1)
        monkeypatch.setattr(runtime, "bulk_start", real_start)
        again = await engine.bulk("retry", {"status": "FAILURE"})
        assert again.job == first.job
        done = await until_done(engine, first.job)
        assert (done.matched, done.done, done.partitions_missing) == (6, 6, 0)
        assert all(RUNS[i] == 2 for i in ids)
