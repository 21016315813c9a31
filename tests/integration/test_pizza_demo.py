"""The pizza demo's parts in-process: the workflow run end to end, the simulated order
service (durable answer at delay 0, scheduled answer otherwise, forgotten on close), the
delivery service and its client, the README's Step 5 function of ``examples/pizza.py``, and
the report's arithmetic."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daggerflow import Dagger
from daggerflow.demo.pizza import TEMPLATE, DemoReport, http_delivery, register_pizza_workflow, run_pizza_demo
from daggerflow.demo.services import READY_TOPIC, DeliveryService, OrderService, post_json

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kitchen_delay", [0.0, 0.02])
async def test_demo_runs_every_order_to_completion(db_url: str, kitchen_delay: float) -> None:
    seen: list[tuple[int, int]] = []
    after_calls: list[tuple[int, bool]] = []

    async def after(report: DemoReport, engine: Dagger) -> None:
        # Called while the engine still runs: its state is there to inspect.
        after_calls.append((engine.count_instances(status="COMPLETED"), engine.running))

    report = await run_pizza_demo(
        12,
        store=db_url,
        web_port=None,
        kitchen_delay=kitchen_delay,
        progress=lambda *counts: seen.append(counts),
        after=after,
    )
    assert (report.completed, report.failed, report.unfinished) == (12, 0, 0)
    assert report.deliveries == 12 and report.ok
    assert len(report.latencies) == 12 and all(lat > 0 for lat in report.latencies)
    assert 0 < report.percentile(50) <= report.percentile(99)
    assert report.throughput > 0
    assert report.web_url is None and report.store == db_url
    assert seen == [(n, 0, 0) for n in range(1, 13)]
    assert after_calls == [(12, True)]


async def test_demo_records_a_failed_delivery(db_url: str) -> None:
    # The demo's delivery task checks the reply: a delivery service that is gone fails it.
    engine = Dagger(store=db_url, web_port=None)
    register_pizza_workflow(engine, deliver=http_delivery("http://127.0.0.1:9/deliveries"))
    orders = OrderService(engine)
    engine.agent("pizza_order_topic")(orders.handle)
    async with engine:
        view = await engine.get_template(TEMPLATE).create_instance(
            "p1", order_id="o1", customer_id="c1", pizza_type=1, submit_task=True
        )
        done = await engine.wait_for(view.id, timeout=10)
        assert done.status.code == "FAILURE"
        failed = engine.committed("p1")
        assert failed is not None
        node = next(n for n in failed.nodes.values() if n.name.endswith("executor_task"))
        assert node.status == "FAILURE" and node.error is not None


async def test_the_delivery_task_calls_the_given_deliver_function(db_url: str) -> None:
    delivered: list[dict[str, Any]] = []

    async def deliver(payload: dict[str, Any]) -> None:
        delivered.append(payload)

    engine = Dagger(store=db_url, web_port=None)
    register_pizza_workflow(engine, deliver=deliver)
    engine.agent("pizza_order_topic")(OrderService(engine).handle)
    async with engine:
        template = engine.get_template(TEMPLATE)
        for n in range(3):
            await template.create_instance(
                f"p{n}", order_id=f"o{n}", customer_id="c", pizza_type=n, submit_task=True
            )
        for n in range(3):
            assert (await engine.wait_for(f"p{n}", timeout=10)).status.code == "COMPLETED"
    assert sorted(d["order_id"] for d in delivered) == ["o0", "o1", "o2"]
    assert all(d == {"order_id": d["order_id"], "customer_id": "c"} for d in delivered)


async def test_order_service_answers_inside_the_agent_at_delay_zero(
    make_engine: Callable[..., Dagger],
) -> None:
    engine = make_engine()
    orders = OrderService(engine, max_delay=0)
    answered = asyncio.Event()

    @engine.agent(READY_TOPIC)
    async def ready(value: Any) -> None:
        answered.set()

    engine.agent("orders")(orders.handle)
    async with engine:
        await engine.topics["orders"].send(value=json.dumps({"order_id": "o9"}))
        await asyncio.wait_for(answered.wait(), 5)
        assert orders.pending == 0  # nothing was scheduled: the answer went out with the agent
        [message] = engine.read_topic(READY_TOPIC, 0, 10)
        assert json.loads(message.value) == {"order_id": "o9", "status": "READY"}


async def test_order_service_schedules_delayed_answers_and_close_forgets_them(
    make_engine: Callable[..., Dagger],
) -> None:
    engine = make_engine()
    orders = OrderService(engine, max_delay=30.0)
    handled = asyncio.Event()

    async def handle(value: Any) -> None:
        await orders.handle(value)
        handled.set()

    engine.agent("orders")(handle)
    async with engine:
        await engine.topics["orders"].send(value=json.dumps({"order_id": "o1"}))
        await asyncio.wait_for(handled.wait(), 5)  # the agent returned without waiting
        assert orders.pending == 1
        orders.close()
        assert orders.pending == 0
        assert engine.read_topic(READY_TOPIC, 0, 10) == []


async def test_delivery_service_records_posts_and_rejects_bad_bodies(delivery: DeliveryService) -> None:
    assert delivery.url is not None
    assert await post_json(delivery.url, {"order_id": "o1", "customer_id": "c1"}) == 201
    with pytest.raises(OSError, match="HTTP 400"):
        await post_json(delivery.url, {"customer_id": "no order id"})
    with pytest.raises(ValueError, match="http:// URLs only"):
        await post_json("https://example.invalid/", {})
    assert delivery.deliveries == [{"order_id": "o1", "customer_id": "c1"}]


async def test_readme_step5_creates_and_submits_a_pizza_workflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delivery: DeliveryService
) -> None:
    """``create_and_submit_pizza_delivery_workflow`` of examples/pizza.py, as the README
    wrote it (create_instance(uuid1, repartition=False, ...) then submit)."""
    monkeypatch.setenv("PIZZA_STORE", f"sqlite:///{tmp_path}/readme.db")
    monkeypatch.setenv("PIZZA_WEB_PORT", "0")
    monkeypatch.setenv("PIZZA_DELIVERY_URL", str(delivery.url))
    monkeypatch.setenv("PIZZA_KITCHEN_DELAY", "0")
    spec = importlib.util.spec_from_file_location("readme_pizza", ROOT / "examples" / "pizza.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_pizza", module)
    spec.loader.exec_module(module)
    engine: Dagger = module.workflow_engine
    async with engine:
        assert engine.web_url is not None
        await module.create_and_submit_pizza_delivery_workflow("o-7", "c-7", 2)
        [created] = engine.list_instances(template="PizzaWorkflow")
        done = await engine.wait_for(created.id, timeout=10)
        assert done.status.code == "COMPLETED"
        assert done.runtime_parameters == {"order_id": "o-7", "customer_id": "c-7", "pizza_type": 2}
        # The task_update_topic of the README's Dagger(...) call saw the workflow's updates.
        updates = [json.loads(m.value) for m in engine.read_topic("task_update_topic", 0, 100)]
        assert updates and updates[-1]["status"]["code"] == "COMPLETED"
    assert delivery.deliveries == [{"order_id": "o-7", "customer_id": "c-7"}]


def test_report_percentiles_are_nearest_rank() -> None:
    report = DemoReport(orders=4, completed=4, deliveries=4, elapsed=2.0, latencies=[0.4, 0.1, 0.3, 0.2])
    assert report.percentile(50) == 0.2
    assert report.percentile(99) == 0.4
    assert report.percentile(0) == 0.1
    assert report.throughput == 2.0 and report.ok
    assert math.isnan(DemoReport(orders=1).percentile(50))
    assert not DemoReport(orders=2, completed=2, deliveries=1).ok
