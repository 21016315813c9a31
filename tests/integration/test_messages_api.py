"""The message routes on a real embedded worker (SQLite file, or RocksDB with
``DAGGERFLOW_TEST_STORE=rocksdb``; uvicorn on a free port): a topic's newest messages with
paging, what became of each message (matched, duplicate, key mismatch, parse error and
dead-lettered, no waiter, agent, not read), the dead letters, and a replay that completes the
instance once the listener's mapping is fixed; bad requests get a 4xx naming the problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, KafkaListenerTask, ManualClock
from daggerflow.model.instance import Instance

KITCHEN = "kitchen"
AUDIT = "audit"


class Ready(KafkaListenerTask[str, str]):
    """Waits for the kitchen's message for its ``order_id``; a message's ``id`` deduplicates."""

    correlatable_key = "order_id"
    broken = False  # the mapping fails while set: a bug fixed by a deploy, in the replay test

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[tuple[str, str]]:
        if Ready.broken:
            raise KeyError("order_id")
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    def get_message_id(self, payload: Any) -> str | None:
        found = json.loads(payload).get("id")
        return None if found is None else str(found)

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


def register(engine: Dagger) -> None:
    h = DAGBuilderHelper(engine)
    chain = h.build_and_link_tasks([h.generic_listener_task_builder(topic=KITCHEN, task_type=Ready, process_name="Wait")])
    engine.add_template("meal", h.generic_template(template_name="meal", root_process=h.generic_process_builder(
        process_name="Wait", root_task=chain)))  # fmt: skip

    @engine.agent(AUDIT)
    async def audit(value: Any) -> None:
        if "bad" in str(value):
            raise ValueError("audit refuses it")


@pytest.fixture
async def web(make_engine: Callable[..., Dagger], clock: ManualClock) -> AsyncIterator[Dagger]:
    Ready.broken = False
    engine = make_engine(web_port=0, clock=clock)
    register(engine)
    async with engine:
        yield engine


@pytest.fixture
async def client(web: Dagger) -> AsyncIterator[httpx.AsyncClient]:
    assert web.web_url is not None
    async with httpx.AsyncClient(base_url=web.web_url, timeout=10) as c:
        yield c


def waiting(inst: Instance) -> bool:
    return any(n.kind == "listener" and n.status == "EXECUTING" for n in inst.nodes.values())


async def order(web: Dagger, iid: str, order_id: str) -> None:
    await web.template_dags["meal"].create_instance(iid, submit_task=True, order_id=order_id)
    await web.wait_for(iid, waiting, timeout=5)


async def drained(web: Dagger) -> None:
    """Until every reader has read every message and nothing is left to apply."""
    runtime: Any = web.runtime
    async with asyncio.timeout(5):
        while not runtime.idle():
            await asyncio.sleep(0.005)


async def post(client: httpx.AsyncClient, topic: str, value: Any, key: str | None = None) -> int:
    r = await client.post(f"/topics/{topic}/messages", json={"key": key, "value": value})
    assert r.status_code == 202, r.text
    offset: int = r.json()["offset"]
    return offset


async def explain(client: httpx.AsyncClient, topic: str, offset: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/messages/{topic}/{offset}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def test_each_message_is_explained(web: Dagger, client: httpx.AsyncClient) -> None:
    await order(web, "o1", "A-1")
    await order(web, "o2", "A-2")

    first = await post(client, KITCHEN, {"order_id": "A-1", "id": "m1"}, key="A-1")
    await web.wait_for("o1", lambda i: i.status == "COMPLETED", timeout=5)
    again = await post(client, KITCHEN, {"order_id": "A-1", "id": "m1"})
    other = await post(client, KITCHEN, {"order_id": "A-3"})
    garbled = await post(client, KITCHEN, "not json")
    await drained(web)

    e = await explain(client, KITCHEN, first)
    assert e["verdict"] == "matched", e
    assert [(d["instance"], d["status"]) for d in e["matched"]] == [("o1", "COMPLETED")]
    assert e["pairs"] == [{"key": "order_id", "value": "A-1"}] and e["message_id"] == "m1"
    assert e["message"]["key"] == "A-1" and json.loads(e["message"]["value"]) == {"order_id": "A-1", "id": "m1"}
    assert e["readers"] == ["Ready"] and "1 instance" in e["summary"]

    e = await explain(client, KITCHEN, again)
    assert e["verdict"] == "duplicate", e
    assert e["matched"] == [] and "'m1'" in e["summary"]

    e = await explain(client, KITCHEN, other)
    assert e["verdict"] == "key_mismatch", e
    assert [(n["instance"], n["key"], n["value"]) for n in e["near"]] == [("o2", "order_id", "A-2")]
    assert "order_id=A-3" in e["summary"] and "order_id=A-2" in e["summary"]

    e = await explain(client, KITCHEN, garbled)
    assert e["verdict"] == "dead_lettered", e
    assert e["error"].startswith("JSONDecodeError") and "Traceback" in e["traceback"]
    assert e["dead_letter"]["source_offset"] == garbled and e["dead_letter"]["consumer"]

    # Once o2 has its message nobody waits on the topic: a message for nobody has no waiter.
    await post(client, KITCHEN, {"order_id": "A-2"})
    await web.wait_for("o2", lambda i: i.status == "COMPLETED", timeout=5)
    nobody = await post(client, KITCHEN, {"order_id": "A-9"})
    await drained(web)
    e = await explain(client, KITCHEN, nobody)
    assert e["verdict"] == "no_waiter", e
    assert e["near"] == [] and "order_id=A-9" in e["summary"]

    fine, refused = await post(client, AUDIT, "fine"), await post(client, AUDIT, "bad one")
    await drained(web)
    assert (await explain(client, AUDIT, fine))["verdict"] == "agent"
    e = await explain(client, AUDIT, refused)
    assert e["verdict"] == "dead_lettered" and "audit refuses it" in e["summary"], e

    await web.append("nobody-reads", None, "x")
    assert (await explain(client, "nobody-reads", 0))["verdict"] == "not_read"

    # A record of the dead-letter topic says whose letter it is.
    letters = (await client.get("/api/v1/dead-letters")).json()
    assert letters["topic"] == web.dead_letter_topic and letters["total"] == 2
    assert [(x["topic"], x["source_offset"]) for x in letters["items"]] == [(AUDIT, refused), (KITCHEN, garbled)]
    e = await explain(client, web.dead_letter_topic, letters["items"][0]["offset"])
    assert e["verdict"] == "letter" and e["dead_letter"]["source_offset"] == refused


async def test_newest_messages_newest_first_with_paging(web: Dagger, client: httpx.AsyncClient) -> None:
    for n in range(5):
        await post(client, KITCHEN, {"order_id": f"P-{n}", "pad": "x" * (600 if n == 4 else 1)}, key=f"k{n}")
    page = (await client.get("/api/v1/messages", params={"topic": KITCHEN, "limit": 2})).json()
    assert [m["offset"] for m in page["items"]] == [4, 3] and page["next_before"] == 3
    newest = page["items"][0]
    assert newest["key"] == "k4" and newest["truncated"] and len(newest["value"]) == 500
    assert newest["size"] > 600 and newest["partition"] is None
    older = (await client.get("/api/v1/messages", params={"topic": KITCHEN, "limit": 2, "before": 3})).json()
    assert [m["offset"] for m in older["items"]] == [2, 1] and older["next_before"] == 1
    last = (await client.get("/api/v1/messages", params={"topic": KITCHEN, "limit": 2, "before": 1})).json()
    assert [m["offset"] for m in last["items"]] == [0] and last["next_before"] is None
    whole = await explain(client, KITCHEN, 4)
    assert len(whole["message"]["value"]) > 600 and not whole["message"]["truncated"]
    empty = (await client.get("/api/v1/messages", params={"topic": "never-written"})).json()
    assert empty == {"topic": "never-written", "items": [], "next_before": None}


async def test_replay_after_the_mapping_is_fixed_completes_the_instance(
    web: Dagger, client: httpx.AsyncClient
) -> None:
    await order(web, "o7", "A-7")
    Ready.broken = True
    offset = await post(client, KITCHEN, {"order_id": "A-7"}, key="A-7")
    await drained(web)
    letters = (await client.get("/api/v1/dead-letters")).json()["items"]
    assert [(x["topic"], x["source_offset"], x["key"]) for x in letters] == [(KITCHEN, offset, "A-7")]
    assert letters[0]["error"] == "KeyError: 'order_id'"

    Ready.broken = False  # the fix is deployed
    r = await client.post(f"/api/v1/dead-letters/{letters[0]['offset']}/replay", params={"actor": "oncall"})
    assert r.status_code == 202, r.text
    replayed = r.json()
    assert replayed["topic"] == KITCHEN and replayed["offset"] == offset + 1
    assert replayed["dead_letter"] == f"{web.dead_letter_topic}@{letters[0]['offset']}"
    done = await web.wait_for("o7", lambda i: i.status == "COMPLETED", timeout=5)
    assert done.status.code == "COMPLETED"
    e = await explain(client, KITCHEN, replayed["offset"])
    assert e["verdict"] == "matched" and e["message"]["headers"] == {"daggerflow-replay-of": replayed["dead_letter"]}
    assert json.loads(e["message"]["value"]) == {"order_id": "A-7"}


async def test_a_binary_value_is_replayed_byte_for_byte(web: Dagger, client: httpx.AsyncClient) -> None:
    raw = b"\xff\xfe order"
    await web.append(KITCHEN, "b", raw)
    await drained(web)
    letter = (await client.get("/api/v1/dead-letters")).json()["items"][0]
    assert letter["binary"] and letter["value"] == raw.hex()
    r = await client.post(f"/api/v1/dead-letters/{letter['offset']}/replay")
    assert r.status_code == 202
    again = web.read_topic(KITCHEN, r.json()["offset"], 1)[0]
    assert again.value == raw


async def test_bad_requests_name_the_problem(web: Dagger, client: httpx.AsyncClient) -> None:
    r = await client.get(f"/api/v1/messages/{KITCHEN}/7")
    assert r.status_code == 404 and "kitchen@7" in r.json()["error"]
    for bad in ("seven", "-1", "²", str(2**63)):
        r = await client.get(f"/api/v1/messages/{KITCHEN}/{bad}")
        assert r.status_code == 400 and "offset" in r.json()["error"], bad
        assert (await client.post(f"/api/v1/dead-letters/{bad}/replay")).status_code == 400, bad
    r = await client.get("/api/v1/messages")
    assert r.status_code == 400 and "topic" in r.json()["error"]
    for params in ({"topic": KITCHEN, "limit": 0}, {"topic": KITCHEN, "before": -1}, {"topic": KITCHEN, "x": 1}):
        assert (await client.get("/api/v1/messages", params=params)).status_code == 400, params
    assert (await client.get("/api/v1/dead-letters", params={"limit": 5000})).status_code == 400
    await post(client, KITCHEN, {"order_id": "Z"})
    r = await client.post("/api/v1/dead-letters/0/replay")
    assert r.status_code == 404 and "dead-letter" in r.json()["error"]
    r = await client.get("/api/v1/dead-letters/0/replay")
    assert r.status_code == 405
