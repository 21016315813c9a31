"""Search through the Python API and ``GET /api/v1/instances`` on a real worker (SQLite file,
uvicorn): parameter filters (declared, a listener's correlatable key, undeclared), waiting
listeners, correlation values, time ranges, AND, sort, and a 400 for unknown filters; the
search rows follow creation, parameter patches, task changes and deletion."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, InvalidInput, ManualClock
from daggerflow.model.query import InstanceQuery

from .test_rest import ORDER_READY, create, listener_waiting


class Rename(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["customer_id"] = "renamed"


def register_shop(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="Main", root_task=helper.generic_executor_task_builder(task_type=Rename, name="Main")
    )
    template = helper.generic_template(
        template_name="shop", root_process=process, search_attributes=["customer_id", "region"]
    )
    engine.add_template("shop", template)


def ids(items: list[Any]) -> list[str]:
    return [i["id"] if isinstance(i, dict) else i.id for i in items]


async def listing(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/v1/instances", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
async def shop(web: Dagger, clock: ManualClock) -> Dagger:
    register_shop(web)
    for n, (customer, region) in enumerate([("ann", "eu"), ("bob", "eu"), ("ann", "us"), ("cid", "us")]):
        await create(web, "shop", f"s{n}", submit=False, customer_id=customer, region=region, n=n)
        clock.advance(10)
    for n in range(3):
        await create(web, "orders", f"o{n}", order_id=f"order-{n}", customer_id="ann")
        await web.wait_for(f"o{n}", listener_waiting, timeout=5)
        clock.advance(10)
    return web


async def test_parameter_filters_combine_with_and(shop: Dagger, client: httpx.AsyncClient) -> None:
    body = await listing(client, **{"param.customer_id": "ann"})
    # Declared on shop, undeclared on orders (read, and found): newest first.
    assert ids(body["items"]) == ["o2", "o1", "o0", "s2", "s0"] and body["total"] == 5
    body = await listing(client, **{"param.customer_id": "ann", "param.region": "us"})
    assert ids(body["items"]) == ["s2"] and body["total"] == 1
    body = await listing(client, **{"param.customer_id": "ann", "template": "shop", "sort": "created"})
    assert ids(body["items"]) == ["s0", "s2"]
    # A number is compared as its JSON text.
    assert ids((await listing(client, **{"param.n": "3"}))["items"]) == ["s3"]
    # The listener's correlatable key is searchable without being declared.
    assert ids((await listing(client, **{"param.order_id": "order-1"}))["items"]) == ["o1"]
    # Paging keeps the order; the total counts every match.
    page = await listing(client, **{"param.customer_id": "ann", "limit": 2, "offset": 2})
    assert ids(page["items"]) == ["o0", "s2"] and page["next_offset"] == 4


async def test_waiting_correlation_and_time_filters(shop: Dagger, client: httpx.AsyncClient, clock: ManualClock) -> None:
    assert ids((await listing(client, waiting_on=ORDER_READY))["items"]) == ["o2", "o1", "o0"]
    assert ids((await listing(client, waiting_on="elsewhere"))["items"]) == []
    assert ids((await listing(client, correlation="order-2"))["items"]) == ["o2"]
    start = shop.committed("s0")
    assert start is not None
    t0 = start.root.time_created
    created = await listing(client, created_after=str(t0 + 10), created_before=str(t0 + 40), sort="created")
    assert ids(created["items"]) == ["s1", "s2", "s3"]
    # ISO-8601 is accepted too.
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(t0 + 60, UTC).isoformat()
    assert ids((await listing(client, created_after=iso))["items"]) == ["o2"]
    clock.advance(100)
    await shop.patch_parameters("s1", {"region": "apac"})
    updated = await listing(client, updated_after=str(clock.now() - 1), sort="-updated")
    assert ids(updated["items"]) == ["s1"]


async def test_search_rows_follow_patches_tasks_and_deletion(shop: Dagger, client: httpx.AsyncClient) -> None:
    await shop.patch_parameters("s1", {"customer_id": "zed"})
    assert ids(shop.list_instances(params={"customer_id": "zed"})) == ["s1"]
    assert ids(shop.list_instances(params={"customer_id": "bob"})) == []
    # A task that changes a searchable parameter moves its row.
    await shop.submit("s3")
    await shop.wait_for("s3", timeout=5)
    assert ids(shop.list_instances(params={"customer_id": "renamed"})) == ["s3"]
    assert ids(shop.list_instances(params={"customer_id": "cid"})) == []
    # A listener keyed on a patched value is found under the new value only.
    await shop.patch_parameters("o1", {"order_id": "order-9"})
    assert ids(shop.list_instances(correlation="order-9")) == ["o1"]
    assert ids(shop.list_instances(correlation="order-1")) == []
    assert ids(shop.list_instances(params={"order_id": "order-9"})) == ["o1"]


async def test_python_api_takes_a_query_or_keywords(shop: Dagger) -> None:
    q = InstanceQuery(template="shop", params=(("region", "eu"),), sort="created")
    assert ids(shop.list_instances(q)) == ["s0", "s1"]
    assert ids(shop.list_instances(q, status="NOT_STARTED", limit=1)) == ["s0"]
    assert shop.count_instances(q) == 2
    assert await shop.count_instances_async(params={"customer_id": "ann"}, template="orders") == 3
    found = await shop.list_instances_async(params={"region": "us"}, sort="-created")
    assert ids(found) == ["s3", "s2"]
    # The old keywords keep working (newest first now).
    assert ids(shop.list_instances(template="orders")) == ["o2", "o1", "o0"]
    with pytest.raises(InvalidInput, match="unknown filter colour"):
        shop.list_instances(colour="red")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"colour": "red"}, "colour"),
        ({"param.": "x"}, "param.NAME"),
        ({"sort": "name"}, "sort must be one of"),
        ({"created_after": "yesterday"}, "ISO-8601"),
        ({"status": "DONE"}, "DONE"),
    ],
)
async def test_unknown_or_malformed_filters_are_400(
    shop: Dagger, client: httpx.AsyncClient, params: dict[str, str], needle: str
) -> None:
    r = await client.get("/api/v1/instances", params=params)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
    assert r.json()["type"] == "InvalidFilter" and r.json()["filter"] == next(iter(params)), r.text


async def test_repeated_parameter_filter_is_400(shop: Dagger, client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/instances?param.region=eu&param.region=us")
    assert r.status_code == 400 and "given twice" in r.json()["error"]


async def test_daggers_route_keeps_creation_order_and_accepts_filters(shop: Dagger, client: httpx.AsyncClient) -> None:
    everything = (await client.get("/tasks/instances")).json()
    assert ids(everything) == ["s0", "s1", "s2", "s3", "o0", "o1", "o2"]
    some = (await client.get("/tasks/instances", params={"param.region": "us"})).json()
    assert ids(some) == ["s2", "s3"]


async def test_openapi_documents_the_filters(shop: Dagger, client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    params = {p["name"]: p for p in doc["paths"]["/api/v1/instances"]["get"]["parameters"]}
    assert {"param.NAME", "waiting_on", "correlation", "created_after", "created_before", "updated_after",
            "version", "sort"} <= set(params)  # fmt: skip
    assert params["sort"]["schema"]["enum"] == ["-created", "created", "-updated", "updated"]
    assert "search_attributes" in params["param.NAME"]["description"]


async def cli(url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daggerflow", *args, "--url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_lists_with_filters_and_sort(shop: Dagger) -> None:
    url = shop.web_url
    assert url is not None
    code, out = await cli(url, "instances", "--filter", "customer_id=ann", "--filter", "template=shop", "--json")
    assert code == 0, out
    assert ids(json.loads(out)["items"]) == ["s2", "s0"]
    code, out = await cli(url, "list", "-f", "param.region=us", "--sort", "created", "--json")
    assert code == 0 and ids(json.loads(out)["items"]) == ["s2", "s3"], out
    code, out = await cli(url, "list", "--filter", f"waiting_on={ORDER_READY}")
    assert code == 0 and "o2" in out and "s1" not in out and "1-3 of 3" in out, out
    code, out = await cli(url, "list", "--filter", "nonsense")
    assert code == 2 and "expected NAME=VALUE" in out and "Traceback" not in out, out
    code, out = await cli(url, "list", "--filter", "created_after=yesterday")
    assert code != 0 and "ISO-8601" in out and "Traceback" not in out, out
