"""A pizza worker for the crash test (``test_crash.py``); run as a script, killed with SIGKILL.

    python crash_worker.py DB_PATH SEED

It runs the README's pizza workflow on the SQLite file ``DB_PATH`` with the REST API on a
free port, and prints one line ``READY <url> <in-flight>`` on stdout once it serves
(``<in-flight>``: workflows found not yet terminal at start, i.e. what this life recovers).
SIGTERM drains and exits.

- ``OrderCommandTask`` sends ``{"order_id": ...}`` to ``pizza_order_topic`` (outbox: the send
  commits with the task's completion).
- The order service is an agent on ``pizza_order_topic``: it answers READY on the listener
  topic; what it sends commits with its input position.
- ``PizzaWaitForReadyListener`` correlates on ``order_id``.
- ``DeliveryCommandTask`` sends ``{"order_id": ...}`` to ``pizza_delivery_topic`` (outbox).
- Orders arrive through the REST API, either as ``POST /api/v1/templates/PizzaWorkflow/instances``
  or as messages on ``orders_in``; an agent on ``orders_in`` creates the workflow with the
  order id as instance id (re-creating an id is idempotent, so a redelivery is harmless).

Each task sleeps a few random milliseconds so that kills land while work is in flight.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import signal
import sys
from typing import Any

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    ITemplateDAG,
    ITemplateDAGInstance,
    KafkaCommandTask,
    KafkaListenerTask,
    TaskLookupKey,
)

ORDER_TOPIC = "pizza_order_topic"
READY_TOPIC = "PizzaWaitForReadyListener"
DELIVERY_TOPIC = "pizza_delivery_topic"
INPUT_TOPIC = "orders_in"

db_path, seed = sys.argv[1], sys.argv[2]
rng = random.Random(seed)
engine = Dagger(store=f"sqlite:///{db_path}", web_port=0, application_name="crash-worker")


async def jitter() -> None:
    await asyncio.sleep(rng.uniform(0.0, 0.03))


class OrderCommandTask(KafkaCommandTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        await jitter()
        assert self.topic is not None
        await engine.topics[self.topic].send(
            key=runtime_parameters["order_id"],
            value=json.dumps({"order_id": runtime_parameters["order_id"]}),
        )


class PizzaWaitForReadyListener(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        await jitter()
        return True


class DeliveryCommandTask(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        await jitter()
        await engine.topics[DELIVERY_TOPIC].send(
            key=runtime_parameters["order_id"],
            value=json.dumps({"order_id": runtime_parameters["order_id"]}),
        )


@Dagger.register_template("PizzaWorkflow")
def register_pizza_workflow(template_name: str) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    order = helper.generic_process_builder(
        process_name="Order",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_command_task_builder(
                    topic=ORDER_TOPIC, task_type=OrderCommandTask, process_name="Order"
                ),
                helper.generic_listener_task_builder(
                    topic=READY_TOPIC, task_type=PizzaWaitForReadyListener, process_name="Order"
                ),
            ]
        ),
    )
    delivery = helper.generic_process_builder(
        process_name="Delivery",
        root_task=helper.build_and_link_tasks(
            [helper.generic_executor_task_builder(task_type=DeliveryCommandTask, name="Delivery")]
        ),
    )
    return helper.generic_template(
        template_name=template_name, root_process=helper.build_and_link_processes([order, delivery])
    )


@engine.agent(ORDER_TOPIC, name="order-service", concurrency=8)
async def order_service(value: Any) -> None:
    order = json.loads(value)
    await jitter()
    await engine.topics[READY_TOPIC].send(
        key=order["order_id"], value=json.dumps({"order_id": order["order_id"], "status": "READY"})
    )


@engine.agent(INPUT_TOPIC, name="order-intake")
async def order_intake(value: Any) -> ITemplateDAGInstance[Any, Any]:
    order = json.loads(value)
    return await engine.template_dags["PizzaWorkflow"].create_instance(
        order["order_id"], submit_task=True, order_id=order["order_id"], customer_id=order["customer_id"]
    )


def recovering() -> dict[str, int]:
    """How many unfinished workflows this life starts with, by the state of their tasks."""
    states: collections.Counter[str] = collections.Counter()
    for inst in engine.list_instances(status="EXECUTING", limit=100_000):
        tasks = sorted(
            f"{n.name.rsplit('.', 1)[-1]}={n.status}"
            for n in inst.nodes.values()
            if n.kind not in ("root", "process")
        )
        states[", ".join(tasks)] += 1
    return dict(states)


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with engine:
        in_flight = engine.count_instances(status="EXECUTING") + engine.count_instances(status="SUBMITTED")
        print("recovering:", recovering(), file=sys.stderr, flush=True)
        print(f"READY {engine.web_url} {in_flight}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
