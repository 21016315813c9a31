"""The workflow the console's browser tests (and its screenshots) show: a command and a
listener, a decision, a parallel group, and a task that fails until its parameters are fixed.

    Order:   send the order (topic ``orders``) -> wait for the kitchen (topic ``kitchen``, key order_id)
    Route:   decide express or standard (runtime parameter ``express``)
    Fulfil:  pack and invoice in parallel -> charge (fails while ``card`` is "declined")
"""

from __future__ import annotations

import json
from typing import Any

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    DecisionTask,
    ExecutorTask,
    KafkaCommandTask,
    KafkaListenerTask,
    TaskLookupKey,
)

TEMPLATE = "order_flow"
ORDERS = "orders"
KITCHEN = "kitchen"


def _send_order(engine: Dagger) -> type[KafkaCommandTask[str, str]]:
    class SendOrder(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            order_id = runtime_parameters["order_id"]
            await engine.topics[ORDERS].send(key=order_id, value=json.dumps({"order_id": order_id, "items": 2}))

    return SendOrder


class KitchenReady(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"
    #: While set, the mapping fails (a bug, fixed by a deploy: the dead-letter replay test).
    broken = False

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        if KitchenReady.broken:
            raise LookupError("kitchen message format not understood")
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


class Route(DecisionTask[str, str]):
    async def evaluate(self, **runtime_parameters: Any) -> Any:
        return "express_executor_task" if runtime_parameters.get("express") else "standard_executor_task"


class Step(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters.setdefault("steps", []).append(self.task_name)


class Charge(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        if runtime_parameters.get("card") == "declined":
            raise RuntimeError(f"card declined for order {runtime_parameters['order_id']}")
        runtime_parameters["charged"] = True


def register(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    order = helper.generic_process_builder(
        process_name="Order",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_command_task_builder(topic=ORDERS, task_type=_send_order(engine), process_name="Order"),
                helper.generic_listener_task_builder(topic=KITCHEN, task_type=KitchenReady, process_name="Order"),
            ]
        ),
    )
    decide = helper.generic_decision_task_builder(task_type=Route, name="route")
    decide.set_next(helper.build_and_link_tasks([helper.generic_executor_task_builder(task_type=Step, name="express")]))
    decide.set_next(helper.build_and_link_tasks([helper.generic_executor_task_builder(task_type=Step, name="standard")]))
    route = helper.generic_process_builder(process_name="Route", root_task=decide.build())
    fulfil = helper.generic_process_builder(
        process_name="Fulfil",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_parallel_task_builder(
                    name="pack_and_invoice",
                    tasks=[
                        helper.generic_executor_task_builder(task_type=Step, name="pack"),
                        helper.generic_executor_task_builder(task_type=Step, name="invoice"),
                    ],
                ),
                helper.generic_executor_task_builder(task_type=Charge, name="charge"),
            ]
        ),
    )
    engine.add_template(
        TEMPLATE,
        helper.generic_template(
            template_name=TEMPLATE, root_process=helper.build_and_link_processes([order, route, fulfil])
        ),
    )
