"""daggerflow.testing, every helper, on the pizza workflow of the README (demo/pizza.py) and on
small timed workflows: WorkflowEnvironment (the three ways to give it an engine, settle,
sleep, start_workflow, send, sent, wait_for_status), the pytest fixtures, and the telemetry
capture (with spans and metrics made here: the engine's own are another module's)."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import pytest
from opentelemetry import metrics, trace

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    IntervalTask,
    ManualClock,
    RetryPolicy,
    TriggerTask,
)
from daggerflow.demo.pizza import TEMPLATE, register_pizza_workflow
from daggerflow.demo.services import ORDER_TOPIC, READY_TOPIC, OrderService
from daggerflow.testing import EngineFactory, TelemetryCapture, WorkflowEnvironment, capture_telemetry

ORDER = {"order_id": "o-1", "customer_id": "c-1", "pizza_type": 2}


def pizza(engine: Dagger) -> list[dict[str, Any]]:
    """Register the pizza workflow with a delivery that records; return the record."""
    delivered: list[dict[str, Any]] = []

    async def deliver(payload: dict[str, Any]) -> None:
        delivered.append(payload)

    register_pizza_workflow(engine, deliver=deliver)
    return delivered


# WorkflowEnvironment on the pizza workflow ------------------------------------------------------


async def test_the_pizza_workflow_step_by_step() -> None:
    async with WorkflowEnvironment() as env:
        delivered = pizza(env.engine)
        order = await env.start_workflow(TEMPLATE, "pizza-1", **ORDER)
        # Settled: the command task sent the order, and the listener waits for READY.
        assert env.sent_json(ORDER_TOPIC) == [ORDER]
        assert order.status.code == "EXECUTING"
        await env.wait_for_status(order, "EXECUTING", task="Order_listener_task")
        await env.wait_for_status(order, "EXECUTING", task="PizzaWorkflow.Order.Order_listener_task")
        assert delivered == []

        offset = await env.send(READY_TOPIC, {"order_id": "o-1", "status": "READY"})
        assert offset == 0 and [m.offset for m in env.sent(READY_TOPIC)] == [0]
        done = await env.wait_for_status(order, "COMPLETED")
        assert done.status.code == "COMPLETED"
        assert delivered == [{"order_id": "o-1", "customer_id": "c-1"}]
        assert env.instance("pizza-1").status == "COMPLETED"


async def test_a_ready_for_another_order_completes_nothing() -> None:
    async with WorkflowEnvironment(store="memory://") as env:
        pizza(env.engine)
        order = await env.start_workflow(TEMPLATE, **ORDER)  # a fresh UUID as its id
        await env.send(READY_TOPIC, {"order_id": "o-2", "status": "READY"})
        # send() settled: the message was read and matched nothing, so this is final.
        assert env.instance(order).status == "EXECUTING"
        with pytest.raises(AssertionError, match=r"did not reach COMPLETED within 0.05 s: it is EXECUTING"):
            await env.wait_for_status(order, timeout=0.05)


async def test_with_the_order_service_agent_the_kitchen_answers_by_itself() -> None:
    def build(**options: Any) -> Dagger:
        engine = Dagger(store="memory://", web_port=None, **options)
        engine.agent(ORDER_TOPIC, name="kitchen")(OrderService(engine).handle)
        return engine

    async with WorkflowEnvironment(build) as env:
        delivered = pizza(env.engine)
        order = await env.start_workflow(TEMPLATE, "p", **ORDER)
        # Settling waited for the agent and for the READY it sent: the workflow is done.
        assert env.instance(order).status == "COMPLETED"
        assert env.sent_json(READY_TOPIC) == [{"order_id": "o-1", "status": "READY"}]
        assert len(delivered) == 1


async def test_wait_for_status_fails_at_once_when_the_workflow_ends_otherwise() -> None:
    async def refuse(payload: dict[str, Any]) -> None:
        raise RuntimeError("no driver")

    async with WorkflowEnvironment() as env:
        register_pizza_workflow(env.engine, deliver=refuse)
        order = await env.start_workflow(TEMPLATE, "p", **ORDER)
        await env.send(READY_TOPIC, {"order_id": "o-1", "status": "READY"})
        started = time.monotonic()
        with pytest.raises(AssertionError, match=r"ended: it is FAILURE, not COMPLETED; errors: .*no driver"):
            await env.wait_for_status(order, "COMPLETED", timeout=30)
        assert time.monotonic() - started < 5  # not the timeout
        await env.wait_for_status(order, "FAILURE")
        with pytest.raises(AssertionError, match="no one task or process named 'Nope'"):
            await env.wait_for_status(order, "COMPLETED", task="Nope", timeout=0.05)


async def test_an_engine_given_built_gets_the_environment_clock(tmp_path: Any) -> None:
    engine = Dagger(store=f"sqlite:///{tmp_path}/given.db", web_port=None)
    env = WorkflowEnvironment(engine, start=1_000.0)
    assert engine.clock is env.clock and env.now() == 1_000.0
    async with env:
        pizza(engine)
        order = await env.start_workflow(engine.get_template(TEMPLATE), "p", **ORDER)
        assert env.instance(order).root.time_created == 1_000.0
    # A ManualClock the engine already has is kept.
    clock = ManualClock(start=5.0)
    assert WorkflowEnvironment(Dagger(store="memory://", web_port=None, clock=clock)).clock is clock


async def test_what_the_environment_refuses() -> None:
    def forgets_the_clock(**options: Any) -> Dagger:
        return Dagger(store="memory://", web_port=None)

    with pytest.raises(TypeError, match="pass its clock= argument on"):
        WorkflowEnvironment(forgets_the_clock)
    with pytest.raises(ValueError, match="embedded runtime"):
        WorkflowEnvironment(broker="127.0.0.1:9092")
    env = WorkflowEnvironment(store="memory://")
    with pytest.raises(RuntimeError, match="not started"):
        await env.settle()
    async with env:
        with pytest.raises(KeyError, match="no template named 'Pizza'"):
            await env.start_workflow("Pizza")
        with pytest.raises(KeyError, match="no instance 'x'"):
            env.instance("x")
        with pytest.raises(RuntimeError, match="not started yet"):
            WorkflowEnvironment(env.engine)


async def test_a_pizza_waiting_for_ready_survives_a_restart() -> None:
    async with WorkflowEnvironment() as env:  # a temporary SQLite file: state survives the stop
        delivered = pizza(env.engine)
        order = await env.start_workflow(TEMPLATE, "p", **ORDER)
        engine = await env.restart(down_for=600)
        assert engine is env.engine  # the same object, started again (its registrations kept)
        assert env.instance(order).status == "EXECUTING"
        await env.send(READY_TOPIC, {"order_id": "o-1", "status": "READY"})
        await env.wait_for_status(order, "COMPLETED")
        assert len(delivered) == 1 and len(env.sent(ORDER_TOPIC)) == 1  # the order was not sent again

    def build(**options: Any) -> Dagger:
        engine = Dagger(store=f"sqlite:///{directory}/factory.db", web_port=None, **options)
        built.append(engine)
        pizza(engine)
        return engine

    built: list[Dagger] = []
    with tempfile.TemporaryDirectory() as directory:
        async with WorkflowEnvironment(build) as env:
            order = await env.start_workflow(TEMPLATE, "p", **ORDER)
            await env.restart()
            assert len(built) == 2 and env.engine is built[1]  # a new engine, as a new process builds it
            await env.send(READY_TOPIC, {"order_id": "o-1", "status": "READY"})
            await env.wait_for_status(order, "COMPLETED")

    async with WorkflowEnvironment(store="memory://") as env:
        with pytest.raises(RuntimeError, match="restart needs a file store"):
            await env.restart()


# Time ---------------------------------------------------------------------------------------------


class Bake(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["baked"] = True


class CheckOven(IntervalTask[str, str]):
    async def interval_execute(self, runtime_parameters: dict[str, Any]) -> bool:
        runtime_parameters["checks"] = runtime_parameters.get("checks", 0) + 1
        return False

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["gave_up_after"] = runtime_parameters.get("checks", 0)


FLAKY: dict[str, int] = {}


class FlakyDelivery(ExecutorTask[str, str]):
    retry_policy = RetryPolicy(max_attempts=3, initial_interval=60.0, backoff_coefficient=2.0, maximum_interval=3600.0)

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        key = runtime_parameters["order_id"]
        FLAKY[key] = FLAKY.get(key, 0) + 1
        if FLAKY[key] < 3:
            raise ConnectionError("the van is late")


def timed(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    for name, task in (
        ("Bake", helper.generic_trigger_task_builder(task_type=Bake, name="bake", time_to_execute_key="ready_at")),
        (
            "Oven",
            helper.generic_interval_task_builder(
                task_type=CheckOven,
                name="check",
                time_to_force_complete_key="give_up_at",
                interval_execute_period_key="every",
            ),
        ),
        ("Flaky", helper.generic_executor_task_builder(task_type=FlakyDelivery, name="deliver")),
    ):
        process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks([task]))
        template = helper.generic_template(template_name=name, root_process=helper.build_and_link_processes([process]))
        engine.add_template(name, template)


async def test_sleep_moves_time_through_every_timer_due() -> None:
    started = time.monotonic()
    async with WorkflowEnvironment(start=0.0) as env:
        timed(env.engine)
        bake = await env.start_workflow("Bake", "bake", ready_at=3600.0)
        oven = await env.start_workflow("Oven", "oven", give_up_at=3600.0, every=600.0)
        await env.sleep(3599)
        assert env.now() == 3599.0
        assert env.instance(bake).status == "EXECUTING"
        assert env.instance(oven).runtime_parameters["checks"] == 6  # at 0, 600, ..., 3000: each period
        await env.sleep(1)
        await env.wait_for_status(bake, "COMPLETED")
        baked = env.instance(bake)
        assert baked.runtime_parameters["baked"] is True and baked.root.time_completed == 3600.0
        checked = env.instance(oven)
        assert checked.status == "COMPLETED" and checked.runtime_parameters["gave_up_after"] == 6
        await env.sleep(7 * 24 * 3600)  # a week with nothing due: housekeeping only
        assert env.now() == 3600.0 + 7 * 24 * 3600
    assert time.monotonic() - started < 30  # an hour and a week of engine time


async def test_sleep_honours_a_retry_backoff() -> None:
    async with WorkflowEnvironment(start=0.0) as env:
        timed(env.engine)
        order = await env.start_workflow("Flaky", "flaky", order_id="flaky-1")
        assert FLAKY["flaky-1"] == 1 and env.instance(order).status == "EXECUTING"
        await env.sleep(59)
        assert FLAKY["flaky-1"] == 1  # the first retry is due at 60
        await env.sleep(1)
        assert FLAKY["flaky-1"] == 2  # the second at 60 + 120
        await env.sleep(119)
        assert FLAKY["flaky-1"] == 2
        await env.sleep(1)
        await env.wait_for_status(order, "COMPLETED")
        assert FLAKY["flaky-1"] == 3 and env.instance(order).root.time_completed == 180.0


# The pytest fixtures ----------------------------------------------------------------------------


async def test_the_workflow_env_fixture(workflow_env: WorkflowEnvironment) -> None:
    delivered = pizza(workflow_env.engine)
    order = await workflow_env.start_workflow(TEMPLATE, "p", **ORDER)
    await workflow_env.send(READY_TOPIC, {"order_id": "o-1", "status": "READY"})
    await workflow_env.wait_for_status(order)
    assert len(delivered) == 1
    assert str(workflow_env.engine.config.store).endswith("workflow-env.db")


class TestAnOverriddenFactory:
    @pytest.fixture
    def workflow_engine_factory(self) -> EngineFactory:
        def build(**options: Any) -> Dagger:
            engine = Dagger(store="memory://", web_port=None, application_name="my-app", **options)
            engine.agent(ORDER_TOPIC, name="kitchen")(OrderService(engine).handle)
            return engine

        return build

    async def test_the_fixture_builds_the_engine_with_it(self, workflow_env: WorkflowEnvironment) -> None:
        assert workflow_env.engine.config.application_name == "my-app"
        pizza(workflow_env.engine)
        order = await workflow_env.start_workflow(TEMPLATE, "p", **ORDER)
        await workflow_env.wait_for_status(order, "COMPLETED")


# Telemetry capture --------------------------------------------------------------------------------


def test_spans_made_while_the_capture_is_open_are_captured(telemetry_capture: TelemetryCapture) -> None:
    tracer = trace.get_tracer("tests.testing_kit")
    with tracer.start_as_current_span("bake pizza") as parent:
        parent.set_attribute("pizza.type", 2)
        with tracer.start_as_current_span("heat oven"):
            pass
    assert telemetry_capture.span_names() == ["heat oven", "bake pizza"]
    baked = telemetry_capture.span("bake pizza")
    heated = telemetry_capture.span("heat oven")
    assert baked.attributes == {"pizza.type": 2}
    assert heated.parent is not None and heated.parent.span_id == baked.context.span_id
    with pytest.raises(AssertionError, match=r"0 spans named 'deliver'.*spans seen: \['bake pizza', 'heat oven'\]"):
        telemetry_capture.span("deliver")
    telemetry_capture.clear()
    assert telemetry_capture.spans() == []


def test_captures_see_only_their_own_spans_and_metric_changes() -> None:
    tracer = trace.get_tracer("tests.testing_kit")
    meter = metrics.get_meter("tests.testing_kit")
    pizzas = meter.create_counter("test_kit.pizzas")
    oven = meter.create_histogram("test_kit.oven_seconds")
    with capture_telemetry() as first:
        pizzas.add(2, {"pizza.type": "margherita"})
        pizzas.add(1, {"pizza.type": "funghi"})
        oven.record(90.0, {"pizza.type": "margherita"})
        oven.record(30.0, {"pizza.type": "margherita"})
        with tracer.start_as_current_span("first"):
            pass
        assert first.counter("test_kit.pizzas") == 3
        assert first.counter("test_kit.pizzas", {"pizza.type": "funghi"}) == 1
        summary = first.histogram("test_kit.oven_seconds", {"pizza.type": "margherita"})
        assert (summary.count, summary.sum) == (2, 120.0)
        assert "test_kit.pizzas" in first.metric_names()
        assert {"pizza.type": "funghi"} in first.series("test_kit.pizzas")
        with pytest.raises(TypeError, match="is a histogram"):
            first.counter("test_kit.oven_seconds")
        with pytest.raises(TypeError, match="is not a histogram"):
            first.histogram("test_kit.pizzas")
    with capture_telemetry() as second:
        pizzas.add(5, {"pizza.type": "funghi"})
        with tracer.start_as_current_span("second"):
            pass
        assert second.counter("test_kit.pizzas") == 5  # not the first capture's 3
        assert second.histogram("test_kit.oven_seconds").count == 0
        assert second.span_names() == ["second"]
    assert first.span_names() == ["first"]  # closed: it saw nothing after


def test_an_observable_gauge_is_read_as_its_last_value(telemetry_capture: TelemetryCapture) -> None:
    meter = metrics.get_meter("tests.testing_kit")
    level = {"value": 3.0}

    def observe(options: Any) -> Any:
        yield metrics.Observation(level["value"], {"oven": "1"})

    meter.create_observable_gauge("test_kit.oven_level", callbacks=[observe])
    assert telemetry_capture.gauge("test_kit.oven_level", {"oven": "1"}) == 3.0
    level["value"] = 7.0
    assert telemetry_capture.gauge("test_kit.oven_level") == 7.0
    with pytest.raises(TypeError, match="is a gauge"):
        telemetry_capture.counter("test_kit.oven_level")


async def test_a_capture_around_a_pizza_workflow(telemetry_capture: TelemetryCapture) -> None:
    # The engine's spans come from daggerflow's tracing; here the capture must only see what
    # the test itself makes while a workflow runs, with the engine's spans (if any) beside it.
    tracer = trace.get_tracer("tests.testing_kit")
    async with WorkflowEnvironment() as env:
        pizza(env.engine)
        with tracer.start_as_current_span("place order"):
            order = await env.start_workflow(TEMPLATE, "p", **ORDER)
        await env.send(READY_TOPIC, {"order_id": "o-1", "status": "READY"})
        await env.wait_for_status(order)
    assert "place order" in telemetry_capture.span_names()
    assert isinstance(telemetry_capture.tracer_provider, trace.TracerProvider)


def test_the_sdk_is_imported_only_by_a_capture() -> None:
    # Importing the kit (and so the engine) needs neither pytest-asyncio nor the SDK.
    import subprocess
    import sys

    code = (
        "import sys, daggerflow.testing; "
        "assert 'opentelemetry.sdk' not in sys.modules, 'sdk imported'; "
        "assert 'pytest' not in sys.modules, 'pytest imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
