"""An application for the schedule test of the Kafka runtime (test_kafka_schedules.py),
configured from the environment like ``corr_app``.

    python -m daggerflow worker tests.kafka.sched_app:engine --broker kafka://127.0.0.1:9092

One template, ``Tick``: a command task that sends ``{"id": <instance id>}`` to ``{app}.ticks``
(exactly once per instance, through the outbox). A schedule defined in code, ``beat``, starts
one every ``SCHED_EVERY`` seconds (default 2) and catches up on ``all`` missed ticks, so the
ids in ``{app}.ticks`` must be every tick from the first on, each exactly once, whichever
worker owned the schedule when the tick came due. ``DAGGERFLOW_STORE=rocksdb://`` gives the
partitions RocksDB stores (default SQLite).
"""

from __future__ import annotations

import json
import os
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, KafkaCommandTask


def build() -> Dagger:
    env = os.environ
    app = env.get("DAGGERFLOW_APP", "sched")
    engine = Dagger(
        broker=env.get("DAGGERFLOW_BROKER", "kafka://127.0.0.1:9092"),
        application_name=app,
        kafka_partitions=int(env.get("DAGGERFLOW_PARTITIONS", "12")),
        datadir=env.get("DAGGERFLOW_DATA", "daggerflow-data"),
        store=env.get("DAGGERFLOW_STORE") or None,  # "rocksdb://": RocksDB partition stores
        web_port=0,
    )
    topic = f"{app}.ticks"

    class SendTick(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            assert workflow_instance is not None
            await engine.topics[topic].send(key=workflow_instance.id, value=json.dumps({"id": workflow_instance.id}))

    helper = DAGBuilderHelper(engine)
    send = helper.generic_command_task_builder(topic=topic, task_type=SendTick, process_name="SEND")
    process = helper.generic_process_builder(process_name="SEND", root_task=helper.build_and_link_tasks([send]))
    engine.add_template("Tick", helper.generic_template(template_name="Tick",
                                                        root_process=helper.build_and_link_processes([process])))  # fmt: skip
    engine.schedule("beat", "Tick", every=int(env.get("SCHED_EVERY", "2")), catch_up="all")
    return engine


engine = build()
