"""Batches that start and end the same job: the job is neither stored nor run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask
from daggerflow.machine import Create, Stop
from daggerflow.model.template import instantiate
from daggerflow.pipeline.items import InstanceEvent

RUNS: list[str] = []


class Charge(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        RUNS.append(runtime_parameters["order_id"])


async def test_job_started_and_stopped_in_one_batch_leaves_nothing(
    make_engine: Callable[..., Dagger],
) -> None:
    RUNS.clear()
    engine = make_engine()
    helper = DAGBuilderHelper(engine)
    charge = helper.generic_executor_task_builder(task_type=Charge, name="charge")
    process = helper.generic_process_builder(process_name="Pay", root_task=charge)
    engine.add_template("Pay", helper.generic_template(template_name="Pay", root_process=process))
    async with engine:
        spec = engine.template_dags["Pay"].spec
        inst = instantiate(spec, "p1", {"order_id": "o1"}, now=engine.clock.now())
        processor = engine.runtime.processor
        assert processor is not None
        # Both events in one batch: the create starts the charge job, the stop ends it.
        processor.process([InstanceEvent("p1", Create(inst, submit=True)), InstanceEvent("p1", Stop())])
        assert engine.committed("p1").status == "STOPPED"  # type: ignore[union-attr]
        store = engine.runtime.store
        assert store.pending_jobs() == []
        # A later instance runs normally, so the job runner is idle, not stuck.
        other = await engine.template_dags["Pay"].create_instance("p2", submit_task=True, order_id="o2")
        done = await engine.wait_for(other.id, timeout=5)
        assert done.status.code == "COMPLETED"
    assert RUNS == ["o2"]  # the stopped instance's charge never ran
