"""Inventory §10.55: the engine survives a restart. A new engine object on the same
SQLite file finds waiting listeners, pending timers and consumer positions where the
previous one left them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, ManualClock, TriggerTask
from daggerflow.templates import ITemplateDAG
from daggerflow.testing import WorkflowEnvironment

from .support_29_56 import JsonKeyListener, index_entries, node, rows, state

EngineFactory = Callable[..., Dagger]


class RestartListener(JsonKeyListener):
    correlatable_key = "order_id"


class Deliver(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["delivered"] = runtime_parameters.get("delivered", 0) + 1


class Bill(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["billed"] = runtime_parameters.get("billed", 0) + 1


def _register(engine: Dagger) -> tuple[ITemplateDAG, ITemplateDAG]:
    """The application's definitions, registered again by every worker process."""
    helper = DAGBuilderHelper(engine)
    waiting = helper.generic_process_builder(
        process_name="ORDER",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_listener_task_builder(
                    topic="restart_orders", task_type=RestartListener, process_name="ORDER"
                ),
                helper.generic_executor_task_builder(task_type=Bill, name="bill"),
            ]
        ),
    )
    listen = helper.generic_template(
        template_name="ListenFlow", root_process=helper.build_and_link_processes([waiting])
    )
    timed = helper.generic_process_builder(
        process_name="DELIVERY",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_trigger_task_builder(
                    task_type=Deliver, name="deliver", time_to_execute_key="when"
                )
            ]
        ),
    )
    timer = helper.generic_template(
        template_name="TimerFlow", root_process=helper.build_and_link_processes([timed])
    )
    engine.add_template("ListenFlow", listen)
    engine.add_template("TimerFlow", timer)
    return listen, timer


def _orders_engine(make_engine: EngineFactory) -> EngineFactory:
    """How each "process" builds its engine: on the same SQLite file, templates registered."""

    def factory(**options: Any) -> Dagger:
        engine = make_engine("orders", **options)
        _register(engine)
        return engine

    return factory


async def test_waiting_listeners_and_timers_survive_a_restart(make_engine: EngineFactory) -> None:
    """§10.55: after the engine is stopped and a new engine object is started on the same
    SQLite file, a waiting listener completes on a later message, a timer due in the
    future fires when its time comes, and one that fell due while the engine was down
    fires at start; already consumed messages are not delivered again."""
    async with WorkflowEnvironment(_orders_engine(make_engine)) as env:
        t0 = env.now()
        first = env.engine
        await env.start_workflow("ListenFlow", "waiting", order_id="R-1")
        await env.start_workflow("ListenFlow", "done-before", order_id="R-0")
        await env.send("restart_orders", {"order_id": "R-0"})
        await env.wait_for_status("done-before", "COMPLETED")
        await env.start_workflow("TimerFlow", "later", when=t0 + 3600)
        await env.start_workflow("TimerFlow", "during-downtime", when=t0 + 60)
        assert rows(first, "timers") == 2
        assert [e[2] for e in index_entries(first)] == ["R-1"]

        # The worker is down for two minutes: the second timer falls due meanwhile.
        second = await env.restart(down_for=120)
        assert second is not first and env.now() == t0 + 120
        await env.wait_for_status("during-downtime", "COMPLETED")
        assert state(second, "during-downtime").runtime_parameters["delivered"] == 1

        later = state(second, "later")
        assert node(later, "deliver").status == "EXECUTING"
        assert rows(second, "timers") == 1
        await env.sleep_until(t0 + 3599)
        waiting = state(second, "waiting")
        assert node(waiting, "ORDER_listener_task").status == "EXECUTING"
        assert waiting.correlations and [e[2] for e in index_entries(second)] == ["R-1"]

        await env.send("restart_orders", {"order_id": "R-1"})
        await env.wait_for_status("waiting", "COMPLETED")
        assert state(second, "waiting").runtime_parameters["billed"] == 1
        assert state(second, "waiting").runtime_parameters["messages"] == [{"order_id": "R-1"}]
        # The message consumed before the restart was not delivered again.
        assert state(second, "done-before").runtime_parameters["messages"] == [{"order_id": "R-0"}]
        assert state(second, "done-before").runtime_parameters["billed"] == 1
        assert state(second, "later").status == "EXECUTING"

        await env.sleep(1)
        await env.wait_for_status("later", "COMPLETED")
        assert state(second, "later").runtime_parameters["delivered"] == 1
        assert rows(second, "timers") == 0 and index_entries(second) == []


async def test_message_appended_before_a_stop_is_delivered_after_restart(make_engine: EngineFactory) -> None:
    """§10.55: a message appended to a listener topic just before the engine stops is
    delivered exactly once, by that engine or by the next one (the topic and the consumer
    position are durable and committed with the state)."""
    clock = ManualClock()
    first = make_engine("orders", clock=clock)
    await first.start()
    try:
        listen, _ = _register(first)
        await listen.create_instance("w", submit_task=True, order_id="R-7")
    finally:
        await first.stop()
    second = make_engine("orders", clock=clock)
    _register(second)
    await second.start()
    try:
        await second.topics["restart_orders"].send(value={"order_id": "R-7"})
    finally:
        await second.stop()  # stop before (or while) it is handled
    third = make_engine("orders", clock=clock)
    _register(third)
    await third.start()
    try:
        assert (await third.wait_for("w", timeout=5)).status.code == "COMPLETED"
        assert state(third, "w").runtime_parameters["messages"] == [{"order_id": "R-7"}]
        assert state(third, "w").runtime_parameters["billed"] == 1
    finally:
        await third.stop()
