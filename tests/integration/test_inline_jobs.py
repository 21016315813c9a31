"""Inline jobs (``inline_jobs=True``, the default): user code that a batch starts runs
before that batch commits; what finishes without waiting is applied in the same batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, KafkaCommandTask
from daggerflow.machine import Create
from daggerflow.model.instance import Instance
from daggerflow.model.template import instantiate
from daggerflow.pipeline.items import InstanceEvent

GATE: dict[str, asyncio.Event] = {}
RUNS: list[str] = []


class SendOrder(KafkaCommandTask[str, str]):
    engine: Dagger  # set by _engine

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        RUNS.append(f"send:{runtime_parameters['order_id']}")
        assert self.topic is not None
        await self.engine.topics[self.topic].send(value=json.dumps({"id": runtime_parameters["order_id"]}))
        runtime_parameters["sent"] = True


class Stamp(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        RUNS.append(f"stamp:{runtime_parameters['order_id']}")
        runtime_parameters["stamped"] = True


class WaitForGate(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        RUNS.append(f"wait:{runtime_parameters['order_id']}")
        await GATE[runtime_parameters["order_id"]].wait()
        runtime_parameters["waited"] = True


class Boom(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        raise ValueError("no oven")


def _engine(make_engine: Callable[..., Dagger], **options: Any) -> Dagger:
    engine = make_engine(**options)
    SendOrder.engine = engine
    engine.create_topic("orders")
    h = DAGBuilderHelper(engine)
    chain = h.build_and_link_tasks(
        [
            h.generic_command_task_builder(topic="orders", task_type=SendOrder, process_name="P"),
            h.generic_executor_task_builder(task_type=Stamp, name="stamp"),
        ]
    )
    for name, root in [
        ("Chain", chain),
        ("Gated", h.generic_executor_task_builder(task_type=WaitForGate, name="gated")),
        ("Boom", h.generic_executor_task_builder(task_type=Boom, name="boom")),
        (
            "Both",
            h.generic_parallel_task_builder(
                name="both",
                tasks=[
                    h.generic_executor_task_builder(task_type=WaitForGate, name="gated"),
                    h.generic_executor_task_builder(task_type=Stamp, name="stamp"),
                ],
            ),
        ),
    ]:
        process = h.generic_process_builder(process_name="P", root_task=root)
        engine.add_template(name, h.generic_template(template_name=name, root_process=process))
    return engine


def _create(engine: Dagger, template: str, iid: str) -> Instance:
    """Apply a create-and-submit as ONE batch, synchronously; return the committed state."""
    spec = engine.template_dags[template].spec
    inst = instantiate(spec, iid, {"order_id": iid}, now=engine.clock.now())
    processor = engine.runtime.processor
    assert processor is not None
    processor.process([InstanceEvent(iid, Create(inst, submit=True))])
    committed = engine.committed(iid)
    assert committed is not None
    return committed


@pytest.mark.parametrize("inline", [True, False])
async def test_jobs_that_do_not_wait_finish_in_the_batch_that_starts_them(
    make_engine: Callable[..., Dagger], inline: bool
) -> None:
    RUNS.clear()
    engine = _engine(make_engine, inline_jobs=inline)
    async with engine:
        state = _create(engine, "Chain", "c1")
        store = engine.runtime.store
        if inline:
            # Both tasks ran, their outcomes and the command message committed in that one
            # batch: no job record, and the message is in the topic already.
            assert state.status == "COMPLETED"
            assert state.runtime_parameters["sent"] is True and state.runtime_parameters["stamped"] is True
            assert store.pending_jobs() == []
            assert [json.loads(m.value) for m in engine.read_topic("orders", 0, 10)] == [{"id": "c1"}]
            assert RUNS == ["send:c1", "stamp:c1"]
        else:
            assert state.status == "EXECUTING"
            assert [j.node for j in store.pending_jobs()] != []
        done = await engine.wait_for("c1", timeout=5)
        assert done.status.code == "COMPLETED"
        assert [json.loads(m.value) for m in engine.read_topic("orders", 0, 10)] == [{"id": "c1"}]
    assert RUNS == ["send:c1", "stamp:c1"]


async def test_a_job_that_waits_is_stored_and_reports_later(make_engine: Callable[..., Dagger]) -> None:
    RUNS.clear()
    GATE["g1"] = asyncio.Event()
    engine = _engine(make_engine)
    async with engine:
        state = _create(engine, "Gated", "g1")
        assert state.status == "EXECUTING"
        # Started before the commit, still running: its record is committed, so a crash
        # now would run it again after the restart.
        assert [j.job for j in engine.runtime.store.pending_jobs()] == ["execute"]
        assert RUNS == ["wait:g1"]
        GATE["g1"].set()
        done = await engine.wait_for("g1", timeout=5)
        assert done.status.code == "COMPLETED" and done.runtime_parameters["waited"] is True
        assert engine.runtime.store.pending_jobs() == []
    assert RUNS == ["wait:g1"]  # ran once


async def test_a_waiting_job_does_not_undo_a_sibling_applied_in_the_same_batch(
    make_engine: Callable[..., Dagger],
) -> None:
    """The waiting job diffs its parameters against what it started from; the sibling's
    change, applied later in that batch, must survive the waiting job's outcome."""
    GATE["b1"] = asyncio.Event()
    engine = _engine(make_engine)
    async with engine:
        state = _create(engine, "Both", "b1")
        assert state.runtime_parameters.get("stamped") is True  # the sibling finished inline
        assert "waited" not in state.runtime_parameters
        GATE["b1"].set()
        done = await engine.wait_for("b1", timeout=5)
        assert done.status.code == "COMPLETED"
        assert done.runtime_parameters["stamped"] is True and done.runtime_parameters["waited"] is True


async def test_user_code_failing_inline_fails_the_task_with_its_error(make_engine: Callable[..., Dagger]) -> None:
    engine = _engine(make_engine)
    async with engine:
        state = _create(engine, "Boom", "f1")
        boom = next(n for n in state.nodes.values() if n.name.endswith("boom_executor_task"))
        assert boom.status == "FAILURE" and boom.error is not None and "ValueError: no oven" in boom.error
        assert state.status == "FAILURE"
        assert engine.runtime.store.pending_jobs() == []


async def test_at_the_concurrency_limit_jobs_run_after_the_commit(make_engine: Callable[..., Dagger]) -> None:
    """With every job slot taken, a new job is not started inline: it is stored and
    started after the commit, and waits for a slot like any job."""
    RUNS.clear()
    GATE["l1"] = asyncio.Event()
    engine = _engine(make_engine, max_concurrent_jobs=1)
    async with engine:
        _create(engine, "Gated", "l1")  # holds the only slot
        state = _create(engine, "Chain", "l2")
        assert state.status == "EXECUTING"
        assert {j.instance for j in engine.runtime.store.pending_jobs()} == {"l1", "l2"}
        assert RUNS == ["wait:l1"]
        GATE["l1"].set()
        assert (await engine.wait_for("l2", timeout=5)).status.code == "COMPLETED"
        assert (await engine.wait_for("l1", timeout=5)).status.code == "COMPLETED"
    assert sorted(RUNS) == ["send:l2", "stamp:l2", "wait:l1"]
