"""The pizza workflow as a Kafka application, for ``daggerflow worker``, tests and benchmarks.

    DAGGERFLOW_APP=pizza daggerflow worker daggerflow.demo.kafka_app:engine \\
        --broker kafka://127.0.0.1:9092

Configured from the environment: ``DAGGERFLOW_BROKER`` (default kafka://127.0.0.1:9092),
``DAGGERFLOW_APP`` (application name, default "pizza"), ``DAGGERFLOW_PARTITIONS`` (12),
``DAGGERFLOW_GUARANTEE`` (exactly_once), ``DAGGERFLOW_STANDBYS`` (0), ``DAGGERFLOW_DATA``
(local state directory), ``DAGGERFLOW_UPDATES`` ("off": no update topic), ``DAGGERFLOW_STORE`` ("rocksdb://" for RocksDB partition stores) and ``DAGGERFLOW_KITCHEN`` ("off": no order service, READY answers
come from outside).

Topics, prefixed with the application name so runs never see each other's messages:
orders ``{app}.pizza_order_topic``, READY answers ``{app}.ready``, deliveries
``{app}.deliveries`` (the delivery task's message, committed with its outcome) and the
instance snapshots ``{app}.updates`` (the task_update_topic). The order service is an agent
answering READY at once, inside its transaction.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..engine import Dagger
from .pizza import TEMPLATE, register_pizza_workflow


def build(role: str = "worker") -> Dagger:
    app = os.environ.get("DAGGERFLOW_APP", "pizza")
    order_topic, ready_topic = f"{app}.pizza_order_topic", f"{app}.ready"
    deliveries_topic = f"{app}.deliveries"
    engine = Dagger(
        broker=os.environ.get("DAGGERFLOW_BROKER", "kafka://127.0.0.1:9092"),
        application_name=app,
        kafka_partitions=int(os.environ.get("DAGGERFLOW_PARTITIONS", "12")),
        processing_guarantee=os.environ.get("DAGGERFLOW_GUARANTEE", "exactly_once"),
        num_standby_replicas=int(os.environ.get("DAGGERFLOW_STANDBYS", "0")),
        # DAGGERFLOW_UPDATES=off: no snapshot per state change (benchmarks watch deliveries).
        task_update_topic=None if os.environ.get("DAGGERFLOW_UPDATES") == "off" else f"{app}.updates",
        store=os.environ.get("DAGGERFLOW_STORE"),  # "rocksdb://": RocksDB partition stores
        role=role,
        commit_interval=float(os.environ.get("DAGGERFLOW_COMMIT_INTERVAL", "0")),
        web_port=None if role == "client" else 0,
    )

    async def deliver(payload: dict[str, Any]) -> None:
        await engine.topics[deliveries_topic].send(key=payload["order_id"], value=json.dumps(payload))

    register_pizza_workflow(engine, deliver=deliver, order_topic=order_topic, ready_topic=ready_topic)
    engine.create_topic(deliveries_topic)

    if os.environ.get("DAGGERFLOW_KITCHEN", "on") != "off":

        @engine.agent(order_topic, name="order-service", concurrency=64)
        async def order_service(value: Any) -> None:
            order_id = json.loads(value)["order_id"]
            answer = json.dumps({"order_id": order_id, "status": "READY"})
            await engine.topics[ready_topic].send(key=order_id, value=answer)

    return engine


engine = build()

__all__ = ["TEMPLATE", "build", "engine"]
