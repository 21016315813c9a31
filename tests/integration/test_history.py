"""The history of instances on the embedded runtime (SQLite, or RocksDB with
``DAGGERFLOW_TEST_STORE=rocksdb``): through the Python API, REST on a real server, and the
CLI; bounded, deleted with its instance, durable across a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from daggerflow import Dagger, ManualClock
from daggerflow.errors import InvalidInput, UnknownInstance
from daggerflow.model.history import DROPPED, FLUSH_ENTRIES, Entry
from daggerflow.model.instance import Instance

from .test_repair import add_flaky, cli, node_of, settled
from .test_rest import ORDER_READY, create, listener_waiting, register_templates


def kinds(items: list[Entry]) -> list[str]:
    return [e.event for e in items]


def store_rows(engine: Dagger, iid: str) -> list[tuple[int, bytes]]:
    runtime: Any = engine.runtime
    rows: list[tuple[int, bytes]] = runtime.store.history_rows(iid)
    return rows


async def test_an_order_workflows_history_in_order(web: Dagger, client: httpx.AsyncClient) -> None:
    await create(web, "orders", "h1", order_id="h1")
    waiting = await settled(web, "h1", listener_waiting)
    listener = node_of(waiting, "listener")
    command = node_of(waiting, "command")
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"value": {"order_id": "h1"}})
    offset = r.json()["offset"]
    done = await settled(web, "h1")
    assert done.status == "COMPLETED"
    items = (await web.history("h1")).items
    assert kinds(items) == ["create", "done", "deliver", "done"]
    assert [e.seq for e in items] == [0, 1, 2, 3]
    create_, sent, delivered, received = items
    assert (create_.changes[0], create_.changes[-1]) == (
        ("h1", "NOT_STARTED", "SUBMITTED"), (command, "NOT_STARTED", "EXECUTING")
    )
    assert sent.node == command and sent.job == "execute" and sent.attempt == 1
    assert (command, "EXECUTING", "COMPLETED") in sent.changes and (listener, "NOT_STARTED", "EXECUTING") in sent.changes
    assert delivered.node == listener and delivered.topic == ORDER_READY and delivered.offset == offset
    assert delivered.partition is None and delivered.changes == []  # queued for on_message: no status change
    assert received.job == "on_message" and received.changes[-1] == ("h1", "EXECUTING", "COMPLETED")
    assert all(e.time > 0 for e in items)


async def test_repair_actions_are_recorded_with_their_actor(web: Dagger, client: httpx.AsyncClient) -> None:
    add_flaky(web)
    await create(web, "flaky", "h2")
    assert (await settled(web, "h2")).status == "FAILURE"
    r = await client.post("/api/v1/instances/h2/retry", params={"actor": "ops"}, json={"runtime_parameters": {"fixed": True}})
    assert r.status_code == 200, r.text
    assert (await settled(web, "h2")).status == "COMPLETED"
    items = (await web.history("h2")).items
    assert kinds(items) == ["create", "failed", "retry", "done"]
    failed, retry = items[1], items[2]
    assert failed.error == "RuntimeError: not fixed yet" and failed.attempt == 1
    assert ("h2", "EXECUTING", "FAILURE") in failed.changes
    assert retry.actor == "ops" and retry.detail == "fixed" and ("h2", "FAILURE", "NOT_STARTED") in retry.changes

    await create(web, "orders", "h3", submit=False, order_id="h3")
    await web.submit("h3", actor="me")
    node = node_of(await settled(web, "h3", listener_waiting), "listener")
    await web.patch_parameters("h3", {"note": 1}, actor="patcher")
    await client.post(f"/api/v1/instances/h3/tasks/{node}/skip", params={"actor": "skipper"})
    await settled(web, "h3")
    items = (await web.history("h3")).items
    assert kinds(items) == ["create", "submit", "done", "patch", "skip"]
    assert [e.actor for e in items[1:2] + items[3:]] == ["me", "patcher", "skipper"]
    assert items[4].node == node and (node, "EXECUTING", "SKIPPED") in items[4].changes
    await web.stop_instance("h3")  # terminal: nothing applied, nothing recorded
    assert len((await web.history("h3")).items) == 5


async def patched(engine: Dagger, iid: str, n: int) -> None:
    for i in range(n):
        await engine.patch_parameters(iid, {"n": i}, actor="loop")


async def test_the_history_is_bounded_with_a_marker(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = make_engine(clock=clock, history_limit=40)
    register_templates(engine)
    async with engine:
        await create(engine, "orders", "h4", order_id="h4")
        await settled(engine, "h4", listener_waiting)
        await patched(engine, "h4", 100)  # 102 entries in all
        page = await engine.history("h4", limit=1000)
        assert page.next is None and len(page.items) == 41
        marker = page.items[0]
        assert marker.event == DROPPED and marker.dropped == 62 and marker.seq == 61
        assert [e.seq for e in page.items[1:]] == list(range(62, 102))
        inst = engine.committed("h4")
        assert inst is not None
        # At most the rows the limit needs (one may straddle it), and the record lists them.
        rows = store_rows(engine, "h4")
        assert [first for first, _ in rows] == list(inst.history_rows)
        assert 1 <= len(rows) <= 40 // FLUSH_ENTRIES + 2
        assert inst.history_seq - inst.history_flushed < FLUSH_ENTRIES


async def test_no_history_with_a_limit_of_0(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = make_engine(clock=clock, history_limit=0)
    register_templates(engine)
    async with engine:
        await create(engine, "quick", "h5")
        await settled(engine, "h5")
        assert (await engine.history("h5")).items == []
    with pytest.raises(Exception, match="history_limit"):
        make_engine(history_limit=-1)


async def test_deleted_with_the_instance(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = make_engine(clock=clock, delete_workflow_on_complete=True)
    register_templates(engine)
    async with engine:
        await create(engine, "orders", "h6", order_id="h6")
        await settled(engine, "h6", listener_waiting)
        await patched(engine, "h6", 2 * FLUSH_ENTRIES)
        assert len(store_rows(engine, "h6")) == 2
        await engine.append(ORDER_READY, "h6", json.dumps({"order_id": "h6"}))
        await engine.wait_for("h6", lambda i: i.is_terminal(), timeout=10)
        assert engine.committed("h6") is None
        assert store_rows(engine, "h6") == []
        with pytest.raises(UnknownInstance):
            await engine.history("h6")


async def test_the_history_survives_a_restart(make_engine: Callable[..., Dagger], clock: ManualClock) -> None:
    engine = make_engine(clock=clock)
    register_templates(engine)
    async with engine:
        await create(engine, "orders", "h7", order_id="h7")
        await settled(engine, "h7", listener_waiting)
        await patched(engine, "h7", FLUSH_ENTRIES + 3)  # a row and a tail
        before = (await engine.history("h7", limit=1000)).items
    assert len(before) == FLUSH_ENTRIES + 5
    again = make_engine(clock=clock)
    register_templates(again)
    async with again:
        assert (await again.history("h7", limit=1000)).items == before
        inst: Instance | None = again.committed("h7")
        assert inst is not None and len(store_rows(again, "h7")) == 1


async def test_python_api_input_and_unknown_ids(web: Dagger) -> None:
    with pytest.raises(UnknownInstance):
        await web.history("nope")
    with pytest.raises(UnknownInstance):
        await web.history("../bad/id")
    await create(web, "quick", "h8")
    await settled(web, "h8")
    assert (await web.history("h8", after=None)).items == (await web.history("h8")).items != []
    assert [e.seq for e in (await web.history("h8", after=0)).items] == [1]
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": True}, {"after": -2}, {"after": "1"}):
        with pytest.raises(InvalidInput):
            await web.history("h8", **bad)


async def test_rest_pages_404_and_400(web: Dagger, client: httpx.AsyncClient) -> None:
    await create(web, "orders", "h9", order_id="h9")
    await settled(web, "h9", listener_waiting)
    await patched(web, "h9", 5)
    seqs: list[int] = []
    after = None
    while True:
        params = {"limit": 3} if after is None else {"limit": 3, "after": after}
        r = await client.get("/api/v1/instances/h9/history", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 3
        seqs += [item["seq"] for item in body["items"]]
        if body["next"] is None:
            break
        after = body["next"]
    assert seqs == list(range(7))
    first = (await client.get("/api/v1/instances/h9/history")).json()["items"][0]
    assert first["event"] == "create" and first["changes"][0] == {"node": "h9", "from": "NOT_STARTED", "to": "SUBMITTED"}
    patch = (await client.get("/api/v1/instances/h9/history", params={"after": 5})).json()["items"][0]
    assert patch == {"seq": 6, "time": patch["time"], "event": "patch", "actor": "loop", "detail": "n"}
    r = await client.get("/api/v1/instances/nope/history")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    for query in ("limit=0", "limit=abc", "after=-5", "bogus=1", "limit=5000"):
        r = await client.get(f"/api/v1/instances/h9/history?{query}")
        assert r.status_code == 400, (query, r.text)
        assert r.json()["status"] == 400
    doc = (await client.get("/openapi.json")).json()
    operation = doc["paths"]["/api/v1/instances/{id}/history"]["get"]
    assert operation["operationId"] == "getInstanceHistory"
    assert {p["name"] for p in operation["parameters"]} >= {"id", "limit", "after"}


async def test_cli_history(web: Dagger) -> None:
    url = web.web_url
    assert url is not None
    add_flaky(web)
    await create(web, "flaky", "h10")
    await settled(web, "h10")
    code, out = await cli(url, "history", "h10")
    assert code == 0, out
    assert "create" in out and "failed" in out and "not fixed yet" in out and "Main" in out, out
    code, out = await cli(url, "history", "h10", "--json", "--limit", "1")
    assert code == 0, out
    page = json.loads(out)
    assert [i["event"] for i in page["items"]] == ["create"] and page["next"] == 0
    code, out = await cli(url, "history", "nope")
    assert code == 1 and "HTTP 404" in out and "Traceback" not in out, out
    code, out = await cli(url, "history", "h10", "--limit", "0")
    assert code == 2 and "--limit" in out, out
