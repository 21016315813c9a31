"""The REST layer's input handling over a real HTTP server (uvicorn on a free port) and a real
SQLite file: bodies and query strings are decoded into strict structs, runtime parameters are
one plain dict whatever their names, request bodies are bounded by ``max_request_bytes``,
and every refusal is a JSON error that leaves nothing written and the worker serving.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from daggerflow import Dagger

from .test_rest import register_templates

CREATE = "/api/v1/templates/quick/instances"


def error_of(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    assert set(body) <= {"error", "status", "type", "filter"}  # filter: an InvalidFilter names it
    message: str = body["error"]
    return message


async def still_serving(web: Dagger, client: httpx.AsyncClient, iid: str) -> None:
    r = await client.post(CREATE, json={"id": iid, "runtime_parameters": {"ok": 1}})
    assert r.status_code == 201, r.text
    done = await web.wait_for(iid, timeout=5)
    assert done.status.code == "COMPLETED"


# Runtime parameters are one dict ----------------------------------------------------------

#: Names that collided with create_instance's keyword arguments (a 500 "got multiple values",
#: or silently dropped): each is now an ordinary runtime parameter.
RESERVED_LOOKING = [
    "id", "self", "submit_task", "partition_key_lookup", "dynamic_processes",
    "parallel_processes", "seed", "repartition", "overrides", "template", "runtime_parameters",
]  # fmt: skip


async def test_every_parameter_name_is_stored_and_read_back(web: Dagger, client: httpx.AsyncClient) -> None:
    params: dict[str, Any] = {name: f"value of {name}" for name in RESERVED_LOOKING}
    params["seed"] = 7
    params["repartition"] = True
    r = await client.post(CREATE, json={"id": "names", "runtime_parameters": params})
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "names"  # the body's id, not the parameter named "id"
    done = await web.wait_for("names", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters == {**params, "done": True}
    for route in ("/api/v1/instances/names", "/tasks/instance/names"):
        assert (await client.get(route)).json()["runtime_parameters"] == {**params, "done": True}


@pytest.mark.parametrize("name", RESERVED_LOOKING)
async def test_each_name_alone(web: Dagger, client: httpx.AsyncClient, name: str) -> None:
    r = await client.post(CREATE, json={"id": f"p-{name}", "runtime_parameters": {name: [1, {"x": None}]}})
    assert r.status_code == 201, r.text
    assert r.json()["runtime_parameters"][name] == [1, {"x": None}]
    assert (await web.wait_for(f"p-{name}", timeout=5)).runtime_parameters[name] == [1, {"x": None}]


async def test_integer_id_and_generated_id(web: Dagger, client: httpx.AsyncClient) -> None:
    r = await client.post(CREATE, json={"id": 42})
    assert r.status_code == 201 and r.json()["id"] == "42"
    r = await client.post(CREATE, json={"id": None, "submit": False})
    assert r.status_code == 201 and len(r.json()["id"]) == 36  # a UUID
    assert r.json()["status"]["code"] == "NOT_STARTED"


# Strict bodies ---------------------------------------------------------------------------

BAD_CREATE_BODIES: list[tuple[str, Any, str]] = [
    ("submit-as-string", {"submit": "false"}, "submit"),
    ("submit-as-int", {"submit": 0}, "submit"),
    ("misspelt-field", {"sumbit": False}, "sumbit"),
    ("unknown-field", {"runtime_parameters": {}, "priority": 1}, "priority"),
    ("id-bool", {"id": True}, "id"),
    ("id-float", {"id": 1.5}, "id"),
    ("id-list", {"id": ["a"]}, "id"),
    ("params-list", {"runtime_parameters": [1, 2]}, "runtime_parameters"),
    ("params-string", {"runtime_parameters": "a=1"}, "runtime_parameters"),
    ("pkl-object", {"partition_key_lookup": {"a": 1}}, "partition_key_lookup"),
    ("pkl-int", {"partition_key_lookup": 123}, "partition_key_lookup"),
    ("body-array", [], "object"),
    ("body-null", None, "object"),
]


async def test_bad_create_bodies_are_400_naming_the_field(web: Dagger, client: httpx.AsyncClient) -> None:
    for n, (case, body, needle) in enumerate(BAD_CREATE_BODIES):
        r = await client.post(CREATE, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        message = error_of(r, 400)
        assert needle in message, (case, message)
        assert web.count_instances() == n, case  # nothing created
        await still_serving(web, client, f"after-{case}")
    # The list of accepted fields is given with the refusal.
    message = error_of(await client.post(CREATE, json={"sumbit": True}), 400)
    for field in ("id", "runtime_parameters", "submit", "partition_key_lookup"):
        assert field in message


async def test_submit_false_creates_without_starting(web: Dagger, client: httpx.AsyncClient) -> None:
    r = await client.post(CREATE, json={"id": "held", "submit": False})
    assert r.status_code == 201
    assert web.committed("held").status == "NOT_STARTED"  # type: ignore[union-attr]


BAD_MESSAGE_BODIES: list[tuple[str, Any, str]] = [
    ("unknown-field", {"value": "x", "partition": 1}, "partition"),
    ("key-int", {"value": "x", "key": 5}, "key"),
    ("headers-int-value", {"value": "x", "headers": {"h": 1}}, "headers"),
    ("headers-list", {"value": "x", "headers": ["h"]}, "headers"),
    ("no-value", {"key": "k"}, "value"),
]


async def test_bad_message_bodies_are_400_naming_the_field(web: Dagger, client: httpx.AsyncClient) -> None:
    for case, body, needle in BAD_MESSAGE_BODIES:
        message = error_of(await client.post("/topics/t/messages", json=body), 400)
        assert needle in message, (case, message)
    assert web.read_topic("t", 0, 10) == []
    r = await client.post("/topics/t/messages", json={"value": None, "key": None, "headers": {"a": "b"}})
    assert r.status_code == 202 and r.json() == {"topic": "t", "offset": 0}
    [msg] = web.read_topic("t", 0, 10)
    assert (msg.value, msg.headers) == ("null", {"a": "b"})


async def test_deeply_nested_body_is_refused_not_a_500(web: Dagger, client: httpx.AsyncClient) -> None:
    depth = 100_000
    body = b'{"runtime_parameters": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    r = await client.post(CREATE, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "nested" in error_of(r, 422)
    assert web.count_instances() == 0
    await still_serving(web, client, "after-deep")


# Strict query strings ----------------------------------------------------------------------


async def test_unknown_query_parameters_are_named_with_the_accepted_ones(client: httpx.AsyncClient) -> None:
    message = error_of(await client.get("/api/v1/instances", params={"statuss": "COMPLETED"}), 400)
    assert "'statuss'" in message
    for accepted in ("status", "template", "limit", "offset"):
        assert accepted in message
    message = error_of(await client.get("/tasks/instances?limit=1&page=2&zz="), 400)
    assert "'page'" in message and "'zz'" in message
    message = error_of(await client.get("/topics/t/messages?offset=3"), 400)
    assert "'offset'" in message and "from" in message
    message = error_of(await client.get("/api/v1/templates?verbose=1"), 400)
    assert "'verbose'" in message and "takes none" in message
    error_of(await client.post(f"{CREATE}?submit=false", json={}), 400)


async def test_wrong_query_types_and_repeats_are_400(client: httpx.AsyncClient) -> None:
    assert "limit" in error_of(await client.get("/api/v1/instances?limit=ten"), 400)
    assert "offset" in error_of(await client.get("/tasks/instances?offset=1.5"), 400)
    assert "from" in error_of(await client.get("/topics/t/messages?from=x"), 400)
    assert "more than once" in error_of(await client.get("/api/v1/instances?limit=1&limit=2"), 400)
    assert "DONE" in error_of(await client.get("/api/v1/instances?status=DONE"), 400)


async def test_probes_may_add_query_parameters(client: httpx.AsyncClient) -> None:
    r = await client.get("/service/ready", params={"probe": "k8s"})
    assert r.status_code == 200 and r.json() == {"is_ready": True}
    assert (await client.get("/metrics", params={"scrape": "1"})).status_code == 200


async def test_a_trailing_slash_is_a_404_not_another_route(client: httpx.AsyncClient) -> None:
    error_of(await client.get("/api/v1/instances/"), 404)


# Request body size limit -------------------------------------------------------------------


@pytest.fixture
async def small(make_engine: Callable[..., Dagger]) -> AsyncIterator[Dagger]:
    engine = make_engine(name="small", web_port=0, max_request_bytes=1000)
    register_templates(engine)
    async with engine:
        yield engine


def padded(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes."""
    head, tail = b'{"runtime_parameters": {"pad": "', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_a_body_over_max_request_bytes_is_413(small: Dagger) -> None:
    async with httpx.AsyncClient(base_url=small.web_url or "", timeout=10) as client:
        headers = {"content-type": "application/json"}
        ok = await client.post(CREATE, content=padded(1000), headers=headers)
        assert ok.status_code == 201, ok.text
        r = await client.post(CREATE, content=padded(1001), headers=headers)
        message = error_of(r, 413)
        assert r.json()["type"] == "TooLarge"
        assert "1001" in message and "1000" in message and "max_request_bytes" in message

        # Without Content-Length (chunked): refused while streaming, before the whole body is read.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10_000):
                yield b"x" * 100

        r = await client.post(CREATE, content=chunks(), headers=headers)
        message = error_of(r, 413)
        assert "stopped reading" in message
        counted = int(re.search(r"request body is (\d+) bytes", message).group(1))  # type: ignore[union-attr]
        assert 1000 < counted < 1_000_000  # it stopped counting well before the megabyte sent

        error_of(await client.post("/topics/t/messages", content=b" " * 5000, headers=headers), 413)
        assert small.read_topic("t", 0, 10) == []
        assert small.count_instances() == 1
        r = await client.post(CREATE, json={"id": "after-413"})
        assert r.status_code == 201
        assert (await small.wait_for("after-413", timeout=5)).status.code == "COMPLETED"


def test_max_request_bytes_option() -> None:
    assert Dagger(web_port=None, store="memory://").max_request_bytes == 2 * 1024 * 1024
    assert Dagger(web_port=None, store="memory://", max_request_bytes=10).config.max_request_bytes == 10
    from daggerflow import ConfigurationError

    for bad in (0, -1, "1", True):
        with pytest.raises(ConfigurationError, match="max_request_bytes"):
            Dagger(web_port=None, store="memory://", max_request_bytes=bad)
