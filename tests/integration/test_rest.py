"""The REST API over a real HTTP server (uvicorn on a free port) and a real SQLite file.

Dagger's routes keep their shapes (inventory §7, behaviours 47-49); the ``/topics`` routes
feed listeners; ``/api/v1`` adds filtering, paging, creation and stop; every error is a JSON
body ``{"error": ...}`` with a 4xx status and leaves the engine working.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    KafkaCommandTask,
    KafkaListenerTask,
    ManualClock,
    NotSerializable,
    TaskLookupKey,
)
from daggerflow.model.instance import Instance

ORDER_CMD = "order_cmd"
ORDER_READY = "order_ready"


def send_order_task(engine: Dagger) -> type[KafkaCommandTask[str, str]]:
    class SendOrder(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            order_id = runtime_parameters["order_id"]
            await engine.topics[ORDER_CMD].send(key=order_id, value=json.dumps({"order_id": order_id}))

    return SendOrder


class WaitReady(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters["received"] = args[0]  # the payload exactly as delivered
        return True


class Quick(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


class Boom(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        raise RuntimeError("kitchen on fire")


def register_templates(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    order = helper.generic_process_builder(
        process_name="Order",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_command_task_builder(
                    topic=ORDER_CMD, task_type=send_order_task(engine), process_name="Order"
                ),
                helper.generic_listener_task_builder(
                    topic=ORDER_READY, task_type=WaitReady, process_name="Order"
                ),
            ]
        ),
    )
    engine.add_template("orders", helper.generic_template(template_name="orders", root_process=order))
    for name, task in (("quick", Quick), ("boom", Boom)):
        process = helper.generic_process_builder(
            process_name="Main",
            root_task=helper.generic_executor_task_builder(task_type=task, name="Main"),
        )
        engine.add_template(name, helper.generic_template(template_name=name, root_process=process))


def listener_waiting(inst: Instance) -> bool:
    return any(n.kind == "listener" and n.status == "EXECUTING" for n in inst.nodes.values())


async def create(engine: Dagger, template: str, iid: str, *, submit: bool = True, **params: Any) -> None:
    await engine.template_dags[template].create_instance(iid, submit_task=submit, **params)


# Dagger's routes ----------------------------------------------------------------------------


async def test_service_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/service/ready")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"is_ready": True}


async def test_instances_in_daggers_shape(web: Dagger, client: httpx.AsyncClient) -> None:
    await create(web, "quick", "q1", n=1)
    await create(web, "boom", "b1")
    await web.wait_for("q1", timeout=5)
    await web.wait_for("b1", timeout=5)

    r = await client.get("/tasks/instances")
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list)
    by_id = {i["id"]: i for i in body}
    assert set(by_id) == {"q1", "b1"}

    q1 = by_id["q1"]
    assert q1["task_type"] == "ROOT"
    assert q1["status"] == {"code": "COMPLETED", "value": "COMPLETED"}
    assert q1["runtime_parameters"] == {"n": 1, "done": True}
    assert q1["template_name"] == "quick"
    assert q1["time_created"] > 0 and q1["time_completed"] >= q1["time_created"]
    tasks = q1["tasks"]
    assert isinstance(tasks, dict) and tasks
    for tid, task in tasks.items():
        assert isinstance(tid, str) and task["id"] == tid
        assert task["status"]["code"] == task["status"]["value"] == "COMPLETED"
        assert isinstance(task["task_name"], str)
        assert "time_created" in task and "time_completed" in task
    names = {t["task_name"] for t in tasks.values()}
    assert "quick.Main.Main_executor_task" in names
    assert {t["task_type"] for t in tasks.values()} >= {"SUB_DAG", "LEAF"}

    b1 = by_id["b1"]
    assert b1["status"]["code"] == "FAILURE"
    failed = [t for t in b1["tasks"].values() if t["task_name"].endswith("_executor_task")]
    assert len(failed) == 1
    assert failed[0]["status"]["code"] == "FAILURE"
    assert "RuntimeError: kitchen on fire" in failed[0]["error"]
    assert "Traceback" in failed[0]["traceback"]


async def test_instances_filters_and_paging(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    # Created out of id order, one second apart: listings are ordered by creation time.
    ids = ["m", "c", "x", "a", "k", "b", "z"]
    for n, iid in enumerate(ids):
        if n % 3 == 0:
            await create(web, "quick", iid)
            await web.wait_for(iid, timeout=5)
        elif n % 3 == 1:
            await create(web, "orders", iid, order_id=f"o-{iid}")
            await web.wait_for(iid, listener_waiting, timeout=5)
        else:
            await create(web, "quick", iid, submit=False)
        clock.advance(1)

    everything = (await client.get("/tasks/instances")).json()
    assert [i["id"] for i in everything] == ids

    pages = []
    for offset in range(0, 9, 3):
        r = await client.get("/tasks/instances", params={"limit": 3, "offset": offset})
        assert r.status_code == 200
        pages.append([i["id"] for i in r.json()])
    assert pages == [ids[0:3], ids[3:6], ids[6:]]
    assert (await client.get("/tasks/instances", params={"offset": 7})).json() == []

    completed = (await client.get("/tasks/instances", params={"status": "COMPLETED"})).json()
    assert [i["id"] for i in completed] == ["m", "a", "z"]
    assert all(i["status"]["code"] == "COMPLETED" for i in completed)
    waiting = (await client.get("/tasks/instances", params={"status": "executing"})).json()
    assert [i["id"] for i in waiting] == ["c", "k"]
    not_started = (await client.get("/tasks/instances", params={"status": "NOT_STARTED"})).json()
    assert [i["id"] for i in not_started] == ["x", "b"]

    orders = (await client.get("/tasks/instances", params={"template": "orders"})).json()
    assert [i["id"] for i in orders] == ["c", "k"]
    quick_done = await client.get(
        "/tasks/instances", params={"template": "quick", "status": "COMPLETED", "limit": 2}
    )
    assert [i["id"] for i in quick_done.json()] == ["m", "a"]
    assert (await client.get("/tasks/instances", params={"template": "nope"})).json() == []


async def test_default_limit_is_100(web: Dagger, client: httpx.AsyncClient) -> None:
    for n in range(101):
        await create(web, "quick", f"i{n:03d}", submit=False)
    assert len((await client.get("/tasks/instances")).json()) == 100
    assert len((await client.get("/tasks/instances", params={"offset": 100})).json()) == 1
    assert len((await client.get("/tasks/instances", params={"limit": 101})).json()) == 101


async def test_one_instance_and_unknown_id(web: Dagger, client: httpx.AsyncClient) -> None:
    await create(web, "orders", "w1", order_id="o1")
    await web.wait_for("w1", listener_waiting, timeout=5)
    r = await client.get("/tasks/instance/w1")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "w1" and body["task_type"] == "ROOT"
    assert body["status"]["code"] == "EXECUTING"
    assert body["runtime_parameters"] == {"order_id": "o1"}
    statuses = {t["task_name"]: t["status"]["code"] for t in body["tasks"].values()}
    assert statuses["orders.Order.Order_command_task"] == "COMPLETED"
    assert statuses["orders.Order.Order_listener_task"] == "EXECUTING"

    missing = await client.get("/tasks/instance/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert "nope" in missing.json()["error"]


# Topics ----------------------------------------------------------------------------------


async def test_post_message_completes_a_waiting_listener(web: Dagger, client: httpx.AsyncClient) -> None:
    await create(web, "orders", "w1", order_id="o1")
    await create(web, "orders", "w2", order_id="o2")
    await web.wait_for("w1", listener_waiting, timeout=5)
    await web.wait_for("w2", listener_waiting, timeout=5)

    # A string value is delivered as it is (spacing included).
    text = '{"order_id":   "o1", "status": "READY"}'
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"key": "o1", "value": text})
    assert r.status_code == 202
    assert r.json() == {"topic": ORDER_READY, "offset": 0}
    done = await web.wait_for("w1", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters["received"] == text

    # A JSON object value is delivered as its JSON text; no key is fine.
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"value": {"order_id": "o2", "n": [1, 2]}})
    assert r.status_code == 202
    assert r.json() == {"topic": ORDER_READY, "offset": 1}
    done = await web.wait_for("w2", timeout=5)
    assert done.status.code == "COMPLETED"
    received = done.runtime_parameters["received"]
    assert isinstance(received, str)
    assert json.loads(received) == {"order_id": "o2", "n": [1, 2]}

    # The command tasks' sends went to the command topic, once each.
    sent = web.read_topic(ORDER_CMD, 0, 10)
    assert sorted(m.key for m in sent) == ["o1", "o2"]


async def test_posted_messages_are_durable(make_engine: Callable[..., Dagger]) -> None:
    engine = make_engine(name="durable", web_port=0)
    await engine.start()
    try:
        async with httpx.AsyncClient(base_url=engine.web_url or "") as c:
            r = await c.post("/topics/t/messages", json={"key": "k", "value": "v1"})
            assert r.status_code == 202 and r.json() == {"topic": "t", "offset": 0}
    finally:
        await engine.stop()
    again = make_engine(name="durable")
    await again.start()
    try:
        [msg] = again.read_topic("t", 0, 10)
        assert (msg.offset, msg.key, msg.value) == (0, "k", "v1")
    finally:
        await again.stop()


async def test_read_topic_messages_with_paging(
    web: Dagger, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    values: list[Any] = ["a", {"b": 1}, [1, 2], 3, None]
    for n, value in enumerate(values):
        body: dict[str, Any] = {"value": value}
        if n % 2 == 0:
            body["key"] = f"k{n}"
        assert (await client.post("/topics/log/messages", json=body)).status_code == 202
        clock.advance(1)

    r = await client.get("/topics/log/messages", params={"from": 0, "limit": 2})
    assert r.status_code == 200
    page = r.json()
    assert page["next"] == 2
    assert page["messages"][0] == {
        "offset": 0,
        "key": "k0",
        "value": "a",
        "timestamp": clock.now() - 5,
        "headers": {},
    }
    assert page["messages"][1]["key"] is None
    assert json.loads(page["messages"][1]["value"]) == {"b": 1}

    page = (await client.get("/topics/log/messages", params={"from": page["next"], "limit": 2})).json()
    assert [m["offset"] for m in page["messages"]] == [2, 3]
    assert [m["value"] for m in page["messages"]] == ["[1,2]", "3"]
    assert page["next"] == 4
    page = (await client.get("/topics/log/messages", params={"from": page["next"]})).json()
    assert [(m["offset"], m["value"]) for m in page["messages"]] == [(4, "null")]
    assert page["next"] == 5
    empty = (await client.get("/topics/log/messages", params={"from": 5})).json()
    assert empty == {"messages": [], "next": 5}
    # Reading is not consuming: the whole topic is still there.
    assert len((await client.get("/topics/log/messages")).json()["messages"]) == 5
    assert "log" in (await client.get("/topics")).json()


# /api/v1 and /metrics --------------------------------------------------------------------


async def test_v1_instances_with_total_and_next_offset(web: Dagger, client: httpx.AsyncClient) -> None:
    for n in range(5):
        await create(web, "quick", f"i{n}", submit=n < 2)
    await web.wait_for("i0", timeout=5)
    await web.wait_for("i1", timeout=5)

    first = (await client.get("/api/v1/instances", params={"limit": 2})).json()
    assert first["total"] == 5 and first["limit"] == 2 and first["offset"] == 0
    assert first["next_offset"] == 2
    assert [i["id"] for i in first["items"]] == ["i4", "i3"]  # newest first
    assert "tasks" not in first["items"][0]  # a summary, not the task tree
    assert first["items"][0]["status"]["code"] == "NOT_STARTED"

    last = (await client.get("/api/v1/instances", params={"limit": 2, "offset": 4})).json()
    assert [i["id"] for i in last["items"]] == ["i0"]
    assert last["items"][0]["status"]["code"] == "COMPLETED"
    assert last["next_offset"] is None

    not_started = (await client.get("/api/v1/instances", params={"status": "NOT_STARTED"})).json()
    assert not_started["total"] == 3 and not_started["next_offset"] is None
    assert [i["id"] for i in not_started["items"]] == ["i4", "i3", "i2"]
    none = (await client.get("/api/v1/instances", params={"template": "orders"})).json()
    assert none == {"items": [], "total": 0, "limit": 100, "offset": 0, "next_offset": None}

    one = await client.get("/api/v1/instances/i0")
    assert one.status_code == 200 and one.json()["runtime_parameters"] == {"done": True}
    assert (await client.get("/api/v1/instances/nope")).status_code == 404


async def test_v1_create_and_stop(web: Dagger, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/templates/quick/instances", json={"id": "api-1", "runtime_parameters": {"n": 7}}
    )
    assert r.status_code == 201
    assert r.json()["id"] == "api-1" and r.json()["template_name"] == "quick"
    done = await web.wait_for("api-1", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters == {"n": 7, "done": True}

    r = await client.post("/api/v1/templates/quick/instances", json={"submit": False})
    assert r.status_code == 201
    generated = r.json()["id"]
    assert generated and web.committed(generated) is not None
    assert web.committed(generated).status == "NOT_STARTED"  # type: ignore[union-attr]

    r = await client.post("/api/v1/templates/quick/instances")  # no body at all: defaults
    assert r.status_code == 201 and r.json()["id"] != generated
    assert (await web.wait_for(r.json()["id"], timeout=5)).status.code == "COMPLETED"

    r = await client.post(
        "/api/v1/templates/orders/instances", json={"id": "api-2", "runtime_parameters": {"order_id": "o9"}}
    )
    assert r.status_code == 201
    await web.wait_for("api-2", listener_waiting, timeout=5)
    r = await client.post("/api/v1/instances/api-2/stop")
    assert r.status_code == 200
    body = r.json()
    assert body["status"]["code"] == "STOPPED"
    listener = next(t for t in body["tasks"].values() if t["task_name"].endswith("_listener_task"))
    assert listener["status"]["code"] == "STOPPED"
    stopped = web.committed("api-2")
    assert stopped is not None and stopped.status == "STOPPED"

    # A late message for the stopped workflow changes nothing.
    await client.post(f"/topics/{ORDER_READY}/messages", json={"value": {"order_id": "o9"}})
    await create(web, "quick", "after")  # and the engine goes on
    await web.wait_for("after", timeout=5)
    assert web.committed("api-2").status == "STOPPED"  # type: ignore[union-attr]

    missing = await client.post("/api/v1/instances/nope/stop")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


async def test_v1_templates_stats_and_metrics(web: Dagger, client: httpx.AsyncClient) -> None:
    templates = (await client.get("/api/v1/templates")).json()
    assert sorted(t["name"] for t in templates) == ["boom", "orders", "quick"]
    assert all(isinstance(t["version"], str) and t["version"] for t in templates)

    await create(web, "quick", "q1")
    await create(web, "quick", "q2")
    await create(web, "boom", "b1")
    for iid in ("q1", "q2", "b1"):
        await web.wait_for(iid, timeout=5)

    stats = (await client.get("/api/v1/stats")).json()
    assert stats["running"] is True
    assert stats["transitions"] > 0 and stats["batches"] > 0

    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert 'daggerflow_instances{status="COMPLETED"} 2.0' in lines
    assert 'daggerflow_instances{status="FAILURE"} 1.0' in lines
    assert 'daggerflow_instances{status="EXECUTING"} 0.0' in lines
    assert any(line.startswith("daggerflow_transitions ") for line in lines)


# Invalid requests ------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("bad-json-body", "POST", "/topics/t/messages", {"content": b'{"value": '}, 400),
    ("empty-body", "POST", "/topics/t/messages", {"content": b""}, 400),
    ("body-not-object", "POST", "/topics/t/messages", {"json": ["value", "x"]}, 400),
    ("missing-value", "POST", "/topics/t/messages", {"json": {"key": "k"}}, 400),
    ("non-string-key", "POST", "/topics/t/messages", {"json": {"key": 5, "value": "x"}}, 400),
    ("bad-headers", "POST", "/topics/t/messages", {"json": {"value": "x", "headers": {"h": 1}}}, 400),
    ("limit-zero", "GET", "/tasks/instances?limit=0", {}, 400),
    ("limit-abc", "GET", "/tasks/instances?limit=abc", {}, 400),
    ("limit-huge", "GET", "/tasks/instances?limit=100000", {}, 400),
    ("offset-negative", "GET", "/tasks/instances?offset=-1", {}, 400),
    ("offset-beyond-sqlite", "GET", "/tasks/instances?offset=99999999999999999999", {}, 400),
    ("unknown-status", "GET", "/tasks/instances?status=DONE", {}, 400),
    ("v1-unknown-status", "GET", "/api/v1/instances?status=bogus", {}, 400),
    ("v1-limit-abc", "GET", "/api/v1/instances?limit=abc", {}, 400),
    ("topic-from-negative", "GET", "/topics/t/messages?from=-1", {}, 400),
    ("topic-from-beyond-sqlite", "GET", "/topics/t/messages?from=99999999999999999999", {}, 400),
    ("topic-limit-zero", "GET", "/topics/t/messages?limit=0", {}, 400),
    ("unknown-template", "POST", "/api/v1/templates/nope/instances", {"json": {}}, 404),
    (
        "create-params-not-object",
        "POST",
        "/api/v1/templates/quick/instances",
        {"json": {"runtime_parameters": [1]}},
        400,
    ),
    ("create-id-object", "POST", "/api/v1/templates/quick/instances", {"json": {"id": {"a": 1}}}, 400),
    ("create-bad-json", "POST", "/api/v1/templates/quick/instances", {"content": b"{nope"}, 400),
    ("unknown-route", "GET", "/no/such/route", {}, 404),
    ("unknown-instance", "GET", "/tasks/instance/missing", {}, 404),
    ("wrong-method-ready", "DELETE", "/service/ready", {}, 405),
    ("wrong-method-messages", "PUT", "/topics/t/messages", {"json": {"value": "x"}}, 405),
    ("wrong-method-stop", "GET", "/api/v1/instances/x/stop", {}, 405),
]


async def test_invalid_requests_are_json_4xx_and_the_engine_goes_on(
    web: Dagger, client: httpx.AsyncClient
) -> None:
    # One engine for all cases (a uvicorn start/stop costs ~0.2 s); after each bad request
    # a valid one must still work end to end, and the bad one must have changed nothing.
    for n, (case, method, url, kwargs, status) in enumerate(BAD_REQUESTS):
        r = await client.request(method, url, **kwargs)
        assert r.status_code == status, (case, r.text)
        assert r.headers["content-type"].startswith("application/json"), case
        body = r.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], case
        if status == 405:
            assert r.headers.get("allow"), case  # says which methods would do

        assert len(web.read_topic("t", 0, 1000)) == n, case  # no message appended
        assert web.count_instances() == n, case  # no instance created

        ok = await client.post("/topics/t/messages", json={"value": f"fine {n}"})
        assert ok.status_code == 202 and ok.json()["offset"] == n, case
        iid = f"after-{case}"
        await create(web, "orders", iid, order_id=f"o-{n}")
        await web.wait_for(iid, listener_waiting, timeout=5)
        posted = await client.post(f"/topics/{ORDER_READY}/messages", json={"value": {"order_id": f"o-{n}"}})
        assert posted.status_code == 202, case
        assert (await web.wait_for(iid, timeout=5)).status.code == "COMPLETED", case
        assert (await client.get("/service/ready")).json() == {"is_ready": True}, case


async def test_405_lists_the_allowed_methods(client: httpx.AsyncClient) -> None:
    r = await client.put("/topics/t/messages", json={"value": "x"})
    assert r.status_code == 405
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


async def test_bytes_parameter_is_refused_and_listings_stay_intact(
    web: Dagger, client: httpx.AsyncClient
) -> None:
    # bytes would not read back as bytes from JSON state, so they are refused at the call
    # site; the listing is unaffected.
    with pytest.raises(NotSerializable, match="blob"):
        await create(web, "quick", "bin", blob=b"\x00\x01pizza")
    await create(web, "quick", "plain")
    await web.wait_for("plain", timeout=5)
    listing = await client.get("/tasks/instances")
    assert listing.status_code == 200
    assert [i["id"] for i in listing.json()] == ["plain"]
    assert (await client.get("/tasks/instance/bin")).status_code == 404
