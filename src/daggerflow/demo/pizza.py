"""The pizza workflow of the README, run end to end: ``daggerflow demo pizza``.

The workflow is the README's (``examples/pizza.py``) with one difference of shape: its tasks
are defined per engine (in :func:`register_pizza_workflow`) instead of against a
module-level ``workflow_engine``, so the demo can build a fresh engine with the options the
command line gives, and the delivery task posts with the small client
:func:`~.services.post_json` (the example uses aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..builders import DAGBuilderHelper, IProcessTemplateDAGBuilder
from ..engine import Dagger
from ..model.instance import Instance
from ..tasks import ExecutorTask, KafkaCommandTask, KafkaListenerTask, TaskLookupKey
from ..templates import ITemplateDAG
from .services import ORDER_TOPIC, READY_TOPIC, DeliveryService, OrderService, post_json

log = logging.getLogger(__name__)

TEMPLATE = "PizzaWorkflow"
POST_CONCURRENCY = 64


class PizzaWaitForReadyListener(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        tpayload = json.loads(payload)
        return [(self.correlatable_key, tpayload[self.correlatable_key])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


Deliver = Callable[[dict[str, Any]], Awaitable[Any]]
"""What ``DeliveryCommandTask`` calls with ``{"order_id": ..., "customer_id": ...}``."""


def http_delivery(url: str, *, concurrency: int = POST_CONCURRENCY) -> Deliver:
    """Deliver by POSTing the payload to ``url`` (the README's delivery service), at most
    ``concurrency`` requests at a time; an HTTP error fails the task."""
    posting = asyncio.Semaphore(concurrency)

    async def deliver(payload: dict[str, Any]) -> None:
        async with posting:
            await post_json(url, payload)

    return deliver


def register_pizza_workflow(
    workflow_engine: Dagger, *, deliver: Deliver, order_topic: str = ORDER_TOPIC, ready_topic: str = READY_TOPIC
) -> ITemplateDAG:
    """Define the README's tasks for ``workflow_engine`` and register ``PizzaWorkflow``.

    ``deliver`` is what the delivery task does with its payload: :func:`http_delivery` in
    the demo; a benchmark or a test may pass any async function.
    """

    class OrderCommandTask(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            payload = {
                "order_id": runtime_parameters["order_id"],
                "customer_id": runtime_parameters["customer_id"],
                "pizza_type": runtime_parameters["pizza_type"],
            }
            assert self.topic is not None
            await workflow_engine.topics[self.topic].send(value=json.dumps(payload))

    class DeliveryCommandTask(ExecutorTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            payload = {
                "order_id": runtime_parameters["order_id"],
                "customer_id": runtime_parameters["customer_id"],
            }
            await deliver(payload)

    helper = DAGBuilderHelper(workflow_engine)

    def ordering(process_name: str) -> IProcessTemplateDAGBuilder:
        root_task = helper.build_and_link_tasks(
            [
                helper.generic_command_task_builder(
                    topic=order_topic, task_type=OrderCommandTask, process_name=process_name
                ),
                helper.generic_listener_task_builder(
                    topic=ready_topic, task_type=PizzaWaitForReadyListener, process_name=process_name
                ),
            ]
        )
        return helper.generic_process_builder(process_name=process_name, root_task=root_task)

    def delivery(process_name: str) -> IProcessTemplateDAGBuilder:
        root_task = helper.build_and_link_tasks(
            [helper.generic_executor_task_builder(task_type=DeliveryCommandTask, name=process_name)]
        )
        return helper.generic_process_builder(process_name=process_name, root_task=root_task)

    template = helper.generic_template(
        template_name=TEMPLATE,
        root_process=helper.build_and_link_processes([ordering("Order"), delivery("Delivery")]),
    )
    workflow_engine.add_template(TEMPLATE, template)
    return template


@dataclass
class DemoReport:
    orders: int
    completed: int = 0
    failed: int = 0
    unfinished: int = 0
    deliveries: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    web_url: str | None = None
    store: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the creation -> COMPLETED latencies, in seconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100.0 * len(ordered)))
        return ordered[rank - 1]

    @property
    def ok(self) -> bool:
        return self.completed == self.orders and self.deliveries >= self.orders


ProgressCallback = Callable[[int, int, int], None]
"""Called as ``progress(completed, failed, unfinished)`` each time an order finishes or is
given up on: the orders COMPLETED so far, those that ended otherwise (FAILURE, STOPPED...)
and those still running when the timeout came."""

UPDATES_TOPIC = "pizza-demo.updates"


async def run_pizza_demo(
    orders: int,
    *,
    store: str | None = None,
    web_port: int | None = 0,
    kitchen_delay: float = 0.05,
    timeout: float | None = 120.0,
    fail_every: int = 0,
    progress: ProgressCallback | None = None,
    after: Callable[[DemoReport, Dagger], Awaitable[None]] | None = None,
) -> DemoReport:
    """Run ``orders`` pizza workflows to completion on a fresh embedded engine.

    ``store=None`` uses a temporary SQLite file, removed afterwards. ``timeout=None`` waits
    for every order however long it takes. ``fail_every=N`` refuses the delivery of orders
    0, N, 2N... (their workflows fail), to show failures. Every committed state is published
    to the task update topic ``pizza-demo.updates``, as the README example does (its
    retention keeps the store's size bounded). ``after``, if given, is
    awaited with the report while the engine is still running (the CLI prints the summary
    there and, with ``--serve``, keeps the REST API up until Ctrl-C).
    """
    tmpdir = tempfile.mkdtemp(prefix="daggerflow-demo-") if store is None else None
    store_url = store or f"sqlite:///{tmpdir}/pizza-demo.db"
    report = DemoReport(orders=orders, store=store_url if tmpdir is None else f"{store_url} (temporary)")
    delivery_service = DeliveryService()
    delivery_url = delivery_service.start()
    engine = Dagger(
        store=store_url, web_port=web_port, application_name="pizza-demo", task_update_topic=UPDATES_TOPIC
    )
    order_service = OrderService(engine, max_delay=kitchen_delay)
    engine.agent(ORDER_TOPIC, name="pizza-demo-order-service", concurrency=64)(order_service.handle)
    try:
        async with engine:
            deliver = http_delivery(delivery_url)
            if fail_every > 0:
                deliver = _refusing_every(fail_every, deliver)
            template = register_pizza_workflow(engine, deliver=deliver)
            report.web_url = engine.web_url
            await _place_and_wait(engine, template, report, timeout, progress)
            report.deliveries = len(delivery_service.deliveries)
            if after is not None:
                await after(report, engine)
            order_service.close()
    finally:
        delivery_service.stop()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return report


async def _place_and_wait(
    engine: Dagger,
    template: ITemplateDAG,
    report: DemoReport,
    timeout: float | None,
    progress: ProgressCallback | None,
) -> None:
    creating = asyncio.Semaphore(256)
    deadline = None if timeout is None else time.monotonic() + timeout

    async def one(n: int) -> Instance | None:
        async with creating:
            view = await template.create_instance(
                uuid.uuid4(),
                order_id=f"order-{n}",
                customer_id=f"customer-{n % 97}",
                pizza_type=n % 5,
                submit_task=True,
            )
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await engine.wait_for(view.id, timeout=left)
        return engine.committed(view.id)

    started = time.perf_counter()
    for next_done in asyncio.as_completed([one(n) for n in range(report.orders)]):
        instance = await next_done
        status = instance.root.status if instance is not None else "MISSING"
        if instance is not None and status == "COMPLETED":
            report.completed += 1
            report.latencies.append(instance.root.time_completed - instance.root.time_created)
        elif instance is not None and instance.is_terminal():
            report.failed += 1
            if len(report.failures) < 5:
                report.failures.append(f"{instance.id}: {status} {_first_error(instance)}")
        else:
            report.unfinished += 1
        if progress is not None:
            progress(report.completed, report.failed, report.unfinished)
    report.elapsed = time.perf_counter() - started


def _refusing_every(n: int, deliver: Deliver) -> Deliver:
    async def refusing(payload: dict[str, Any]) -> Any:
        number = int(str(payload["order_id"]).rpartition("-")[2])
        if number % n == 0:
            raise RuntimeError(f"delivery of {payload['order_id']} refused (--fail-every {n})")
        return await deliver(payload)

    return refusing


def _first_error(instance: Instance) -> str:
    for node in instance.nodes.values():
        if node.error:
            return f"({node.name}: {node.error})"
    return ""
