"""Schedules on the embedded runtime (real SQLite files, or RocksDB with
DAGGERFLOW_TEST_STORE=rocksdb), with an injected clock: nothing sleeps for a tick. Fires,
deterministic ids, a restart without a double fire, the catch-up modes after a simulated
downtime, pause/resume, delete, and the REST routes and CLI with their refusals."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, ManualClock
from daggerflow.errors import InvalidSchedule, TaskInvalidState, TemplateDoesNotExist, UnknownSchedule
from daggerflow.model.schedule import Schedule, tick_instance_id

START = 1_700_000_000.0  # ManualClock's start; every=60 ticks are multiples of 60: the first is START + 40


class Work(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["ran"] = runtime_parameters.get("ran", 0) + 1


def add_job(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="Main", root_task=helper.generic_executor_task_builder(task_type=Work, name="Main")
    )
    engine.add_template("job", helper.generic_template(template_name="job", root_process=process))


async def until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Await a condition of committed state (the processor runs on this loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def ids(engine: Dagger) -> list[str]:
    return sorted(i.id for i in engine.list_instances(limit=1000))


async def fired(engine: Dagger, name: str, count: int) -> Schedule:
    async def check() -> Schedule | None:
        s = await engine.get_schedule(name)
        return s if s.fired >= count else None

    deadline = asyncio.get_running_loop().time() + 5
    while (found := await check()) is None:
        assert asyncio.get_running_loop().time() < deadline, await engine.get_schedule(name)
        await asyncio.sleep(0.005)
    return found


def engine_with(make_engine: Callable[..., Dagger], clock: ManualClock, **schedule: Any) -> Dagger:
    engine = make_engine(clock=clock)
    add_job(engine)
    if schedule:
        engine.schedule("s", "job", **schedule)
    return engine


async def test_fires_once_per_tick_with_deterministic_ids_and_survives_a_restart(
    make_engine: Callable[..., Dagger], clock: ManualClock
) -> None:
    engine = engine_with(make_engine, clock, every=60, runtime_parameters={"who": "cron"})
    async with engine:
        s = await engine.get_schedule("s")
        assert s.next_due == START + 40 and s.fired == 0 and ids(engine) == []
        clock.advance(40)
        s = await fired(engine, "s", 1)
        first = tick_instance_id("s", START + 40)
        assert s.last_instance == first and s.last_fired == START + 40 and s.next_due == START + 100
        done = await engine.wait_for(first, timeout=5)
        assert done.status.code == "COMPLETED" and done.runtime_parameters == {"who": "cron", "ran": 1}
        created = (await engine.history(first)).items[0]
        assert created.event == "create" and created.actor == "schedule:s"  # which schedule made it
        clock.advance(60)
        await fired(engine, "s", 2)
        assert ids(engine) == [first, tick_instance_id("s", START + 100)]
        assert engine.next_fire_times(await engine.get_schedule("s"), 3) == [START + 160, START + 220, START + 280]
    # A restart with the definition in code again: applied idempotently, nothing fires twice.
    again = engine_with(make_engine, clock, every=60, runtime_parameters={"who": "cron"})
    async with again:
        s = await again.get_schedule("s")
        assert s.fired == 2 and s.next_due == START + 160 and len(ids(again)) == 2
        clock.advance(60)
        await fired(again, "s", 3)
        assert len(ids(again)) == 3


@pytest.mark.parametrize(("mode", "expected"), [("skip", 0), ("one", 1), ("all", 10)])
async def test_catch_up_after_a_downtime(
    make_engine: Callable[..., Dagger], clock: ManualClock, mode: str, expected: int
) -> None:
    async with engine_with(make_engine, clock, every=60, catch_up=mode) as engine:
        assert (await engine.get_schedule("s")).next_due == START + 40
    clock.set(START + 40 + 9 * 60 + 45)  # down for ten ticks; the last one 45 s ago (late, for skip)
    async with engine_with(make_engine, clock, every=60, catch_up=mode) as engine:
        # The overdue timer fires at start: the catch-up mode decides what it creates.
        s = await until(lambda: next((x for x in engine.local_schedules() if x.next_due == START + 640), None))
        assert s.fired == expected and s.missed == 10 - expected
        got = ids(engine)
        assert len(got) == expected
        if mode == "one":
            assert got == [tick_instance_id("s", START + 40 + 9 * 60)]
        if mode == "all":
            assert got == sorted(tick_instance_id("s", START + 40 + k * 60) for k in range(10))


async def test_pause_resume_and_delete(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    async with engine_with(make_engine, clock) as engine:
        s = await engine.put_schedule("p", "job", every=60, catch_up="one")
        assert not s.paused and s.next_due == START + 40
        paused = await engine.pause_schedule("p")
        assert paused.paused and engine.next_fire_times(paused) == []
        clock.advance(200)  # three ticks while paused: none fires
        await asyncio.sleep(0.05)
        assert ids(engine) == [] and (await engine.get_schedule("p")).fired == 0
        resumed = await engine.resume_schedule("p")  # catch_up="one": the latest missed tick, once
        assert not resumed.paused and resumed.fired == 1 and resumed.missed == 2
        assert ids(engine) == [tick_instance_id("p", START + 160)] and resumed.next_due == START + 220
        # A re-put of the same definition does not resume a paused schedule.
        await engine.pause_schedule("p")
        assert (await engine.put_schedule("p", "job", every=60, catch_up="one")).paused
        await engine.delete_schedule("p")
        with pytest.raises(UnknownSchedule):
            await engine.get_schedule("p")
        with pytest.raises(UnknownSchedule):
            await engine.pause_schedule("p")
        clock.advance(600)
        await asyncio.sleep(0.05)
        assert len(ids(engine)) == 1 and await engine.list_schedules() == []


async def test_cron_in_a_time_zone_and_updates(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    async with engine_with(make_engine, clock) as engine:
        s = await engine.put_schedule("c", "job", cron="30 9 * * *", timezone="Europe/Paris")
        assert s.next_due == 1_700_037_000.0  # 2023-11-15 09:30 in Paris (08:30 UTC)
        # Parameters changed: the next tick stays; timing changed: it moves.
        s2 = await engine.put_schedule("c", "job", cron="30 9 * * *", timezone="Europe/Paris",
                                       runtime_parameters={"k": 1})  # fmt: skip
        assert s2.next_due == s.next_due and s2.spec.runtime_parameters == {"k": 1}
        s3 = await engine.put_schedule("c", "job", cron="30 9 * * *", timezone="UTC")
        assert s3.next_due == 1_700_040_600.0


async def test_invalid_definitions_are_refused(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = engine_with(make_engine, clock)
    for kwargs in ({"cron": "*/5 * * *"}, {"cron": "0 25 * * *"}, {"every": 0}, {"every": 1.5},
                   {"every": 60, "timezone": "Nowhere/City"}, {"every": 60, "catch_up": "most"},
                   {"cron": "* * * * *", "every": 60}, {}):  # fmt: skip
        with pytest.raises(InvalidSchedule):
            engine.schedule("bad", "job", **kwargs)
    with pytest.raises(InvalidSchedule):
        engine.schedule("a/b", "job", every=60)
    with pytest.raises(TemplateDoesNotExist):
        engine.schedule("x", "no-such-template", every=60)
    async with engine:
        with pytest.raises(TaskInvalidState, match="put_schedule"):
            engine.schedule("late", "job", every=60)


async def test_rest_routes(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = make_engine(clock=clock, web_port=0)
    add_job(engine)
    async with engine, httpx.AsyncClient(base_url=engine.web_url or "", timeout=10) as client:
        body = {"name": "r", "template": "job", "every": 60, "catch_up": "all", "runtime_parameters": {"a": 1}}
        r = await client.post("/api/v1/schedules", json=body)
        assert r.status_code == 200, r.text
        info = r.json()
        assert info["name"] == "r" and info["paused"] is False and len(info["next_fire_times"]) == 5
        assert info["next_fire_times"][0] == "2023-11-14T22:14:00+00:00" and info["last_fired"] is None
        clock.advance(40)
        await fired(engine, "r", 1)
        r = await client.get("/api/v1/schedules")
        assert r.status_code == 200
        [item] = r.json()["items"]
        assert item["last_fired"] == "2023-11-14T22:14:00+00:00" and item["last_instance"] == "r-20231114T221400Z"
        assert (await client.get("/api/v1/schedules/r")).json()["fired"] == 1
        r = await client.post("/api/v1/schedules/r/pause")
        assert r.status_code == 200 and r.json()["paused"] is True and r.json()["next_fire_times"] == []
        r = await client.post("/api/v1/schedules/r/resume", params={"actor": "ops"})
        assert r.status_code == 200 and r.json()["paused"] is False and r.json()["updated_by"] == "ops"
        for bad, needle in (({"cron": "nope"}, "five fields"), ({"cron": "99 * * * *"}, "not valid"),
                            ({"every": 60, "timezone": "Mars/Base"}, "time zone"), ({"every": 0}, "every"),
                            ({"every": 5, "catch_up": "x"}, "catch_up"), ({}, "exactly one")):  # fmt: skip
            r = await client.post("/api/v1/schedules", json={"name": "bad", "template": "job", **bad})
            assert r.status_code == 400, (bad, r.text)
            assert needle in r.json()["error"] and r.json()["type"] == "InvalidSchedule"
        r = await client.post("/api/v1/schedules", json={"name": "bad", "template": "nope", "every": 5})
        assert r.status_code == 404
        r = await client.post("/api/v1/schedules", json={"name": "bad", "template": "job", "every": 5, "x": 1})
        assert r.status_code == 400  # unknown field
        assert (await client.get("/api/v1/schedules/nope")).status_code == 404
        assert (await client.post("/api/v1/schedules/nope/pause")).status_code == 404
        assert (await client.delete("/api/v1/schedules/nope")).status_code == 404
        r = await client.delete("/api/v1/schedules/r")
        assert r.status_code == 200 and r.json() == {"name": "r", "deleted": True}
        assert (await client.get("/api/v1/schedules")).json() == {"items": []}
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert {"get", "post"} <= set(paths["/api/v1/schedules"]) and "delete" in paths["/api/v1/schedules/{name}"]
        assert "post" in paths["/api/v1/schedules/{name}/pause"] and "post" in paths["/api/v1/schedules/{name}/resume"]


async def cli(url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daggerflow", "schedules", *args, "--url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = make_engine(clock=clock, web_port=0)
    add_job(engine)
    async with engine:
        url = engine.web_url or ""
        code, out = await cli(url, "add", "nightly", "job", "--cron", "0 2 * * *", "--timezone", "Europe/Paris",
                              "--param", "n=3", "--param", "who=cli", "--catch-up", "one")  # fmt: skip
        assert code == 0 and "scheduled nightly" in out, out
        s = await engine.get_schedule("nightly")
        assert s.spec.runtime_parameters == {"n": 3, "who": "cli"} and s.spec.catch_up == "one"
        code, out = await cli(url)
        assert code == 0 and "nightly" in out and "1 schedule(s)" in out, out
        code, out = await cli(url, "list", "--json")
        assert code == 0 and '"nightly"' in out, out
        code, out = await cli(url, "pause", "nightly")
        assert code == 0 and "paused nightly" in out, out
        code, out = await cli(url, "resume", "nightly")
        assert code == 0 and "resumed nightly" in out, out
        code, out = await cli(url, "add", "bad", "job", "--cron", "61 * * * *")
        assert code == 1 and "HTTP 400" in out and "Traceback" not in out, out
        code, out = await cli(url, "add", "bad", "job")
        assert code == 2 and "exactly one of --cron and --every" in out, out
        code, out = await cli(url, "add", "bad", "job", "--every", "5", "--params", "[1]")
        assert code == 2 and "JSON object" in out, out
        code, out = await cli(url, "delete", "nope")
        assert code == 1 and "HTTP 404" in out and "Traceback" not in out, out
        code, out = await cli(url, "delete", "nightly")
        assert code == 0 and "deleted schedule nightly" in out, out
        assert await engine.list_schedules() == []


async def test_a_tick_whose_template_is_gone_records_why(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    async with engine_with(make_engine, clock, every=60) as engine:
        assert (await engine.get_schedule("s")).fired == 0
    bare = make_engine(clock=clock)  # a deploy without the template: the stored schedule still ticks
    async with bare:
        clock.advance(40)
        s = await until(lambda: next((x for x in bare.local_schedules() if x.last_error), None))
        assert "TemplateDoesNotExist" in (s.last_error or "") and s.fired == 0 and s.next_due == START + 100
        assert ids(bare) == []
