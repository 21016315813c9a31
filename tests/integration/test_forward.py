"""Forwarded reads over real HTTP: two embedded engines (in-memory stores, uvicorn on free ports)
stand in for two workers each owning some instances; the Forwarder asks their internal routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, ManualClock
from daggerflow.errors import NotOwner
from daggerflow.kafka.remote import (
    Forwarder,
    ForwardError,
    count_everywhere,
    list_everywhere,
    list_order,
)
from daggerflow.model.instance import Instance
from daggerflow.model.query import InstanceQuery

ASC = InstanceQuery(sort="created")  # oldest first: the order these lists were written for


class Quick(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


class Boom(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        raise RuntimeError("kitchen on fire")


def register(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    for name, task in (("quick", Quick), ("boom", Boom)):
        process = helper.generic_process_builder(
            process_name="Main",
            root_task=helper.generic_executor_task_builder(task_type=task, name="Main"),
        )
        engine.add_template(name, helper.generic_template(template_name=name, root_process=process))


async def start(engine_class: type[Dagger], clock: ManualClock) -> Dagger:
    engine = engine_class(store="memory://", web_port=0, clock=clock)
    register(engine)
    await engine.start()
    return engine


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def workers(clock: ManualClock) -> AsyncIterator[tuple[Dagger, Dagger]]:
    a = await start(Dagger, clock)
    b = await start(Dagger, clock)
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def fwd() -> AsyncIterator[Forwarder]:
    f = Forwarder(timeout=5.0)
    try:
        yield f
    finally:
        await f.close()


def url(engine: Dagger) -> str:
    assert engine.web_url is not None
    return engine.web_url


async def create(engine: Dagger, template: str, iid: str, **params: Any) -> None:
    await engine.template_dags[template].create_instance(iid, submit_task=True, **params)
    await engine.wait_for(iid, timeout=5)


@pytest.fixture
async def dead_url() -> str:
    """An address nothing listens on (a port bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def test_get_instance_from_its_owner(workers: tuple[Dagger, Dagger], fwd: Forwarder) -> None:
    a, b = workers
    await create(a, "quick", "q1", n=1, f=1.0, nested={"l": [1, "x", None]})
    got = await fwd.get_instance(url(a), "q1")
    assert got is not None
    assert got == a.committed("q1")  # the very Instance, not a JSON rendering of it
    assert got.runtime_parameters == {"n": 1, "f": 1.0, "nested": {"l": [1, "x", None]}, "done": True}
    assert isinstance(got.runtime_parameters["f"], float)
    assert got.status == "COMPLETED"
    # b does not have it: None, not an error.
    assert await fwd.get_instance(url(b), "q1") is None
    assert await fwd.get_instance(url(a), "nope") is None


async def test_ids_that_need_quoting(workers: tuple[Dagger, Dagger], fwd: Forwarder) -> None:
    a, _ = workers
    for iid in ("sp ace?x=1&y#z", "über-🍕", "%2F", "a%2Fb", "..."):
        await create(a, "quick", iid)
        got = await fwd.get_instance(url(a), iid)
        assert got is not None and got.id == iid


async def test_list_and_count_merge_across_workers(
    workers: tuple[Dagger, Dagger], fwd: Forwarder, clock: ManualClock
) -> None:
    a, b = workers
    # Interleaved creation times, and two equal ones on different workers (ordered by id).
    plan = [(a, "quick", "a1"), (b, "quick", "b1"), (a, "boom", "a2"), (b, "boom", "b2")]
    for engine, template, iid in plan:
        await create(engine, template, iid)
        clock.advance(1)
    await create(b, "quick", "x-b")
    await create(a, "quick", "x-a")  # same created time as x-b, listed before it
    urls = [url(a), url(b)]

    everything = await list_everywhere(fwd, urls, ASC, status=None, template=None, limit=100, offset=0)
    assert [i.id for i in everything] == ["a1", "b1", "a2", "b2", "x-a", "x-b"]
    assert everything == sorted(everything, key=list_order)
    assert await count_everywhere(fwd, urls, status=None, template=None) == 6
    newest = await list_everywhere(fwd, urls, limit=3, offset=0)  # the default order: newest first
    assert [i.id for i in newest] == ["x-b", "x-a", "b2"]

    pages = [
        [i.id for i in await list_everywhere(fwd, urls, ASC, status=None, template=None, limit=2, offset=o)]
        for o in (0, 2, 4, 6)
    ]
    assert pages == [["a1", "b1"], ["a2", "b2"], ["x-a", "x-b"], []]

    failed = await list_everywhere(fwd, urls, ASC, status="FAILURE", template=None, limit=10, offset=0)
    assert [i.id for i in failed] == ["a2", "b2"]
    assert await count_everywhere(fwd, urls, status="FAILURE", template=None) == 2
    quick = await list_everywhere(fwd, urls, ASC, status="COMPLETED", template="quick", limit=10, offset=1)
    assert [i.id for i in quick] == ["b1", "x-a", "x-b"]
    assert await count_everywhere(fwd, urls, status="COMPLETED", template="quick") == 4

    # One worker's own list, as its internal route gives it.
    assert [i.id for i in await fwd.list_instances(url(b), ASC, status=None, template=None, limit=10)] == [
        "b1",
        "b2",
        "x-b",
    ]
    assert await fwd.count_instances(url(b), status=None, template="boom") == 1
    # A URL given twice (two owners' records naming one worker) is asked once.
    assert await count_everywhere(fwd, [url(a), url(a)], status=None, template=None) == 3


async def test_a_copy_on_two_workers_is_listed_once(
    workers: tuple[Dagger, Dagger], fwd: Forwarder, clock: ManualClock
) -> None:
    """Around a rebalance two workers can both answer for a partition: list it once."""
    a, b = workers
    await create(a, "quick", "same")
    await create(b, "quick", "same")
    listed = await list_everywhere(fwd, [url(a), url(b)], status=None, template=None, limit=10, offset=0)
    assert [i.id for i in listed] == ["same"]


async def test_dead_url(
    workers: tuple[Dagger, Dagger], fwd: Forwarder, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = workers
    await create(a, "quick", "q1")
    with pytest.raises(ForwardError, match=dead_url) as info:
        await fwd.get_instance(dead_url, "q1")
    assert info.value.status is None and info.value.url == dead_url
    with pytest.raises(ForwardError):
        await fwd.count_instances(dead_url, status=None, template=None)

    urls = [dead_url, url(a)]
    listed = await list_everywhere(fwd, urls, ASC, status=None, template=None, limit=10, offset=0)
    assert [i.id for i in listed] == ["q1"]
    assert await count_everywhere(fwd, urls, status=None, template=None) == 1
    assert f"skipping {dead_url}" in caplog.text


async def test_not_a_daggerflow_worker(fwd: Forwarder) -> None:
    """A 404 from something else at that address is an error, not "no such instance"."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    other = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(ForwardError, match="404") as info:
            await fwd.get_instance(other, "q1")
        assert info.value.status == 404
    finally:
        server.close()
        await server.wait_closed()


async def test_errors_name_url_and_status(workers: tuple[Dagger, Dagger], fwd: Forwarder) -> None:
    a, _ = workers
    with pytest.raises(ForwardError, match=r"answered 400.*unknown status") as info:
        await fwd.list_instances(url(a), status="NOPE", template=None, limit=10)
    assert info.value.status == 400 and url(a) in str(info.value)


async def test_not_owner_is_misdirected(clock: ManualClock, fwd: Forwarder) -> None:
    """A worker asked for an instance of a partition it no longer owns answers 421: the caller
    must look for the new owner, not conclude the instance does not exist."""

    class Moved(Dagger):
        def local_instance(self, instance_id: str) -> Instance | None:
            raise NotOwner(f"partition of {instance_id!r} moved")

    engine = await start(Moved, clock)
    try:
        with pytest.raises(ForwardError, match="421") as info:
            await fwd.get_instance(url(engine), "q1")
        assert info.value.status == 421
    finally:
        await engine.stop()


async def test_public_routes_still_answer(workers: tuple[Dagger, Dagger]) -> None:
    """The public instance routes go through the engine's async reads."""
    a, _ = workers
    await create(a, "quick", "q1")
    async with httpx.AsyncClient(base_url=url(a), timeout=5) as client:
        r = await client.get("/api/v1/instances/q1")
        assert r.status_code == 200 and r.json()["id"] == "q1"
        r = await client.get("/api/v1/instances")
        assert r.json()["total"] == 1 and [i["id"] for i in r.json()["items"]] == ["q1"]
        assert (await client.get("/tasks/instance/nope")).status_code == 404


async def test_an_unreachable_owner_is_a_503(clock: ManualClock, dead_url: str) -> None:
    """A public read whose forwarding failed answers 503 (retry later), not 409 or 500."""

    class Cut(Dagger):
        async def get_instance_state(self, instance_id: str) -> Instance | None:
            async with Forwarder(timeout=1.0) as fwd:
                return await fwd.get_instance(dead_url, instance_id)

    engine = await start(Cut, clock)
    try:
        async with httpx.AsyncClient(base_url=url(engine), timeout=5) as client:
            r = await client.get("/api/v1/instances/q1")
        assert r.status_code == 503
        assert r.json()["type"] == "ForwardError" and dead_url in r.json()["error"]
    finally:
        await engine.stop()
