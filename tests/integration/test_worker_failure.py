"""A bug in daggerflow's own loops (the processor, the job runner) ends the worker loudly:
logged at ERROR with the exception, and a non-zero exit; the API refuses calls afterwards
with a clear error. (User code that raises is a task failure, not this: ``JobFailed``.)

The worker tests run ``daggerflow worker`` on ``faulty_worker.py``, whose injected fault
hits the workflow ``boom`` only: a workflow before it completes, so the worker was working.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, TaskInvalidState
from daggerflow.pipeline import jobs
from daggerflow.pipeline.items import InstanceEvent
from daggerflow.pipeline.processor import Processor

from .test_cli import CLI, free_port, start, wait_for_log, wait_for_status


class Chore(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


def chore_engine(make_engine: Callable[..., Dagger]) -> Dagger:
    engine = make_engine()
    helper = DAGBuilderHelper(engine)
    task = helper.generic_executor_task_builder(task_type=Chore, name="Chore")
    process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks([task]))
    engine.add_template("Chore", helper.generic_template(template_name="Chore", root_process=process))
    return engine


@pytest.mark.parametrize("part", ["jobs", "processor"])
def test_a_fault_in_the_worker_ends_it_with_the_error_logged(tmp_path: Path, part: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"FAULTY_DB": str(tmp_path / "f.db"), "FAULTY_PART": part}
    target = "tests.integration.faulty_worker:engine"
    proc = start([*CLI, "worker", target, "--web-port", str(port)], env)
    try:
        wait_for_log(proc, "started")
        create = f"{url}/api/v1/templates/Chore/instances"
        body = {"id": "fine", "runtime_parameters": {}, "submit": True}
        response = httpx.post(create, json=body)
        assert response.status_code == 201, response.text
        wait_for_status(url, "fine", "COMPLETED")
        try:
            httpx.post(create, json={**body, "id": "boom"}, timeout=10)
        except httpx.HTTPError:
            pass  # the worker may be gone before it answers
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    output = proc.stdout.read()
    assert code != 0, output
    fault = "injected job runner fault" if part == "jobs" else "injected processor fault"
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert any("the worker stops" in line and fault in line for line in errors), output
    assert f"RuntimeError: {fault}" in output  # the traceback
    assert "was never retrieved" not in output


async def test_a_job_runner_failure_is_logged_and_the_api_refuses_calls(
    make_engine: Callable[..., Dagger], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: jobs.JobRunner, job: Any, *args: Any) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("runner bug")

    monkeypatch.setattr(jobs.JobRunner, "_call", broken)
    engine = chore_engine(make_engine)
    async with engine:
        runner = engine._jobs
        assert runner is not None
        watcher = asyncio.create_task(runner.failure())
        with caplog.at_level(logging.ERROR, logger="daggerflow"):
            await engine.template_dags["Chore"].create_instance("c1", submit_task=True)
            with pytest.raises(RuntimeError, match="runner bug"):
                await asyncio.wait_for(watcher, 5)
        assert isinstance(runner.failed, RuntimeError)
        assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records), caplog.records
        with pytest.raises(TaskInvalidState, match="job runner stopped after an error"):
            await engine.template_dags["Chore"].create_instance("c2", submit_task=True)


async def test_a_job_runner_failure_before_its_first_wait_does_not_reach_the_processor(
    make_engine: Callable[..., Dagger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised inside ``submit`` (the job's first step runs there): the job runner fails, the
    processor that submitted it keeps going."""

    async def broken(self: jobs.JobRunner, job: Any, *args: Any) -> Any:
        raise RuntimeError("runner bug")

    monkeypatch.setattr(jobs.JobRunner, "_call", broken)
    engine = chore_engine(make_engine)
    async with engine:
        runner, processor = engine._jobs, engine.runtime.processor
        assert runner is not None and processor is not None
        await engine.template_dags["Chore"].create_instance("c1", submit_task=True)
        await asyncio.wait_for(processor.wait_idle(), 5)
        assert isinstance(runner.failed, RuntimeError) and processor.failed is None
        with pytest.raises(RuntimeError, match="runner bug"):
            await asyncio.wait_for(runner.failure(), 5)


async def test_a_processor_failure_fails_the_batch_callers_and_the_api_after_it(
    make_engine: Callable[..., Dagger], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    prepare = Processor._prepare

    def broken(self: Processor, items: list[Any]) -> Any:
        if any(isinstance(i, InstanceEvent) and i.instance == "boom" for i in items):
            raise RuntimeError("processor bug")
        return prepare(self, items)

    monkeypatch.setattr(Processor, "_prepare", broken)
    engine = chore_engine(make_engine)
    async with engine:
        with caplog.at_level(logging.ERROR, logger="daggerflow"):
            with pytest.raises(RuntimeError, match="processor bug"):
                await asyncio.wait_for(engine.template_dags["Chore"].create_instance("boom"), 5)
        assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records), caplog.records
        with pytest.raises(TaskInvalidState, match="processor stopped after an error"):
            await engine.template_dags["Chore"].create_instance("c2")
