"""Inventory §10.29-31 and §10.42-43: interval deadlines, trigger bookkeeping, triggers that
are due before they are reached, monitored processes and max_run_duration.

Time is a ManualClock: nothing sleeps. The first tests run in a ``WorkflowEnvironment``
(daggerflow.testing), whose ``sleep`` steps time through every timer due and returns once
the engine has settled; the others move the clock by hand and wait for the state a timer
leads to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daggerflow import (
    COMPLETE_BY_KEY,
    DAGBuilderHelper,
    Dagger,
    DefaultMonitoringTask,
    ExecutorTask,
    IntervalTask,
    ITask,
    ManualClock,
    MonitoredProcessTemplateDAGInstance,
    MonitoringTask,
    TriggerTask,
)
from daggerflow.templates import ITemplateDAG
from daggerflow.testing import WorkflowEnvironment

from .support_29_56 import JsonKeyListener, has_timer, index_entries, node, rows, state

EngineFactory = Callable[..., Dagger]


class NeverDonePoll(IntervalTask[str, str]):
    """interval_execute never reports done: only the force-complete deadline ends it."""

    async def interval_execute(self, runtime_parameters: dict[str, Any]) -> bool:
        runtime_parameters["polls"] = runtime_parameters.get("polls", 0) + 1
        return False

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["executed_at_poll"] = runtime_parameters.get("polls", 0)


class DoneAtTwoPoll(IntervalTask[str, str]):
    async def interval_execute(self, runtime_parameters: dict[str, Any]) -> bool:
        runtime_parameters["polls"] = runtime_parameters.get("polls", 0) + 1
        return bool(runtime_parameters["polls"] >= 2)

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["interval_executed"] = True


class FireTrigger(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["fired"] = runtime_parameters.get("fired", 0) + 1


class AfterStep(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["after"] = True


class SlowStep(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["slow_step_ran"] = True


class TimeListener(JsonKeyListener):
    correlatable_key = "order_id"


class RecordingMonitor(DefaultMonitoringTask[str, str]):
    async def process_monitored_task(self, monitored_task: ITask[Any, Any], workflow_instance: Any) -> None:
        fired = workflow_instance.runtime_parameters.setdefault("monitor_fired", [])
        fired.append(monitored_task.task_name)


class WatchedProcess(MonitoredProcessTemplateDAGInstance[str, str]):
    def get_monitoring_task_type(self) -> type[MonitoringTask[Any, Any]]:
        return RecordingMonitor


def _register(engine: Dagger, name: str, *processes: Any) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    template = helper.generic_template(
        template_name=name, root_process=helper.build_and_link_processes(list(processes))
    )
    engine.add_template(name, template)
    return template


def _interval_workflow(engine: Dagger, poll: type) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    tasks = helper.build_and_link_tasks(
        [
            helper.generic_interval_task_builder(
                task_type=poll,
                name="poll",
                time_to_force_complete_key="deadline",
                interval_execute_period_key="period",
            ),
            helper.generic_executor_task_builder(task_type=AfterStep, name="after"),
        ]
    )
    return _register(
        engine, "IntervalFlow", helper.generic_process_builder(process_name="P", root_task=tasks)
    )


async def _started(make_engine: EngineFactory, clock: ManualClock, name: str = "engine") -> Dagger:
    engine = make_engine(name, clock=clock)
    await engine.start()
    return engine


# §10.29 -------------------------------------------------------------------------------------


async def test_interval_force_completes_at_deadline(make_engine: EngineFactory) -> None:
    """§10.29 (fix): interval_execute keeps returning False; once the force-complete
    deadline passes the task runs ``execute`` and completes instead of hanging."""
    async with WorkflowEnvironment(make_engine) as env:
        engine = env.engine
        _interval_workflow(engine, NeverDonePoll)
        t0 = env.now()
        await env.start_workflow("IntervalFlow", "i", deadline=t0 + 25, period=10)
        assert state(engine, "i").runtime_parameters["polls"] == 1 and has_timer(state(engine, "i"))
        assert node(state(engine, "i"), "poll").status == "EXECUTING"
        await env.sleep(20)  # polls at t0+10 and t0+20
        assert state(engine, "i").runtime_parameters["polls"] == 3
        # t0+20: next poll would be t0+30, but the deadline (t0+25) is earlier: fire then.
        assert list(state(engine, "i").timers.values()) == [t0 + 25]
        await env.sleep(10)
        await env.wait_for_status("i", "COMPLETED")
        committed = state(engine, "i")
        assert node(committed, "poll").status == "COMPLETED"
        assert node(committed, "poll").time_completed == t0 + 25  # at the deadline itself
        assert committed.runtime_parameters["executed_at_poll"] == 3  # execute ran, no 4th poll
        assert committed.runtime_parameters["after"] is True  # and the chain moved on
        assert committed.timers == {} and rows(engine, "timers") == 0


async def test_interval_reached_after_its_deadline_executes_at_once(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.29: an interval task reached when its deadline has already passed runs
    ``execute`` at once, without polling."""
    engine = await _started(make_engine, clock)
    try:
        template = _interval_workflow(engine, NeverDonePoll)
        await template.create_instance("late", submit_task=True, deadline=clock.now() - 1, period=10)
        inst = await engine.wait_for("late", timeout=5)
        assert inst.status.code == "COMPLETED"
        params = state(engine, "late").runtime_parameters
        assert "polls" not in params and params["executed_at_poll"] == 0
    finally:
        await engine.stop()


async def test_interval_completes_when_interval_execute_returns_true(make_engine: EngineFactory) -> None:
    """§10.28/§10.29: on True the task runs execute once and completes before the deadline."""
    async with WorkflowEnvironment(make_engine) as env:
        engine = env.engine
        _interval_workflow(engine, DoneAtTwoPoll)
        await env.start_workflow("IntervalFlow", "i", deadline=env.now() + 1000, period=10)
        assert state(engine, "i").runtime_parameters.get("polls") == 1 and has_timer(state(engine, "i"))
        await env.sleep(10)
        await env.wait_for_status("i", "COMPLETED")
        params = state(engine, "i").runtime_parameters
        assert params["polls"] == 2 and params["interval_executed"] is True
        # §10.30: the completed interval task leaves no pending timer behind.
        assert state(engine, "i").timers == {} and rows(engine, "timers") == 0
        assert engine.stats()["timers"] == 0


# §10.30 -------------------------------------------------------------------------------------


def _trigger_workflow(engine: Dagger, first_listener: bool = False) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    chain: list[Any] = []
    if first_listener:
        chain.append(
            helper.generic_listener_task_builder(
                topic="time_orders", task_type=TimeListener, process_name="P"
            )
        )
    chain.append(
        helper.generic_trigger_task_builder(task_type=FireTrigger, name="fire", time_to_execute_key="when")
    )
    chain.append(helper.generic_executor_task_builder(task_type=AfterStep, name="after"))
    process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks(chain))
    return _register(engine, "TriggerFlow", process)


async def test_completed_trigger_leaves_no_timer(make_engine: EngineFactory) -> None:
    """§10.26/§10.30: a future trigger waits with one durable timer; after it fires the task
    is COMPLETED and neither the instance nor the store keeps a timer."""
    async with WorkflowEnvironment(make_engine) as env:
        engine = env.engine
        _trigger_workflow(engine)
        t0 = env.now()
        await env.start_workflow("TriggerFlow", "t", when=t0 + 60)
        inst = state(engine, "t")
        assert node(inst, "fire").status == "EXECUTING"
        assert len(inst.timers) == 1 and rows(engine, "timers") == 1
        await env.sleep(59)  # settled: not due yet, so nothing happened
        assert node(state(engine, "t"), "fire").status == "EXECUTING"
        await env.sleep(1)
        await env.wait_for_status("t", "COMPLETED")
        inst = state(engine, "t")
        assert node(inst, "fire").status == "COMPLETED" and inst.runtime_parameters["fired"] == 1
        assert node(inst, "fire").time_completed == t0 + 60
        assert inst.timers == {}
        assert rows(engine, "timers") == 0
        assert engine.stats()["timers"] == 0


async def test_timers_of_stopped_workflow_are_purged(make_engine: EngineFactory, clock: ManualClock) -> None:
    """§10.30: a workflow that ends (here: stopped) while its trigger is pending leaves no
    timer; moving past the due time runs nothing."""
    engine = await _started(make_engine, clock)
    try:
        template = _trigger_workflow(engine)
        await template.create_instance("s", submit_task=True, when=clock.now() + 60)
        assert rows(engine, "timers") == 1
        await engine.stop_instance("s")
        inst = state(engine, "s")
        assert inst is not None and inst.status == "STOPPED" and inst.timers == {}
        assert rows(engine, "timers") == 0 and engine.stats()["timers"] == 0
        clock.advance(120)
        marker = await template.create_instance("marker", submit_task=True, when=clock.now())
        await engine.wait_for(marker.id, timeout=5)
        inst = state(engine, "s")
        assert inst is not None and "fired" not in inst.runtime_parameters
        assert node(inst, "fire").status == "STOPPED"
    finally:
        await engine.stop()


# §10.31 -------------------------------------------------------------------------------------


async def test_due_trigger_not_yet_reached_fires_when_reached(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.31: a trigger whose time passes while the walk waits on an earlier listener is
    kept; when the walk reaches it, it fires at once (no further clock movement)."""
    engine = await _started(make_engine, clock)
    try:
        template = _trigger_workflow(engine, first_listener=True)
        await template.create_instance("r", submit_task=True, order_id="O-1", when=clock.now() + 30)
        inst = state(engine, "r")
        assert inst is not None
        assert node(inst, "P_listener_task").status == "EXECUTING"
        assert node(inst, "fire").status == "NOT_STARTED"
        clock.advance(300)  # the trigger's time passes while it is unreached
        await engine.topics["time_orders"].send(value={"order_id": "O-1"})
        view = await engine.wait_for("r", timeout=5)
        assert view.status.code == "COMPLETED"
        inst = state(engine, "r")
        assert inst is not None
        assert node(inst, "fire").status == "COMPLETED"
        assert inst.runtime_parameters["fired"] == 1 and inst.runtime_parameters["after"] is True
        assert rows(engine, "timers") == 0
    finally:
        await engine.stop()


async def test_future_trigger_reached_late_still_waits_for_its_time(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.26/§10.31 counterpart: reached before its time, the trigger waits for it."""
    engine = await _started(make_engine, clock)
    try:
        template = _trigger_workflow(engine, first_listener=True)
        await template.create_instance("r", submit_task=True, order_id="O-2", when=clock.now() + 300)
        clock.advance(100)
        await engine.topics["time_orders"].send(value={"order_id": "O-2"})
        await engine.wait_for("r", lambda i: node(i, "fire").status == "EXECUTING" and has_timer(i), 5)
        assert state(engine, "r").timers == {f"{node(state(engine, 'r'), 'fire').id}:due": clock.now() + 200}
        clock.advance(200)
        assert (await engine.wait_for("r", timeout=5)).status.code == "COMPLETED"
    finally:
        await engine.stop()


# §10.42 -------------------------------------------------------------------------------------


def _monitored_workflow(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    watched = helper.generic_process_builder(
        process_name="FULFILLMENT",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_listener_task_builder(
                    topic="time_orders", task_type=TimeListener, process_name="FULFILLMENT"
                )
            ]
        ),
        process_type=WatchedProcess,
    )
    last = helper.generic_process_builder(
        process_name="LAST",
        root_task=helper.build_and_link_tasks(
            [helper.generic_executor_task_builder(task_type=AfterStep, name="last")]
        ),
    )
    return _register(engine, "MonitoredFlow", watched, last)


async def test_monitor_fires_when_process_is_unfinished_at_complete_by_time(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.42: a monitored process with ``complete_by_time`` runs its monitoring task's
    ``process_monitored_task`` at that time because the process is still unfinished; the
    process itself keeps waiting (only the callback could change it)."""
    engine = await _started(make_engine, clock)
    try:
        template = _monitored_workflow(engine)
        await template.create_instance(
            "m", submit_task=True, order_id="M-1", **{COMPLETE_BY_KEY: clock.now() + 120}
        )
        inst = state(engine, "m")
        assert inst is not None
        monitor = node(inst, "FULFILLMENT.monitor")
        assert monitor.status == "EXECUTING" and monitor.type_name == "RecordingMonitor"
        assert f"{monitor.id}:due" in inst.timers
        clock.advance(119)
        assert "monitor_fired" not in state(engine, "m").runtime_parameters
        clock.advance(1)
        inst_view = await engine.wait_for(
            "m", lambda i: node(i, "FULFILLMENT.monitor").status == "COMPLETED", 5
        )
        assert inst_view.status.code == "EXECUTING"
        inst = state(engine, "m")
        assert inst is not None
        assert inst.runtime_parameters["monitor_fired"] == ["MonitoredFlow.FULFILLMENT"]
        assert node(inst, "FULFILLMENT").status == "EXECUTING"
        assert node(inst, "FULFILLMENT_listener_task").status == "EXECUTING"
        # The process can still finish normally afterwards.
        await engine.topics["time_orders"].send(value={"order_id": "M-1"})
        assert (await engine.wait_for("m", timeout=5)).status.code == "COMPLETED"
        assert state(engine, "m").runtime_parameters["monitor_fired"] == ["MonitoredFlow.FULFILLMENT"]
    finally:
        await engine.stop()


async def test_monitor_completed_and_cancelled_when_process_finishes_first(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.42: finishing the process completes its monitor and cancels the monitor's timer;
    the callback never runs, even once the time has passed."""
    engine = await _started(make_engine, clock)
    try:
        template = _monitored_workflow(engine)
        await template.create_instance(
            "m", submit_task=True, order_id="M-2", **{COMPLETE_BY_KEY: clock.now() + 120}
        )
        assert rows(engine, "timers") == 1
        await engine.topics["time_orders"].send(value={"order_id": "M-2"})
        assert (await engine.wait_for("m", timeout=5)).status.code == "COMPLETED"
        inst = state(engine, "m")
        assert inst is not None
        assert node(inst, "FULFILLMENT.monitor").status == "COMPLETED"
        assert inst.timers == {} and rows(engine, "timers") == 0 and engine.stats()["timers"] == 0
        clock.advance(500)
        marker = await template.create_instance("marker", submit_task=True, order_id="M-3")
        await engine.wait_for(
            marker.id, lambda i: node(i, "FULFILLMENT_listener_task").status == "EXECUTING", 5
        )
        assert "monitor_fired" not in state(engine, "m").runtime_parameters
    finally:
        await engine.stop()


async def test_monitor_due_in_the_past_fires_at_once(make_engine: EngineFactory, clock: ManualClock) -> None:
    """§10.42: a ``complete_by_time`` already past (as in Dagger's integration test) fires
    as soon as the monitored process starts."""
    engine = await _started(make_engine, clock)
    try:
        template = _monitored_workflow(engine)
        await template.create_instance(
            "m", submit_task=True, order_id="M-4", **{COMPLETE_BY_KEY: clock.now() - 10}
        )
        await engine.wait_for("m", lambda i: node(i, "FULFILLMENT.monitor").status == "COMPLETED", 5)
        assert state(engine, "m").runtime_parameters["monitor_fired"] == ["MonitoredFlow.FULFILLMENT"]
    finally:
        await engine.stop()


async def test_no_monitor_without_complete_by_time(make_engine: EngineFactory, clock: ManualClock) -> None:
    """§10.42: without ``complete_by_time`` no monitor is armed; it is closed with the workflow."""
    engine = await _started(make_engine, clock)
    try:
        template = _monitored_workflow(engine)
        await template.create_instance("m", submit_task=True, order_id="M-5")
        inst = state(engine, "m")
        assert inst is not None
        assert node(inst, "FULFILLMENT.monitor").status == "NOT_STARTED" and inst.timers == {}
        await engine.topics["time_orders"].send(value={"order_id": "M-5"})
        await engine.wait_for("m", timeout=5)
        inst = state(engine, "m")
        assert inst is not None and inst.status == "COMPLETED"
        assert node(inst, "FULFILLMENT.monitor").status == "SKIPPED"
        assert "monitor_fired" not in inst.runtime_parameters
    finally:
        await engine.stop()


# §10.43 -------------------------------------------------------------------------------------


def _max_run_workflow(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    slow = helper.generic_process_builder(
        process_name="SLOW",
        root_task=helper.build_and_link_tasks(
            [
                helper.generic_listener_task_builder(
                    topic="time_orders", task_type=TimeListener, process_name="SLOW"
                ),
                helper.generic_executor_task_builder(task_type=SlowStep, name="never"),
            ]
        ),
        max_run_duration=30,
    )
    last = helper.generic_process_builder(
        process_name="LAST",
        root_task=helper.build_and_link_tasks(
            [helper.generic_executor_task_builder(task_type=AfterStep, name="last")]
        ),
    )
    return _register(engine, "MaxRunFlow", slow, last)


async def test_max_run_duration_skips_process_and_moves_on(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.43 (fix): a process still running after ``max_run_duration`` seconds is SKIPPED
    (its unfinished tasks too) and the workflow continues with the next process."""
    engine = await _started(make_engine, clock)
    try:
        template = _max_run_workflow(engine)
        await template.create_instance("x", submit_task=True, order_id="X-1")
        assert node(state(engine, "x"), "SLOW").status == "EXECUTING"
        clock.advance(29)
        marker = await template.create_instance("marker", submit_task=True, order_id="X-9")
        await engine.wait_for(marker.id, lambda i: node(i, "SLOW").status == "EXECUTING", 5)
        assert node(state(engine, "x"), "SLOW").status == "EXECUTING"
        clock.advance(1)
        view = await engine.wait_for("x", timeout=5)
        assert view.status.code == "COMPLETED"
        inst = state(engine, "x")
        assert inst is not None
        assert node(inst, "SLOW").status == "SKIPPED"
        assert node(inst, "SLOW_listener_task").status == "SKIPPED"
        assert node(inst, "never_executor_task").status == "SKIPPED"
        assert node(inst, "LAST").status == "COMPLETED" and inst.runtime_parameters["after"] is True
        assert "slow_step_ran" not in inst.runtime_parameters
        # The skipped listener is no longer indexed: its message changes nothing.
        assert all(entry[3] != "x" for entry in index_entries(engine))
    finally:
        await engine.stop()


async def test_process_finishing_in_time_is_not_skipped(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    """§10.43: a process that finishes within ``max_run_duration`` completes normally and
    its deadline timer is cancelled."""
    engine = await _started(make_engine, clock)
    try:
        template = _max_run_workflow(engine)
        await template.create_instance("x", submit_task=True, order_id="X-2")
        assert rows(engine, "timers") == 1
        clock.advance(10)
        await engine.topics["time_orders"].send(value={"order_id": "X-2"})
        assert (await engine.wait_for("x", timeout=5)).status.code == "COMPLETED"
        inst = state(engine, "x")
        assert inst is not None
        assert node(inst, "SLOW").status == "COMPLETED" and inst.runtime_parameters["slow_step_ran"]
        assert rows(engine, "timers") == 0
        clock.advance(100)
        assert node(state(engine, "x"), "SLOW").status == "COMPLETED"
    finally:
        await engine.stop()
