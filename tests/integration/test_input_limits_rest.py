"""The refusals of tests/integration/test_input_limits.py through the REST API of a real
embedded worker (uvicorn on a free port, a SQLite file): each is a JSON 4xx, the worker goes on
serving, and a restart on the same store reads everything back (nothing poisoned)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from daggerflow import Dagger
from daggerflow.model.ids import MAX_ID_BYTES

from .test_input_limits import nested, register

CREATE = "/api/v1/templates/{}/instances"

BAD_BODIES: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty id", {"id": ""}, 422, "instance id"),
    ("slash id", {"id": "a/b"}, 422, "'/'"),
    ("dot-dot id", {"id": ".."}, 422, "relative path"),
    ("long id", {"id": "x" * (MAX_ID_BYTES + 1)}, 422, "bytes long"),
    ("megabyte id", {"id": "x" * 1_000_000}, 413, "request body"),
    ("control id", {"id": "a\u0007b"}, 422, "non-printable"),
    # Wrong JSON types are refused by the body's schema (400), before the engine sees them.
    ("bool id", {"id": True}, 400, "id"),
    ("lookup dict", {"id": "k1", "partition_key_lookup": {"a": 1}}, 400, "partition_key_lookup"),
    ("lookup int", {"id": "k2", "partition_key_lookup": 123}, 400, "partition_key_lookup"),
    ("big int", {"id": "b1", "runtime_parameters": {"n": 2**70}}, 422, "'n'"),
    ("deep", {"id": "d1", "runtime_parameters": {"deep": nested(65)}}, 422, "nested more than 64"),
    (
        "params too large",
        {"id": "t1", "runtime_parameters": {"blob": "x" * 70_000}},
        413,
        "max_parameters_bytes",
    ),
]


def check_error(r: httpx.Response, status: int, words: str, case: str) -> None:
    assert r.status_code == status, (case, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), case
    body = r.json()
    assert isinstance(body.get("error"), str) and words in body["error"], (case, body)


async def test_bad_creates_are_json_4xx_and_the_worker_serves_on(make_engine: Callable[..., Dagger]) -> None:
    # Small limits, so that "too large" stays cheap; the megabyte id is over the body limit
    # when the REST layer has one, else over the id rule (both refuse it).
    engine = make_engine(web_port=0, max_parameters_bytes=65536, max_instance_bytes=131072, max_message_bytes=4096,
                         task_update_topic="updates")  # fmt: skip
    register(engine)
    await engine.start()
    try:
        async with httpx.AsyncClient(base_url=engine.web_url or "", timeout=10) as client:
            for n, (case, body, status, words) in enumerate(BAD_BODIES):
                r = await client.post(CREATE.format("quick"), json=body)
                if case == "megabyte id" and r.status_code == 422:
                    status, words = 422, "bytes long"  # (no request body limit in this REST layer)
                check_error(r, status, words, case)
                assert engine.count_instances() == n, case  # nothing created
                ok = await client.post(
                    CREATE.format("quick"), json={"id": f"ok-{n}", "runtime_parameters": {"n": n}}
                )
                assert ok.status_code == 201, (case, ok.text)
                await engine.wait_for(f"ok-{n}", timeout=5)
            # Every name a user can type is a parameter.
            names = {k: k for k in ("id", "self", "submit_task", "partition_key_lookup", "dynamic_processes",
                                    "parallel_processes", "seed", "repartition")}  # fmt: skip
            r = await client.post(CREATE.format("quick"), json={"id": "names", "runtime_parameters": names})
            assert r.status_code == 201, r.text
            assert (await engine.wait_for("names", timeout=5)).runtime_parameters == {**names, "done": True}
            # Ints are ids too, addressed by their text.
            r = await client.post(CREATE.format("quick"), json={"id": 42, "partition_key_lookup": "order",
                                                                "runtime_parameters": {"order": "o-1"}})  # fmt: skip
            assert r.status_code == 201 and r.json()["id"] == "42", r.text
            assert (await client.get("/api/v1/instances/42")).status_code == 200
            # Ids that cannot exist are simply not found.
            for path in ("/api/v1/instances/..", "/api/v1/instances/%2E%2E", "/tasks/instance/a%00b"):
                assert (await client.get(path)).status_code in (404, 400), path
            assert (await client.post("/api/v1/instances/%00/stop")).status_code in (404, 400)
            # A message over max_message_bytes.
            r = await client.post("/topics/t/messages", json={"value": "x" * 5000})
            check_error(r, 413, "max_message_bytes", "message")
            assert engine.read_topic("t", 0, 10) == []
            assert (await client.post("/topics/t/messages", json={"value": "fine"})).status_code == 202
            listing = await client.get("/api/v1/instances", params={"limit": 1000})
            assert listing.status_code == 200
            expected = {f"ok-{n}" for n in range(len(BAD_BODIES))} | {"names", "42"}
            assert {i["id"] for i in listing.json()["items"]} == expected
            assert (await client.get("/tasks/instances")).status_code == 200
    finally:
        await engine.stop()
    # A restart on the same store reads everything back.
    again = make_engine(web_port=0)
    register(again)
    await again.start()
    try:
        async with httpx.AsyncClient(base_url=again.web_url or "", timeout=10) as client:
            listing = await client.get("/api/v1/instances", params={"limit": 1000})
            assert listing.status_code == 200 and {i["id"] for i in listing.json()["items"]} == expected
            for iid in expected:
                r = await client.get(f"/api/v1/instances/{iid}")
                assert r.status_code == 200 and r.json()["status"]["code"] == "COMPLETED", iid
    finally:
        await again.stop()


async def test_a_task_that_grows_its_instance_too_large_fails_through_rest(
    make_engine: Callable[..., Dagger],
) -> None:
    engine = make_engine(web_port=0, max_parameters_bytes=4096)
    register(engine)
    await engine.start()
    try:
        async with httpx.AsyncClient(base_url=engine.web_url or "", timeout=10) as client:
            r = await client.post(
                CREATE.format("grow"), json={"id": "huge", "runtime_parameters": {"grow": 10_000}}
            )
            assert r.status_code == 201, r.text
            huge = await engine.wait_for("huge", timeout=5)
            assert huge.status.code == "FAILURE"
            body = (await client.get("/api/v1/instances/huge")).json()
            errors = [t.get("error") for t in body["tasks"].values() if t.get("error")]
            assert errors and "TooLarge" in errors[0] and "max_parameters_bytes" in errors[0]
            r = await client.post(
                CREATE.format("grow"), json={"id": "small", "runtime_parameters": {"grow": 10}}
            )
            assert r.status_code == 201
            assert (await engine.wait_for("small", timeout=5)).status.code == "COMPLETED"
    finally:
        await engine.stop()
