# Steps 1-6 keep the README's code as written, old typing names and all:
# ruff: noqa: UP006, UP035, F541
"""The README's Pizza Ordering and Delivery Workflow, running on daggerflow.

Steps 1-6 are Dagger's README example as written; only the imports and the ``Dagger(...)``
call changed (and the delivery URL, which comes from ``PIZZA_DELIVERY_URL``). The section
after them stands in for the order and delivery services the README assumes.

Run it::

    python examples/pizza.py                      # worker + REST API on :6066
    daggerflow worker examples.pizza:workflow_engine --web-port 6066   # the same
    daggerflow create PizzaWorkflow -p order_id=1 -p customer_id=c1 -p pizza_type=1
    daggerflow instances

Environment:

- ``PIZZA_STORE``: state store URL (default ``sqlite:///pizza.db``);
- ``PIZZA_WEB_PORT``: REST API port (default 6066; 0 for any free port);
- ``PIZZA_DELIVERY_URL``: where DeliveryCommandTask posts (default: start the simulated
  delivery service on a free port);
- ``PIZZA_KITCHEN_DELAY``: maximum seconds before the simulated order service answers READY
  (default 0.5). With 0 the answer is sent inside the agent and is durable; with a delay it
  is scheduled and lost if the worker stops first (see ``daggerflow/demo/services.py``).
"""

import json
import logging
import os
import uuid
from typing import Any, Dict, List

import aiohttp

from daggerflow import (
    VT,
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    IProcessTemplateDAGBuilder,
    ITask,
    ITemplateDAG,
    ITemplateDAGInstance,
    KafkaCommandTask,
    KafkaListenerTask,
    TaskLookupKey,
)
from daggerflow.demo.services import DeliveryService, OrderService

logger = logging.getLogger(__name__)

# Step 1 Instantiate Dagger
workflow_engine = Dagger(
    store=os.environ.get("PIZZA_STORE", "sqlite:///pizza.db"),
    task_update_topic="task_update_topic",
    web_port=int(os.environ.get("PIZZA_WEB_PORT", "6066")),
)


# Step 2 Define Leaf Command and Listener Tasks For Order Process
class OrderCommandTask(KafkaCommandTask[str, str]):
    async def execute(
        self,
        runtime_parameters: Dict[str, str],
        workflow_instance: ITemplateDAGInstance,
    ) -> None:
        payload = {
            "order_id": runtime_parameters["order_id"],
            "customer_id": runtime_parameters["customer_id"],
            "pizza_type": runtime_parameters["pizza_type"],
        }
        await workflow_engine.topics[self.topic].send(
            value=json.dumps(payload)
        )


class PizzaWaitForReadyListener(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(
        self, payload: Any
    ) -> List[TaskLookupKey]:
        tpayload = json.loads(payload)
        key = tpayload[self.correlatable_key]
        return [(self.correlatable_key, key)]

    async def on_message(
            self, runtime_parameters: Dict[str, VT], *args: Any, **kwargs: Any
    ) -> bool :
        logger.info(f"Pizza Order is Ready")
        return True


def pizza_ordering_process(
    process_name: str = "Order"
) -> IProcessTemplateDAGBuilder:
    dag_builder = DAGBuilderHelper(dagger_app=workflow_engine)
    root_task = dag_builder.build_and_link_tasks(
        [
           dag_builder.generic_command_task_builder(
                topic="pizza_order_topic",
                task_type=OrderCommandTask,
                process_name=process_name,
            ),
            dag_builder.generic_listener_task_builder(
                topic="PizzaWaitForReadyListener",
                task_type=PizzaWaitForReadyListener,
                process_name=process_name,
            ),
        ]
    )
    return dag_builder.generic_process_builder(process_name=process_name, root_task=root_task)


# Step 3 Define Leaf Command Tasks For Delivery Process
class DeliveryCommandTask(ExecutorTask[str, str]):
    async def execute(
        self, runtime_parameters: Dict[str, VT], workflow_instance: ITask = None
    ) -> None:
        payload = {
            "order_id": runtime_parameters["order_id"],
            "customer_id": runtime_parameters["customer_id"],
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(url=os.environ["PIZZA_DELIVERY_URL"], json=payload):
                pass


def pizza_delivery_process(
    process_name: str = "Delivery",
) -> IProcessTemplateDAGBuilder:
    dag_builder = DAGBuilderHelper(dagger_app=workflow_engine)
    root_task = dag_builder.build_and_link_tasks(
        [
            dag_builder.generic_executor_task_builder(
                task_type=DeliveryCommandTask,
                name=process_name,
            )
        ]
    )
    return dag_builder.generic_process_builder(
        process_name=process_name, root_task=root_task
    )


# Step 4 Define the Sequence of Process Execution and register the workflow definition
@Dagger.register_template("PizzaWorkflow")
def register_pizza_workflow(template_name: str) -> ITemplateDAG:
    dag_builder_helper = DAGBuilderHelper(workflow_engine)
    order_process = dag_builder_helper.build_and_link_processes(
        [
            pizza_ordering_process(process_name="Order"),
            pizza_delivery_process(process_name="Delivery"),
        ]
    )
    return dag_builder_helper.generic_template(
        template_name=template_name, root_process=order_process
    )


# Step 5 Define an API to instantiate and execute pizza order workflows
async def create_and_submit_pizza_delivery_workflow(
    order_id: str, customer_id: str, pizza_type: int
):
    pizza_workflow_template = workflow_engine.template_dags["PizzaWorkflow"]
    pizza_workflow_instance = await pizza_workflow_template.create_instance(
        uuid.uuid1(),
        repartition=False,  # Create this instance on the current worker
        order_id=order_id,
        customer_id=customer_id,
        pizza_type=pizza_type,
    )
    await workflow_engine.submit(pizza_workflow_instance, repartition=False)


# Not in the README: simulated order and delivery services --------------------------------

order_service = OrderService(
    workflow_engine, max_delay=float(os.environ.get("PIZZA_KITCHEN_DELAY", "0.5"))
)


@workflow_engine.agent("pizza_order_topic")
async def pizza_kitchen(value: str) -> None:
    """The order service: answers READY on PizzaWaitForReadyListener after a short delay."""
    await order_service.handle(value)


if "PIZZA_DELIVERY_URL" not in os.environ:
    delivery_service = DeliveryService()
    os.environ["PIZZA_DELIVERY_URL"] = delivery_service.start()
    logger.info("simulated delivery service at %s", os.environ["PIZZA_DELIVERY_URL"])


# Step 6 Start the worker
if __name__ == "__main__":
    workflow_engine.main()
