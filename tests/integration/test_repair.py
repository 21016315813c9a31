"""Operators' actions on the embedded runtime: through the Python API and through REST on a
real server (the ``web``/``client`` fixtures: test_rest's templates)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, TaskInvalidState
from daggerflow.model.instance import Instance

from .test_rest import ORDER_READY, create, listener_waiting


class Flaky(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["runs"] = runtime_parameters.get("runs", 0) + 1
        if not runtime_parameters.get("fixed"):
            raise RuntimeError("not fixed yet")


def add_flaky(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="Main", root_task=helper.generic_executor_task_builder(task_type=Flaky, name="Main")
    )
    engine.add_template("flaky", helper.generic_template(template_name="flaky", root_process=process))


async def settled(engine: Dagger, iid: str, predicate: Any = None) -> Instance:
    await engine.wait_for(iid, predicate)
    found = await engine.get_instance_state(iid)
    assert found is not None
    return found


def node_of(inst: Instance, kind: str) -> str:
    return next(n.id for n in inst.nodes.values() if n.kind == kind)


async def test_retry_through_the_python_api_completes_a_failed_workflow(web: Dagger) -> None:
    add_flaky(web)
    await create(web, "flaky", "f1")
    failed = await settled(web, "f1")
    assert failed.status == "FAILURE"
    with pytest.raises(TaskInvalidState):
        await web.skip_task("f1", node_of(failed, "executor"))
    await web.retry("f1", {"fixed": True})
    done = await settled(web, "f1")
    assert done.status == "COMPLETED" and done.runtime_parameters["runs"] == 1  # a failed run keeps no changes
    with pytest.raises(TaskInvalidState):
        await web.retry("f1")


async def test_rest_retry_skip_complete_submit_and_patch(web: Dagger, client: httpx.AsyncClient) -> None:
    add_flaky(web)
    await create(web, "flaky", "f2")
    await web.wait_for("f2")
    r = await client.post("/api/v1/instances/f2/retry", json={"runtime_parameters": {"fixed": True}})
    assert r.status_code == 200, r.text
    assert (await settled(web, "f2")).status == "COMPLETED"
    assert (await client.post("/api/v1/instances/f2/retry")).status_code == 409
    assert (await client.post("/api/v1/instances/nope/retry")).status_code == 404
    r = await client.post("/api/v1/instances/f2/retry", json={"runtime_parameters": [1]})
    assert r.status_code == 400  # not an object: refused by the body decoder

    # Created, not submitted: started by REST.
    await create(web, "orders", "o5", submit=False, order_id="o5")
    assert (await web.get_instance_state("o5")).status == "NOT_STARTED"  # type: ignore[union-attr]
    r = await client.post("/api/v1/instances/o5/submit")
    assert r.status_code == 200 and r.json()["status"]["code"] in ("SUBMITTED", "EXECUTING")
    await web.wait_for("o5", listener_waiting)

    # A patched correlation value: the listener is found under the new value only.
    r = await client.patch("/api/v1/instances/o5/parameters", json={"order_id": "o6"})
    assert r.status_code == 200 and r.json()["runtime_parameters"]["order_id"] == "o6"
    await client.post(f"/topics/{ORDER_READY}/messages", json={"value": {"order_id": "o5"}})
    await client.post(f"/topics/{ORDER_READY}/messages", json={"value": {"order_id": "o6"}})
    done = await settled(web, "o5")
    assert done.status == "COMPLETED" and done.runtime_parameters["received"] == '{"order_id":"o6"}'  # not the o5 message
    assert (await client.patch("/api/v1/instances/o5/parameters", json={"x": 1})).status_code == 409
    assert (await client.patch("/api/v1/instances/o5/parameters", json=[1])).status_code == 400

    # Skip one waiting listener, complete another by hand.
    for iid, action, status in (("o7", "skip", "SKIPPED"), ("o8", "complete", "COMPLETED")):
        await create(web, "orders", iid, order_id=iid)
        node = node_of(await settled(web, iid, listener_waiting), "listener")
        assert (await client.post(f"/api/v1/instances/{iid}/tasks/nope/{action}")).status_code == 404
        r = await client.post(f"/api/v1/instances/{iid}/tasks/{node}/{action}", params={"actor": "ops"})
        assert r.status_code == 200, r.text
        end = await web.get_instance_state(iid)
        assert end is not None and end.nodes[node].status == status and end.status == "COMPLETED"
        assert (await client.post(f"/api/v1/instances/{iid}/tasks/{node}/{action}")).status_code == 409


async def cli(url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daggerflow", *args, "--url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_submit_patch_complete_skip_and_retry(web: Dagger) -> None:
    url = web.web_url
    assert url is not None
    await create(web, "orders", "c1", submit=False, order_id="c1")
    code, out = await cli(url, "patch", "c1", "--params", '{"note": "by hand"}')
    assert code == 0 and "patched c1" in out, out
    code, out = await cli(url, "submit", "c1")
    assert code == 0 and "submitted c1" in out, out
    node = node_of(await settled(web, "c1", listener_waiting), "listener")
    code, out = await cli(url, "complete", "c1", node, "--json")
    assert code == 0 and '"COMPLETED"' in out, out
    end = await settled(web, "c1")
    assert end.status == "COMPLETED" and end.runtime_parameters["note"] == "by hand"
    code, out = await cli(url, "skip", "c1", node)
    assert code == 1 and "HTTP 409" in out, out
    add_flaky(web)
    await create(web, "flaky", "c2")
    assert (await settled(web, "c2")).status == "FAILURE"
    code, out = await cli(url, "retry", "c2", "--params", "[1]")
    assert code == 2 and "JSON object" in out, out
    code, out = await cli(url, "retry", "c2", "--params", '{"fixed": true}')
    assert code == 0 and "retried c2" in out, out
    assert (await settled(web, "c2")).status == "COMPLETED"
