"""A worker for the bulk-action tests that kill it (``test_bulk_crash.py``, embedded, and
``tests/kafka/test_kafka_bulk.py``), configured from the environment:

    BULK_FLAG=/path BULK_DB=/path.db python -m daggerflow worker tests.integration.bulk_worker:engine

With ``DAGGERFLOW_BROKER`` set it is a Kafka worker of ``DAGGERFLOW_APP`` (with
``DAGGERFLOW_PARTITIONS`` partitions, state under ``DAGGERFLOW_DATA``); else an embedded
one on the SQLite file ``BULK_DB`` (application ``bulk``). ``BULK_STORE=rocksdb://``: a
Kafka worker's partition stores are RocksDB databases.

One template, ``Ship``: an executor task ``Gate`` that fails while the file ``$BULK_FLAG``
exists, then a command task that sends ``{"id": <instance id>}`` to ``{app}.shipped``. A
workflow created while the flag exists is FAILURE having sent nothing; once the flag is
gone, each retry of it sends exactly one command (what the test counts).

``BULK_KILL_AT=K``: the worker SIGKILLs itself when the gate lets its K-th workflow through,
so that a test kills it mid-job at a point it does not have to race for.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, KafkaCommandTask

_passed = 0


class Gate(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        global _passed
        if Path(os.environ["BULK_FLAG"]).exists():
            raise RuntimeError("the gate is closed")
        _passed += 1
        if _passed == int(os.environ.get("BULK_KILL_AT") or 0):
            os.kill(os.getpid(), signal.SIGKILL)


def build() -> Dagger:
    env = os.environ
    app = env.get("DAGGERFLOW_APP", "bulk")
    if env.get("DAGGERFLOW_BROKER"):
        engine = Dagger(broker=env["DAGGERFLOW_BROKER"], application_name=app,
                        kafka_partitions=int(env["DAGGERFLOW_PARTITIONS"]),
                        datadir=env.get("DAGGERFLOW_DATA", "daggerflow-data"), web_port=0,
                        store=env.get("BULK_STORE") or None)  # fmt: skip
    else:
        engine = Dagger(store=f"sqlite:///{env['BULK_DB']}", application_name=app, web_port=0)
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
