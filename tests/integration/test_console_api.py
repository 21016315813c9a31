"""The REST reads of the web console on a real embedded worker (SQLite file, or RocksDB with
``DAGGERFLOW_TEST_STORE=rocksdb``; uvicorn on a free port): open listeners, pending timers,
the overview, the snapshot's correlation value, timers and history_seq, the templates' graph
structure and their node counts, with a 400 for every bad query."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, ManualClock, TriggerTask
from daggerflow.model.console import NodeCountsPart
from daggerflow.model.instance import Instance
from daggerflow.model.status import TaskOperator

from .test_rest import ORDER_READY, create, listener_waiting


class RunAt(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["ran"] = True


class Side(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters.setdefault("sides", 0)


def register_timed(engine: Dagger) -> None:
    """``timed``: a trigger at ``run_at``, then a parallel of two tasks (ATLEAST_ONE)."""
    h = DAGBuilderHelper(engine)
    both = h.generic_parallel_task_builder(
        name="Both",
        tasks=[h.generic_executor_task_builder(task_type=Side, name=n) for n in ("Left", "Right")],
        operator=TaskOperator.ATLEAST_ONE,
    )
    chain = h.build_and_link_tasks(
        [h.generic_trigger_task_builder(task_type=RunAt, name="At", time_to_execute_key="run_at"), both]
    )
    process = h.generic_process_builder(process_name="P", root_task=chain)
    engine.add_template("timed", h.generic_template(template_name="timed", root_process=process))


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def bad(client: httpx.AsyncClient, path: str, **params: Any) -> str:
    r = await client.get(path, params=params)
    assert r.status_code == 400, (params, r.status_code, r.text)
    message: str = r.json()["error"]
    return message


def listener_node(inst: Instance) -> str:
    return next(nid for nid, n in inst.nodes.items() if n.kind == "listener")


async def state(web: Dagger, iid: str) -> Instance:
    found = await web.get_instance_state(iid)
    assert found is not None
    return found


async def waiting_orders(web: Dagger, clock: ManualClock, n: int) -> list[Instance]:
    found = []
    for i in range(n):
        await create(web, "orders", f"o{i}", order_id=f"order-{i}")
        await web.wait_for(f"o{i}", listener_waiting, timeout=5)
        found.append(await state(web, f"o{i}"))
        clock.advance(10)
    return found


async def test_open_listeners_oldest_first_with_paging_filters_and_topic_counts(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    orders = await waiting_orders(web, clock, 3)
    register_timed(web)
    await create(web, "timed", "t0", run_at=clock.now() + 100)
    body = await get(client, "/api/v1/listeners")
    assert [i["instance"] for i in body["items"]] == ["o0", "o1", "o2"]
    first = body["items"][0]
    node = listener_node(orders[0])
    assert first == {
        "instance": "o0", "template_name": "orders", "node": node, "task_name": orders[0].nodes[node].name,
        "topic": ORDER_READY, "key": "order_id", "value": "order-0", "since": orders[0].nodes[node].time_submitted,
    }  # fmt: skip
    assert first["since"] > 0 and [i["since"] for i in body["items"]] == sorted(i["since"] for i in body["items"])
    assert body["total"] == 3 and body["next_offset"] is None and body["limit"] == 100 and body["offset"] == 0
    assert body["topics"] == [{"topic": ORDER_READY, "count": 3}]

    page = await get(client, "/api/v1/listeners", limit=2)
    assert [i["instance"] for i in page["items"]] == ["o0", "o1"] and page["next_offset"] == 2
    page = await get(client, "/api/v1/listeners", limit=2, offset=2)
    assert [i["instance"] for i in page["items"]] == ["o2"] and page["next_offset"] is None and page["total"] == 3
    assert (await get(client, "/api/v1/listeners", topic="elsewhere"))["total"] == 0
    by_template = await get(client, "/api/v1/listeners", template="orders", topic=ORDER_READY)
    assert by_template["total"] == 3
    none = await get(client, "/api/v1/listeners", template="quick")
    assert none == {"items": [], "total": 0, "limit": 100, "offset": 0, "next_offset": None, "topics": []}

    # A message completes o1's listener: it is no longer open.
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"key": "k", "value": '{"order_id": "order-1"}'})
    assert r.status_code == 202, r.text
    await web.wait_for("o1", lambda i: i.status == "COMPLETED", timeout=5)
    after = await get(client, "/api/v1/listeners")
    assert [i["instance"] for i in after["items"]] == ["o0", "o2"] and after["total"] == 2
    # The Python API gives the same.
    part = await web.list_listeners(limit=1, offset=1)
    assert [i.instance for i in part.items] == ["o2"] and part.total == 2

    assert "limit" in await bad(client, "/api/v1/listeners", limit=0)
    assert "limit" in await bad(client, "/api/v1/listeners", limit=1001)
    assert "offset" in await bad(client, "/api/v1/listeners", offset=-1)
    assert "colour" in await bad(client, "/api/v1/listeners", colour="red")


async def test_snapshot_shows_correlation_value_timers_and_history_seq(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    (order,) = await waiting_orders(web, clock, 1)
    node = listener_node(order)
    for path in ("/api/v1/instances/o0", "/tasks/instance/o0"):
        snap = await get(client, path)
        task = snap["tasks"][node]
        assert task["correlatable_key"] == "order_id" and task["correlation_value"] == "order-0"
        assert snap["history_seq"] == order.history_seq > 0
        assert all("correlation_value" not in t for nid, t in snap["tasks"].items() if nid != node)
    # history_seq moves when something happens.
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"key": "k", "value": '{"order_id": "order-0"}'})
    assert r.status_code == 202
    await web.wait_for("o0", lambda i: i.status == "COMPLETED", timeout=5)
    done = await state(web, "o0")
    snap = await get(client, "/api/v1/instances/o0")
    assert snap["history_seq"] == done.history_seq > order.history_seq
    assert "correlation_value" not in snap["tasks"][node]

    register_timed(web)
    due = clock.now() + 100
    await create(web, "timed", "t0", run_at=due)
    await web.wait_for("t0", lambda i: bool(i.timers), timeout=5)
    inst = await state(web, "t0")
    (trigger,) = [nid for nid, n in inst.nodes.items() if n.kind == "trigger"]
    snap = await get(client, "/api/v1/instances/t0")
    assert snap["tasks"][trigger]["timers"] == [{"purpose": "due", "due": due}]
    assert all("timers" not in t for nid, t in snap["tasks"].items() if nid != trigger)
    # Listed by the Dagger listing too.
    listed = await get(client, "/tasks/instances", template="timed")
    assert listed[0]["tasks"][trigger]["timers"] == [{"purpose": "due", "due": due}]


async def test_pending_timers_soonest_first(web: Dagger, client: httpx.AsyncClient, clock: ManualClock) -> None:
    register_timed(web)
    now = clock.now()
    for iid, delay in (("late", 300.0), ("soon", 100.0), ("mid", 200.0)):
        await create(web, "timed", iid, run_at=now + delay)
    for iid in ("late", "soon", "mid"):
        await web.wait_for(iid, lambda i: bool(i.timers), timeout=5)
    body = await get(client, "/api/v1/timers")
    assert [(t["instance"], t["purpose"], t["due"]) for t in body["items"]] == [
        ("soon", "due", now + 100), ("mid", "due", now + 200), ("late", "due", now + 300)
    ]  # fmt: skip
    first = body["items"][0]
    assert first["template_name"] == "timed" and first["task_name"] == "timed.P.At" and first["overdue_by"] == 0
    assert body["total"] == 3 and body["next_offset"] is None
    page = await get(client, "/api/v1/timers", limit=1, offset=1)
    assert [t["instance"] for t in page["items"]] == ["mid"] and page["next_offset"] == 2
    # None is due yet.
    assert (await get(client, "/api/v1/timers", overdue="true"))["total"] == 0
    assert (await get(client, "/api/v1/timers", overdue="false"))["total"] == 3
    # Once the soonest fires, it is gone.
    clock.advance(150)
    await web.wait_for("soon", lambda i: i.status == "COMPLETED", timeout=5)
    assert [t["instance"] for t in (await get(client, "/api/v1/timers"))["items"]] == ["mid", "late"]

    assert "overdue" in await bad(client, "/api/v1/timers", overdue="maybe")
    assert "limit" in await bad(client, "/api/v1/timers", limit=5000)
    assert "topic" in await bad(client, "/api/v1/timers", topic="x")


async def test_overview_counts_failures_waiting_and_throughput(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    register_timed(web)
    for i in range(2):
        await create(web, "quick", f"q{i}")
        await web.wait_for(f"q{i}", lambda inst: inst.status == "COMPLETED", timeout=5)
    await create(web, "boom", "b0")
    await web.wait_for("b0", lambda inst: inst.status == "FAILURE", timeout=5)
    await create(web, "quick", "later", submit=False)
    await waiting_orders(web, clock, 2)
    await create(web, "timed", "t0", run_at=clock.now() + 1000)
    await web.wait_for("t0", lambda i: bool(i.timers), timeout=5)

    body = await get(client, "/api/v1/overview")
    counts = {(c["template"], c["status"]): c["count"] for c in body["counts"]}
    assert counts == {
        ("quick", "COMPLETED"): 2, ("quick", "NOT_STARTED"): 1, ("boom", "FAILURE"): 1,
        ("orders", "EXECUTING"): 2, ("timed", "EXECUTING"): 1,
    }  # fmt: skip
    assert body["failed_last_hour"] == 1
    assert body["listeners_open"] == 2 and [i["instance"] for i in body["oldest_listeners"]] == ["o0", "o1"]
    assert body["oldest_listeners"][0]["key"] == "order_id" and body["oldest_listeners"][0]["value"] == "order-0"
    assert body["timers_overdue"] == 0 and body["oldest_overdue"] == []
    throughput = body["throughput"]
    assert throughput["created"] == 6 and throughput["completed"] == 2 and throughput["failed"] == 1
    assert throughput["transitions"] > 0 and body["workers"] == 1 and body["at"] == clock.now()
    # The failure is more than an hour old an hour later.
    clock.advance(3601)
    later = await get(client, "/api/v1/overview")
    assert later["failed_last_hour"] == 0 and later["at"] == clock.now()
    assert "x" in await bad(client, "/api/v1/overview", x="1")


async def test_workers_lists_this_worker_with_its_counters_and_no_partition_table(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await waiting_orders(web, clock, 2)
    body = await get(client, "/api/v1/workers")
    assert body["partitions"] is None  # embedded: one process holds the one partition
    [me] = body["workers"]
    assert me["runtime"] == "embedded" and me["url"] == web.web_url and me["partitions"] == [0]
    assert me["started"] == web.started_at and me["version"]
    assert me["transitions"] > 0 and me["queued"] == 0 and me["jobs_running"] == 0 and me["timers"] == 0
    assert me["lag"] == {ORDER_READY: 0}  # its listener's reader has read everything
    # The internal route other workers ask answers with the same, as msgpack.
    raw = await client.get("/internal/v1/worker")
    assert raw.status_code == 200
    assert msgspec.msgpack.decode(raw.content) == me  # (nothing ran in between)
    assert "x" in await bad(client, "/api/v1/workers", x="1")


async def test_templates_give_the_graph_structure(web: Dagger, client: httpx.AsyncClient) -> None:
    register_timed(web)
    templates = {t["name"]: t for t in await get(client, "/api/v1/templates")}
    nodes = {n["name"]: n for n in templates["timed"]["nodes"]}
    assert list(nodes) == ["timed.P", "timed.P.At", "timed.P.Both", "timed.P.Left_executor_task", "timed.P.Right_executor_task"]
    assert nodes["timed.P"] == {
        "name": "timed.P", "kind": "process", "parent": None, "next": [], "children": ["timed.P.At"],
        "process": "timed.P",
    }  # fmt: skip
    at = nodes["timed.P.At"]
    assert at["kind"] == "trigger" and at["parent"] == "timed.P" and at["next"] == ["timed.P.Both"]
    assert at["process"] == "timed.P" and at["children"] == [] and at["type"]
    both = nodes["timed.P.Both"]
    assert both["kind"] == "parallel" and both["operator"] == "ATLEAST_ONE"
    assert both["children"] == ["timed.P.Left_executor_task", "timed.P.Right_executor_task"] and both["next"] == []
    assert nodes["timed.P.Left_executor_task"]["parent"] == "timed.P.Both" and nodes["timed.P.Left_executor_task"]["process"] == "timed.P"
    order_nodes = {n["kind"]: n for n in templates["orders"]["nodes"]}
    assert order_nodes["listener"]["correlatable_key"] == "order_id"
    assert order_nodes["listener"]["topic"] == ORDER_READY


async def test_template_node_counts(web: Dagger, client: httpx.AsyncClient, clock: ManualClock) -> None:
    orders = await waiting_orders(web, clock, 3)
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"key": "k", "value": '{"order_id": "order-2"}'})
    assert r.status_code == 202
    await web.wait_for("o2", lambda i: i.status == "COMPLETED", timeout=5)
    listener = orders[0].nodes[listener_node(orders[0])].name
    process = next(n.name for n in orders[0].nodes.values() if n.kind == "process")

    body = await get(client, "/api/v1/templates/orders/node-counts")
    assert body["template"] == "orders" and body["version"] is None
    assert body["scanned"] == 3 and body["truncated"] is False
    assert body["nodes"][listener] == {"EXECUTING": 2, "COMPLETED": 1}
    assert body["nodes"][process] == {"EXECUTING": 2, "COMPLETED": 1}
    assert "orders" not in body["nodes"]  # (the workflow itself is not a node of the template)
    # The names are the template's.
    templates = {t["name"]: t for t in await get(client, "/api/v1/templates")}
    assert set(body["nodes"]) == {n["name"] for n in templates["orders"]["nodes"]}
    # The newest two: o2 (completed) and o1.
    newest = await get(client, "/api/v1/templates/orders/node-counts", limit=2)
    assert newest["scanned"] == 2 and newest["truncated"] is True
    assert newest["nodes"][listener] == {"EXECUTING": 1, "COMPLETED": 1}
    version = orders[0].template_version
    same = await get(client, "/api/v1/templates/orders/node-counts", version=version)
    assert same["scanned"] == 3 and same["version"] == version
    other = await get(client, "/api/v1/templates/orders/node-counts", version="0000")
    assert other["scanned"] == 0 and other["nodes"] == {}

    r = await client.get("/api/v1/templates/nope/node-counts")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert "limit" in await bad(client, "/api/v1/templates/orders/node-counts", limit=100_001)
    assert "limit" in await bad(client, "/api/v1/templates/orders/node-counts", limit="many")


async def test_node_counts_of_the_instances_created_since_a_cut(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """The local half that Kafka's second round asks every worker for: only instances created
    at or after ``created_after``, and (first round) the counted instances' creation times."""
    orders = await waiting_orders(web, clock, 3)  # o0, o1, o2: ten seconds apart
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"key": "k", "value": '{"order_id": "order-2"}'})
    assert r.status_code == 202
    await web.wait_for("o2", lambda i: i.status == "COMPLETED", timeout=5)
    listener = orders[0].nodes[listener_node(orders[0])].name
    created = [o.root.time_created for o in orders]
    assert created == sorted(set(created))

    since_o1 = web.local_node_counts("orders", created_after=created[1])  # (inclusive: o1 and o2)
    assert since_o1.scanned == 2 and since_o1.truncated is False and since_o1.created == []
    assert since_o1.nodes[listener] == {"EXECUTING": 1, "COMPLETED": 1}
    newest = web.local_node_counts("orders", created_after=created[0], limit=1, times=True)
    assert newest.scanned == 1 and newest.truncated is True and newest.created == [created[2]]
    assert newest.nodes[listener] == {"COMPLETED": 1}
    every = web.local_node_counts("orders", times=True)
    assert every.created == created[::-1] and every.scanned == 3
    assert web.local_node_counts("orders", created_after=created[2] + 0.001).scanned == 0
    # The internal route reads the same parameters (a float given as its repr, exactly).
    r = await client.get(
        "/internal/v1/node-counts",
        params={"template": "orders", "created_after": repr(created[1]), "times": "true"},
    )
    assert r.status_code == 200
    part = msgspec.msgpack.decode(r.content, type=NodeCountsPart)
    assert part.scanned == 2 and part.created == created[:0:-1]
    # One process holds every instance: the whole read is its newest ``limit``, in one round.
    whole = await web.node_counts("orders", limit=2)
    assert whole.scanned == 2 and whole.truncated is True and whole.nodes[listener] == {"EXECUTING": 1, "COMPLETED": 1}


async def test_python_api_refuses_bad_arguments(web: Dagger) -> None:
    from daggerflow import InvalidInput

    with pytest.raises(InvalidInput, match="limit"):
        await web.list_listeners(limit=0)
    with pytest.raises(InvalidInput, match="overdue"):
        await web.list_timers(overdue="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="offset"):
        await web.list_timers(offset=-2)
    await asyncio.sleep(0)  # (the engine goes on)
    assert (await web.overview()).workers == 1
