"""Inventory §10.44-50: update counts and timestamps, update callbacks and the update
topic, delete-on-complete, the REST API and ``get_instance``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, ITemplateDAGInstance, ManualClock
from daggerflow.templates import ITemplateDAG
from daggerflow.web.app import create_app

from .support_29_56 import JsonKeyListener, decode, index_entries, node, rows, state

EngineFactory = Callable[..., Dagger]


class Ship(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["shipped"] = True


class ObserveListener(JsonKeyListener):
    correlatable_key = "order_id"


def _register(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="ORDER",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_listener_task_builder(
                    topic="observe_orders", task_type=ObserveListener, process_name="ORDER"
                ),
                helper.generic_executor_task_builder(task_type=Ship, name="ship"),
            ]
        ),
    )
    template = helper.generic_template(
        template_name="ObservedFlow", root_process=helper.build_and_link_processes([process])
    )
    engine.add_template("ObservedFlow", template)
    return template


class Recorder:
    """A task_update_callback: what it saw, and what was committed at that moment."""

    def __init__(self, engine_ref: list[Dagger]) -> None:
        self.engine_ref = engine_ref
        self.seen: list[tuple[str, str, int, float, int]] = []
        self.completed = asyncio.Event()

    async def __call__(self, workflow: ITemplateDAGInstance[Any, Any]) -> None:
        assert isinstance(workflow, ITemplateDAGInstance)
        committed = self.engine_ref[0].committed(workflow.id)
        committed_count = committed.update_count if committed is not None else -1
        self.seen.append(
            (workflow.id, workflow.status.code, workflow.update_count, workflow.lastupdated, committed_count)
        )
        if workflow.status.code == "COMPLETED":
            self.completed.set()


async def failing_callback(workflow: ITemplateDAGInstance[Any, Any]) -> None:
    raise RuntimeError("a broken observer")


# §10.44-45 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("inline_jobs", [True, False], ids=["inline-jobs", "jobs-after-commit"])
async def test_update_count_lastupdated_callbacks_and_update_topic(
    make_engine: EngineFactory, clock: ManualClock, inline_jobs: bool
) -> None:
    """§10.44/§10.45: every persisted change increments ``update_count`` and sets
    ``lastupdated``; every update callback is awaited after the commit with the workflow
    (a failing callback does not stop the others); the update topic gets a snapshot per
    commit keyed by the partition-key value: EXECUTING snapshots, then a COMPLETED one
    with ``update_count`` > 1. With ``inline_jobs`` the executor (which does not wait)
    starts and finishes in the commit that delivers the message: no snapshot shows it
    running; without, one does."""
    ref: list[Dagger] = []
    recorder = Recorder(ref)
    engine = make_engine(
        clock=clock,
        task_update_topic="task_update_topic",
        task_update_callbacks=[failing_callback, recorder],
        inline_jobs=inline_jobs,
    )
    ref.append(engine)
    await engine.start()
    try:
        template = _register(engine)
        t0 = clock.now()
        await template.create_instance("u", partition_key_lookup="order_id", order_id="U-1")
        # (committed() returns the live cached record: keep numbers, not the object)
        created = (state(engine, "u").update_count, state(engine, "u").lastupdated)
        assert created == (1, t0)

        clock.advance(5)
        await engine.submit("u")
        submitted = (state(engine, "u").update_count, state(engine, "u").lastupdated)
        assert submitted[0] > created[0] and submitted[1] == t0 + 5

        clock.advance(5)
        await engine.topics["observe_orders"].send(value={"order_id": "U-1"})
        await engine.wait_for("u", timeout=5)
        done = state(engine, "u")
        assert done.update_count > submitted[0] and done.lastupdated == t0 + 10
        assert done.runtime_parameters["shipped"] is True

        # Unchanged reads do not count as changes.
        await engine.get_instance("u")
        assert state(engine, "u").update_count == done.update_count

        await asyncio.wait_for(recorder.completed.wait(), 5)
        seen = [s for s in recorder.seen if s[0] == "u"]
        counts = [s[2] for s in seen]
        assert counts == sorted(set(counts)), "one callback per commit, in commit order"
        assert counts[0] == 1 and counts[-1] == done.update_count
        assert seen[0][1] == "NOT_STARTED" and seen[-1][1] == "COMPLETED"
        assert "EXECUTING" in [s[1] for s in seen]
        # Called after the commit: the store already held (at least) that state.
        assert all(committed >= count for _, _, count, _, committed in seen)
        assert seen[-1][3] == t0 + 10

        messages = engine.read_topic("task_update_topic", 0, 1000)
        snapshots = [decode(m.value) for m in messages]
        mine = [(m, s) for m, s in zip(messages, snapshots, strict=True) if s["id"] == "u"]
        assert {m.key for m, _ in mine} == {"U-1"}  # keyed by runtime_parameters[partition_key_lookup]
        statuses = [s["status"]["code"] for _, s in mine]
        assert statuses[0] == "NOT_STARTED" and statuses[-1] == "COMPLETED"
        assert statuses.count("COMPLETED") == 1
        executing = [s for _, s in mine if s["status"]["code"] == "EXECUTING"]
        ship_running = [
            s
            for s in executing
            for t in s["tasks"].values()
            if t["task_name"].endswith(".ship_executor_task") and t["status"]["code"] == "EXECUTING"
        ]
        if inline_jobs:
            assert len(executing) >= 1 and ship_running == []  # waiting for the message
        else:
            assert len(executing) >= 2 and len(ship_running) == 1  # ...then running the executor
        assert mine[-1][1]["update_count"] == done.update_count > 1
        assert [s["update_count"] for _, s in mine] == sorted({s["update_count"] for _, s in mine})
        completed = mine[-1][1]
        assert completed["task_type"] == "ROOT" and completed["runtime_parameters"]["shipped"] is True
        assert {t["status"]["code"] for t in completed["tasks"].values()} == {"COMPLETED"}
    finally:
        await engine.stop()


async def test_slow_callback_gets_the_state_of_its_own_commit(make_engine: EngineFactory) -> None:
    """§10.44: each callback gets the workflow as of the commit that triggered it, even if
    the callbacks lag behind the engine (a slow observer): root, tasks and parameters of
    one snapshot agree."""
    gate = asyncio.Event()
    finished = asyncio.Event()
    seen: list[tuple[str, dict[str, str], dict[str, Any], int]] = []

    async def slow_observer(workflow: ITemplateDAGInstance[Any, Any]) -> None:
        await gate.wait()
        tasks = {t.task_name.rsplit(".", 1)[-1]: t.status.code for t in workflow.tasks.values()}
        seen.append((workflow.status.code, tasks, dict(workflow.runtime_parameters), workflow.update_count))
        if workflow.status.code == "COMPLETED":
            finished.set()

    engine = make_engine(task_update_callbacks=[slow_observer])
    await engine.start()
    try:
        template = _register(engine)
        await template.create_instance("lag", submit_task=True, order_id="L-1")
        await engine.topics["observe_orders"].send(value={"order_id": "L-1"})
        await engine.wait_for("lag", timeout=5)  # the workflow is done; no callback ran yet
        gate.set()
        await asyncio.wait_for(finished.wait(), 5)
        assert seen[-1][3] == state(engine, "lag").update_count
        first_status, first_tasks, first_params, _ = seen[0]
        assert first_status == "EXECUTING"
        assert first_tasks["ORDER_listener_task"] == "EXECUTING"
        assert first_tasks["ship_executor_task"] == "NOT_STARTED"
        assert "shipped" not in first_params
        last_status, last_tasks, last_params, _ = seen[-1]
        assert last_status == "COMPLETED" and set(last_tasks.values()) == {"COMPLETED"}
        assert last_params["shipped"] is True
    finally:
        await engine.stop()


async def test_update_topic_key_defaults_to_instance_id(make_engine: EngineFactory) -> None:
    """§10.44: without ``partition_key_lookup`` the snapshots are keyed by the instance id."""
    engine = make_engine(task_update_topic="updates")
    await engine.start()
    try:
        template = _register(engine)
        await template.create_instance("k", submit_task=True, order_id="K-1")
        await engine.topics["observe_orders"].send(value={"order_id": "K-1"})
        await engine.wait_for("k", timeout=5)
        keys = {m.key for m in engine.read_topic("updates", 0, 1000) if decode(m.value)["id"] == "k"}
        assert keys == {"k"}
    finally:
        await engine.stop()


# §10.46 -----------------------------------------------------------------------------------------


async def test_delete_workflow_on_complete_really_deletes(make_engine: EngineFactory) -> None:
    """§10.46 (fix): with ``delete_workflow_on_complete`` a completed workflow is gone from
    the store, the listings and the index (Dagger wrote it back); observers still see its
    completion; workflows that have not completed are kept."""
    recorder = Recorder([])
    engine = make_engine(
        delete_workflow_on_complete=True, task_update_topic="updates", task_update_callbacks=[recorder]
    )
    recorder.engine_ref.append(engine)
    await engine.start()
    try:
        template = _register(engine)
        await template.create_instance("gone", submit_task=True, order_id="D-1")
        await template.create_instance("kept", submit_task=True, order_id="D-2")
        assert await engine.get_instance("gone") is not None
        assert engine.count_instances() == 2 and len(index_entries(engine)) == 2

        await engine.topics["observe_orders"].send(value={"order_id": "D-1"})
        final = await engine.wait_for("gone", timeout=5)
        assert final.status.code == "COMPLETED"  # waiters get the final state
        assert await engine.get_instance("gone") is None
        assert engine.committed("gone") is None
        assert [i.id for i in engine.list_instances()] == ["kept"]
        assert engine.count_instances() == 1 and engine.count_instances(status="COMPLETED") == 0
        assert [e[3] for e in index_entries(engine)] == ["kept"]
        assert rows(engine, "timers") == 0 and rows(engine, "jobs") == 0
        await asyncio.wait_for(recorder.completed.wait(), 5)
        assert recorder.seen[-1][:2] == ("gone", "COMPLETED")
        snapshots = [decode(m.value) for m in engine.read_topic("updates", 0, 1000)]
        assert [s["status"]["code"] for s in snapshots if s["id"] == "gone"][-1] == "COMPLETED"

        # Stopped workflows are not "completed": they stay inspectable.
        await engine.stop_instance("kept")
        assert (await engine.get_instance("kept")).status.code == "STOPPED"  # type: ignore[union-attr]
    finally:
        await engine.stop()


# §10.47-49 --------------------------------------------------------------------------------------


async def test_rest_ready_is_false_before_start(make_engine: EngineFactory) -> None:
    """§10.47: ``/service/ready`` is false before the worker has started."""
    engine = make_engine()
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/service/ready")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"is_ready": False}


async def test_rest_api_dagger_routes(make_engine: EngineFactory) -> None:
    """§10.47-49: on a started worker (``web_port=0`` binds a free port) ``/service/ready``
    is true, ``/tasks/instances`` lists every workflow with ``status.code``, ``task_type``
    ROOT, ``runtime_parameters`` and nested tasks, ``/tasks/instance/{id}`` returns one,
    and an unknown id is a JSON 404."""
    engine = make_engine(web_port=0)
    await engine.start()
    try:
        assert engine.web_url is not None and not engine.web_url.endswith(":0")
        template = _register(engine)
        await template.create_instance("r1", submit_task=True, order_id="R-1")
        await template.create_instance("r2", submit_task=True, order_id="R-2")
        await engine.topics["observe_orders"].send(value={"order_id": "R-2"})
        await engine.wait_for("r2", timeout=5)
        async with httpx.AsyncClient(base_url=engine.web_url, timeout=5) as client:
            ready = await client.get("/service/ready")
            assert ready.status_code == 200 and ready.json() == {"is_ready": True}

            listing = await client.get("/tasks/instances")
            assert listing.status_code == 200
            workflows = {w["id"]: w for w in listing.json()}
            assert set(workflows) == {"r1", "r2"}
            assert workflows["r1"]["status"]["code"] == "EXECUTING"
            assert workflows["r2"]["status"]["code"] == "COMPLETED"
            for w in workflows.values():
                assert w["task_type"] == "ROOT" and w["template_name"] == "ObservedFlow"
            assert workflows["r2"]["runtime_parameters"] == {
                "order_id": "R-2",
                "messages": [{"order_id": "R-2"}],
                "shipped": True,
            }
            tasks = {t["task_name"]: t for t in workflows["r1"]["tasks"].values()}
            assert tasks["ObservedFlow.ORDER"]["task_type"] == "SUB_DAG"
            assert tasks["ObservedFlow.ORDER.ORDER_listener_task"]["status"]["code"] == "EXECUTING"
            assert tasks["ObservedFlow.ORDER.ship_executor_task"]["status"]["code"] == "NOT_STARTED"

            one = await client.get("/tasks/instance/r1")
            assert one.status_code == 200
            assert one.json() == workflows["r1"]

            missing = await client.get("/tasks/instance/no-such-id")
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("application/json")
            assert "no-such-id" in missing.json()["error"]
    finally:
        await engine.stop()


# §10.50 -----------------------------------------------------------------------------------------


async def test_get_instance_returns_persisted_state(make_engine: EngineFactory) -> None:
    """§10.50: ``get_instance`` returns the persisted workflow, or None for an unknown id
    or a task id (only workflows are instances); a new engine on the same database (another
    worker, after a restart) sees the state the first one wrote."""
    first = make_engine("shared")
    await first.start()
    try:
        template = _register(first)
        await template.create_instance("g", submit_task=True, order_id="G-1")
        view = await first.get_instance("g")
        assert view is not None and view.status.code == "EXECUTING"
        assert view.runtime_parameters == {"order_id": "G-1"}
        assert view.template_name == "ObservedFlow"
        listener = node(state(first, "g"), "ORDER_listener_task")
        assert view.get_task(listener.id) is not None
        assert view.get_task(listener.id).status.code == "EXECUTING"  # type: ignore[union-attr]
        assert await first.get_instance(listener.id) is None
        assert await first.get_instance("unknown") is None
        await first.topics["observe_orders"].send(value={"order_id": "G-1"})
        await first.wait_for("g", timeout=5)
        count = state(first, "g").update_count
    finally:
        await first.stop()

    second = make_engine("shared")
    await second.start()
    try:
        _register(second)
        again = await second.get_instance("g")
        assert again is not None and again.status.code == "COMPLETED"
        assert again.update_count == count
        assert again.runtime_parameters["shipped"] is True
        assert {t.status.code for t in again.tasks.values()} == {"COMPLETED"}
    finally:
        await second.stop()
