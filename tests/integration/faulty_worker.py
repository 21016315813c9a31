"""A worker with a bug injected into daggerflow itself, for ``test_worker_failure.py`` and
``tests/kafka/test_kafka_runtime.py``:

    FAULTY_DB=... FAULTY_PART=jobs|processor python -m daggerflow worker tests.integration.faulty_worker:engine

One template, ``Chore``: a single executor task. Workflows run normally, except one whose id
is ``boom``: with ``FAULTY_PART=jobs`` the job runner fails running its job (after its first
wait, not in user code), with ``FAULTY_PART=processor`` the processor fails on the batch that
creates it. With ``DAGGERFLOW_BROKER`` set it is a Kafka worker of the application
``DAGGERFLOW_APP`` (``DAGGERFLOW_PARTITIONS`` partitions) instead.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask
from daggerflow.pipeline import jobs, processor
from daggerflow.pipeline.items import InstanceEvent


class Chore(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


def build(**options: Any) -> Dagger:
    env = os.environ
    if env.get("DAGGERFLOW_BROKER"):
        options = {
            "broker": env["DAGGERFLOW_BROKER"],
            "application_name": env["DAGGERFLOW_APP"],
            "kafka_partitions": int(env["DAGGERFLOW_PARTITIONS"]),
            "datadir": env.get("DAGGERFLOW_DATA", "daggerflow-data"),
            **options,
        }
    else:
        options = {"store": f"sqlite:///{env['FAULTY_DB']}", "application_name": "faulty", **options}
    engine = Dagger(web_port=options.pop("web_port", 0), **options)
    helper = DAGBuilderHelper(engine)
    task = helper.generic_executor_task_builder(task_type=Chore, name="Chore")
    process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks([task]))
    engine.add_template("Chore", helper.generic_template(template_name="Chore", root_process=process))
    return engine


engine = build()

FAULT = os.environ["FAULTY_PART"]
if FAULT == "jobs":
    call = jobs.JobRunner._call

    async def faulty_call(self: jobs.JobRunner, job: Any, *args: Any) -> Any:
        if job.instance == "boom":
            await asyncio.sleep(0)
            raise RuntimeError("injected job runner fault")
        return await call(self, job, *args)

    jobs.JobRunner._call = faulty_call  # type: ignore[method-assign]
elif FAULT == "processor":
    prepare = processor.Processor._prepare

    def faulty_prepare(self: processor.Processor, items: list[Any]) -> Any:
        if any(isinstance(i, InstanceEvent) and i.instance == "boom" for i in items):
            raise RuntimeError("injected processor fault")
        return prepare(self, items)

    processor.Processor._prepare = faulty_prepare  # type: ignore[method-assign]
else:
    raise SystemExit(f"FAULTY_PART={FAULT!r}: use jobs or processor")
