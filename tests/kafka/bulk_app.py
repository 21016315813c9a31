"""An application for the bulk-action test of the Kafka runtime (test_kafka_bulk.py),
configured from the environment like ``corr_app``:

    BULK_FLAG=/path python -m daggerflow worker tests.kafka.bulk_app:engine --broker kafka://...

One template, ``Ship``: an executor task ``Gate`` that fails while the file ``$BULK_FLAG``
exists, then a command task that sends ``{"id": <instance id>}`` to ``{app}.shipped``. A
workflow created while the flag exists is FAILURE having sent nothing; once the flag is
gone, each retry of it sends exactly one command (what the test counts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, KafkaCommandTask


class Gate(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        if Path(os.environ["BULK_FLAG"]).exists():
            raise RuntimeError("the gate is closed")


def build() -> Dagger:
    env = os.environ
    app = env["DAGGERFLOW_APP"]
    engine = Dagger(
        broker=env["DAGGERFLOW_BROKER"],
        application_name=app,
        kafka_partitions=int(env["DAGGERFLOW_PARTITIONS"]),
        datadir=env.get("DAGGERFLOW_DATA", "daggerflow-data"),
        web_port=0,
    )
    shipped = f"{app}.shipped"

    class Ship(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            iid = workflow_instance.id
            await engine.topics[shipped].send(key=iid, value=json.dumps({"id": iid}))

    helper = DAGBuilderHelper(engine)
    tasks = [
        helper.generic_executor_task_builder(task_type=Gate, name="Gate"),
        helper.generic_command_task_builder(topic=shipped, task_type=Ship, process_name="Main"),
    ]
    process = helper.generic_process_builder(process_name="Main", root_task=helper.build_and_link_tasks(tasks))
    engine.add_template("Ship", helper.generic_template(template_name="Ship", root_process=process))
    return engine


engine = build()
