"""Inventory §10.37-41: task failure, errors at creation, stopping workflows."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    InvalidTriggerTimeForTask,
    NotSerializable,
    TaskInvalidState,
    TaskOperator,
    TaskStatus,
    TaskStatusEnum,
    TriggerTask,
)
from daggerflow.templates import ITemplateDAG

from .support_29_56 import JsonKeyListener, index_entries, node, rows, state

# Observations made by task code (tasks are fresh objects per call, so they report here).
STOP_CALLS: dict[str, list[str]] = defaultdict(list)
EVENTS: dict[tuple[str, str], asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh_observations() -> None:
    STOP_CALLS.clear()
    EVENTS.clear()


def _event(iid: str, what: str) -> asyncio.Event:
    return EVENTS.setdefault((iid, what), asyncio.Event())


def _short(task_name: str) -> str:
    return task_name.rsplit(".", 1)[-1]


class Step(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters.setdefault("order", []).append(_short(self.task_name))

    async def stop(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        STOP_CALLS[workflow_instance.id].append(_short(self.task_name))


class MarksFailure(ExecutorTask[str, str]):
    """Dagger's way to fail: set ``self.status`` to FAILURE inside ``execute``."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters.setdefault("order", []).append(_short(self.task_name))
        self.status = TaskStatus(code=TaskStatusEnum.FAILURE.name, value=TaskStatusEnum.FAILURE.value)


class Raises(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        raise ValueError(f"payment declined for {runtime_parameters['order_id']}")


class Hangs(ExecutorTask[str, str]):
    """Runs until cancelled; reports that it started, was cancelled and had stop() called."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        iid = workflow_instance.id
        _event(iid, "hang started").set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _event(iid, "hang cancelled").set()
            raise

    async def stop(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        STOP_CALLS[workflow_instance.id].append(_short(self.task_name))
        _event(workflow_instance.id, "hang stop()").set()


class StopListener(JsonKeyListener):
    correlatable_key = "order_id"

    async def stop(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        STOP_CALLS[workflow_instance.id].append(_short(self.task_name))
        _event(workflow_instance.id, "listener stop()").set()


class Timed(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["timed"] = True


def _register(engine: Dagger, name: str, processes: list[Any]) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    template = helper.generic_template(
        template_name=name, root_process=helper.build_and_link_processes(processes)
    )
    engine.add_template(name, template)
    return template


def _process(helper: DAGBuilderHelper, name: str, tasks: list[Any], **options: Any) -> Any:
    return helper.generic_process_builder(
        process_name=name, root_task=helper.build_and_link_tasks(tasks), **options
    )


def _step(helper: DAGBuilderHelper, name: str, cls: type = Step) -> Any:
    return helper.generic_executor_task_builder(task_type=cls, name=name)


# §10.37 ---------------------------------------------------------------------------------------


def _failing(
    engine: Dagger, cls: type, *, task_continues: bool = False, process_continues: bool = False
) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    failing = _step(helper, "pay", cls)
    if task_continues:
        failing.set_continue_on_failure()
    first = _process(helper, "PAYMENT", [failing, _step(helper, "receipt")])
    if process_continues:
        first.set_continue_on_failure()
    name = f"Fail{cls.__name__}{task_continues}{process_continues}"
    return _register(engine, name, [first, _process(helper, "SHIP", [_step(helper, "ship")])])


async def test_failure_status_fails_the_workflow_by_default(engine: Dagger) -> None:
    """§10.37 (deliberately changed from Dagger): a task that sets FAILURE is recorded as
    FAILURE and, by default, fails its process and the workflow; nothing after it runs."""
    template = _failing(engine, MarksFailure)
    await template.create_instance("f", submit_task=True)
    view = await engine.wait_for("f", timeout=5)
    assert view.status.code == "FAILURE"
    inst = state(engine, "f")
    assert node(inst, "pay_executor_task").status == "FAILURE"
    assert node(inst, "PAYMENT").status == "FAILURE"
    assert node(inst, "receipt_executor_task").status == "SKIPPED"
    assert node(inst, "SHIP").status == "SKIPPED"
    assert inst.runtime_parameters["order"] == ["pay_executor_task"]
    assert engine.count_instances(status="FAILURE") == 1


async def test_exception_fails_the_workflow_with_error_and_traceback(engine: Dagger) -> None:
    """§10.37: an exception in ``execute`` (no retry policy) makes the task FAILURE with
    the error and traceback recorded, and fails the workflow."""
    template = _failing(engine, Raises)
    await template.create_instance("e", submit_task=True, order_id="O-7")
    view = await engine.wait_for("e", timeout=5)
    assert view.status.code == "FAILURE"
    pay = node(state(engine, "e"), "pay_executor_task")
    assert pay.status == "FAILURE"
    assert pay.error == "ValueError: payment declined for O-7"
    assert pay.traceback is not None and "Traceback" in pay.traceback and "payment declined" in pay.traceback
    task_view = view.get_task(pay.id)
    assert task_view is not None and task_view.error == pay.error
    assert node(state(engine, "e"), "SHIP").status == "SKIPPED"


async def test_continue_on_failure_task(engine: Dagger) -> None:
    """§10.37: with ``.set_continue_on_failure()`` on the task the workflow continues
    (Dagger's behaviour) and completes; the failed task stays FAILURE with its error."""
    template = _failing(engine, Raises, task_continues=True)
    await template.create_instance("c", submit_task=True, order_id="O-8")
    view = await engine.wait_for("c", timeout=5)
    assert view.status.code == "COMPLETED"
    inst = state(engine, "c")
    assert node(inst, "pay_executor_task").status == "FAILURE"
    assert node(inst, "pay_executor_task").error == "ValueError: payment declined for O-8"
    assert node(inst, "PAYMENT").status == "COMPLETED"
    assert inst.runtime_parameters["order"] == ["receipt_executor_task", "ship_executor_task"]


async def test_continue_on_failure_process(engine: Dagger) -> None:
    """§10.37: with ``.set_continue_on_failure()`` on the process, the process is FAILURE
    but the workflow goes on to the next process and completes."""
    template = _failing(engine, MarksFailure, process_continues=True)
    await template.create_instance("p", submit_task=True)
    view = await engine.wait_for("p", timeout=5)
    assert view.status.code == "COMPLETED"
    inst = state(engine, "p")
    assert node(inst, "PAYMENT").status == "FAILURE"
    assert node(inst, "receipt_executor_task").status == "SKIPPED"
    assert node(inst, "SHIP").status == "COMPLETED"
    assert inst.runtime_parameters["order"] == ["pay_executor_task", "ship_executor_task"]


# §10.38 ---------------------------------------------------------------------------------------


def _creation_template(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    listener = helper.generic_listener_task_builder(
        topic="fs_orders", task_type=StopListener, process_name="WAIT", allow_skip_to=True
    )
    trigger = helper.generic_trigger_task_builder(task_type=Timed, name="timed", time_to_execute_key="when")
    return _register(engine, "CreationFlow", [_process(helper, "WAIT", [listener, trigger])])


def _nothing_persisted(engine: Dagger, iid: str) -> None:
    assert engine.committed(iid) is None
    assert engine.list_instances() == []
    assert engine.count_instances() == 0
    assert index_entries(engine) == []
    assert rows(engine, "timers") == 0 and rows(engine, "jobs") == 0 and rows(engine, "instances") == 0


async def test_creation_errors_surface_and_persist_nothing(engine: Dagger) -> None:
    """§10.38 (fix): errors at creation reach the caller and leave no instance, no index
    entry and no timer behind: a missing trigger time, a runtime parameter that is not
    JSON-serialisable, a dynamic process with nothing to expand to."""
    template = _creation_template(engine)
    with pytest.raises(InvalidTriggerTimeForTask, match="when"):
        await template.create_instance("bad", order_id="O-1")
    _nothing_persisted(engine, "bad")

    with pytest.raises(NotSerializable, match="blob"):
        await template.create_instance("bad", order_id="O-1", when=1.0, blob=object())
    _nothing_persisted(engine, "bad")

    with pytest.raises(InvalidTriggerTimeForTask):
        await template.create_instance("bad", submit_task=True, order_id="O-1", when="tomorrow")
    _nothing_persisted(engine, "bad")

    helper = DAGBuilderHelper(engine)
    empty_dynamic = _register(engine, "EmptyDynamic", [helper.generic_dynamic_process_builder(name="DYN")])
    with pytest.raises(TaskInvalidState, match="DYN"):
        await empty_dynamic.create_instance("bad", submit_task=True)
    _nothing_persisted(engine, "bad")

    # The same id then creates normally, and the checks above were not vacuous: a
    # skip-to listener is indexed at creation and a reached trigger has a timer.
    await template.create_instance("bad", order_id="O-1", when=engine.clock.now() + 3600)
    assert engine.count_instances() == 1
    assert [(e[0], e[1], e[2]) for e in index_entries(engine)] == [("fs_orders", "order_id", "O-1")]
    await engine.submit("bad")
    await engine.topics["fs_orders"].send(value={"order_id": "O-1"})
    await engine.wait_for("bad", lambda i: node(i, "timed").status == "EXECUTING", 5)
    assert rows(engine, "timers") == 1


# §10.39-41 ------------------------------------------------------------------------------------


def _stoppable(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    group = helper.generic_parallel_task_builder(
        name="group",
        tasks=[
            _step(helper, "hang", Hangs),
            helper.generic_listener_task_builder(
                topic="fs_orders", task_type=StopListener, process_name="WAIT"
            ),
        ],
        operator=TaskOperator.JOIN_ALL,
    )
    return _register(
        engine,
        "StoppableFlow",
        [
            _process(helper, "FIRST", [_step(helper, "first")]),
            _process(helper, "MIDDLE", [group, _step(helper, "after")]),
            _process(helper, "LAST", [_step(helper, "last")]),
        ],
    )


async def test_stop_reaches_every_node_and_calls_stop_hooks(engine: Dagger) -> None:
    """§10.39/§10.40 (fix): stopping calls ``stop()`` on every EXECUTING task (inside the
    parallel group too) and cancels the running ``execute``; every non-terminal node,
    not-started ones included, becomes STOPPED; completed nodes are untouched; the STOPPED
    root is persisted and nothing stays indexed, timed or queued."""
    template = _stoppable(engine)
    await template.create_instance("s", submit_task=True, order_id="S-1")
    await asyncio.wait_for(_event("s", "hang started").wait(), 5)
    before = state(engine, "s")
    first_completed_at = node(before, "first_executor_task").time_completed
    assert node(before, "WAIT_listener_task").status == "EXECUTING"
    assert node(before, "hang_executor_task").status == "EXECUTING"
    assert index_entries(engine) != []

    stopped = await engine.stop_instance("s")
    assert stopped is not None and stopped.status.code == "STOPPED"
    await asyncio.wait_for(_event("s", "hang cancelled").wait(), 5)
    await asyncio.wait_for(_event("s", "hang stop()").wait(), 5)
    await asyncio.wait_for(_event("s", "listener stop()").wait(), 5)
    assert sorted(STOP_CALLS["s"]) == ["WAIT_listener_task", "hang_executor_task"]

    inst = state(engine, "s")
    assert inst.status == "STOPPED"
    assert node(inst, "FIRST").status == "COMPLETED"
    assert node(inst, "first_executor_task").status == "COMPLETED"
    assert node(inst, "first_executor_task").time_completed == first_completed_at
    for name in (
        "MIDDLE",
        "group",
        "hang_executor_task",
        "WAIT_listener_task",
        "after_executor_task",
        "LAST",
        "last_executor_task",
    ):
        assert node(inst, name).status == "STOPPED", name
    assert engine.list_instances(status="STOPPED")[0].id == "s"
    assert index_entries(engine) == [] and rows(engine, "timers") == 0 and rows(engine, "jobs") == 0
    fetched = await engine.get_instance("s")
    assert fetched is not None and fetched.status.code == "STOPPED"


async def test_no_message_revives_a_stopped_workflow(engine: Dagger) -> None:
    """§10.40 (fix): after a stop, the message the parallel child listener waited for
    changes nothing (Dagger completed the workflow from here); re-submitting is refused."""
    template = _stoppable(engine)
    await template.create_instance("s", submit_task=True, order_id="S-2")
    await engine.wait_for("s", lambda i: node(i, "WAIT_listener_task").status == "EXECUTING", 5)
    await engine.stop_instance("s")
    stopped = state(engine, "s")

    await engine.topics["fs_orders"].send(value={"order_id": "S-2"})
    # A second workflow on the same topic, completed by a later message, shows that the
    # consumer has processed the first message.
    await template.create_instance("witness", submit_task=True, order_id="W-2")
    await engine.wait_for("witness", lambda i: node(i, "WAIT_listener_task").status == "EXECUTING", 5)
    await engine.topics["fs_orders"].send(value={"order_id": "W-2"})
    await engine.wait_for("witness", lambda i: node(i, "WAIT_listener_task").status == "COMPLETED", 5)

    inst = state(engine, "s")
    assert inst.status == "STOPPED"
    assert node(inst, "WAIT_listener_task").status == "STOPPED"
    assert "messages" not in inst.runtime_parameters
    assert inst.update_count == stopped.update_count

    with pytest.raises(TaskInvalidState):
        await engine.submit("s")
    assert state(engine, "s").update_count == stopped.update_count
    await engine.stop_instance("witness")


async def test_stop_reaches_parallel_child_processes(engine: Dagger) -> None:
    """§10.40 (fix): stop also reaches the child processes of a parallel process."""
    helper = DAGBuilderHelper(engine)
    listener = helper.generic_listener_task_builder(
        topic="fs_orders", task_type=StopListener, process_name="WAIT"
    )
    parallel = helper.generic_parallel_process_builder(
        name="par",
        processes=[
            _process(helper, "WAIT", [listener]),
            _process(helper, "TIMED", [_step(helper, "hang", Hangs)]),
        ],
    )
    template = _register(engine, "ParStop", [parallel, _process(helper, "LAST", [_step(helper, "last")])])
    await template.create_instance("ps", submit_task=True, order_id="PS-1")
    await asyncio.wait_for(_event("ps", "hang started").wait(), 5)
    await engine.stop_instance("ps")
    inst = state(engine, "ps")
    for name in (
        "par",
        "WAIT",
        "WAIT_listener_task",
        "TIMED",
        "hang_executor_task",
        "LAST",
        "last_executor_task",
    ):
        assert node(inst, name).status == "STOPPED", name
    await asyncio.wait_for(_event("ps", "listener stop()").wait(), 5)
    await asyncio.wait_for(_event("ps", "hang stop()").wait(), 5)


async def test_stopping_a_terminal_workflow_is_a_no_op(engine: Dagger) -> None:
    """§10.41: stopping a COMPLETED, FAILURE or already STOPPED workflow changes nothing
    (not even ``update_count``); stopping an unknown id returns None."""
    helper = DAGBuilderHelper(engine)
    done = _register(engine, "Done", [_process(helper, "ONLY", [_step(helper, "only")])])
    await done.create_instance("done", submit_task=True)
    await engine.wait_for("done", timeout=5)
    failed = _failing(engine, MarksFailure)
    await failed.create_instance("failed", submit_task=True)
    await engine.wait_for("failed", timeout=5)
    waiting = _stoppable(engine)
    await waiting.create_instance("twice", submit_task=True, order_id="T-1")
    await engine.stop_instance("twice")

    for iid, expected in (("done", "COMPLETED"), ("failed", "FAILURE"), ("twice", "STOPPED")):
        before = state(engine, iid)
        result = await engine.stop_instance(iid)
        assert result is not None and result.status.code == expected
        view = await engine.get_instance(iid)
        assert view is not None
        await view.stop()  # Dagger's spelling: instance.stop()
        after = state(engine, iid)
        assert after.status == expected
        assert after.update_count == before.update_count
        assert after.lastupdated == before.lastupdated
        assert {n.id: n.status for n in after.nodes.values()} == {
            n.id: n.status for n in before.nodes.values()
        }
    assert STOP_CALLS["done"] == [] and STOP_CALLS["failed"] == []
    assert await engine.stop_instance("no-such-workflow") is None


class CancellingListener(JsonKeyListener):
    """On stop, tells the order service to cancel (a message sent from a stop() hook)."""

    correlatable_key = "order_id"

    async def stop(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        await self_engine(workflow_instance).topics["cancellations"].send(
            key=runtime_parameters["order_id"], value=runtime_parameters["order_id"]
        )


def self_engine(workflow_instance: Any) -> Dagger:
    engine = workflow_instance._engine
    assert isinstance(engine, Dagger)
    return engine


async def test_messages_sent_by_a_stop_hook_are_published(make_engine: Any) -> None:
    """§10.39: stop() runs on the executing listener; what it sends is committed."""
    engine = make_engine()
    helper = DAGBuilderHelper(engine)

    @engine.register_template("Cancellable")
    def template(name: str) -> ITemplateDAG:
        wait = helper.generic_listener_task_builder(
            topic="ready", task_type=CancellingListener, process_name="wait"
        )
        process = helper.generic_process_builder(process_name="wait", root_task=wait)
        return helper.generic_template(template_name=name, root_process=process)

    seen = asyncio.Event()
    received: list[str] = []

    @engine.agent("cancellations")
    async def on_cancel(value: str) -> None:
        received.append(value)
        seen.set()

    async with engine:
        inst = await engine.template_dags["Cancellable"].create_instance(
            "c1", submit_task=True, order_id="o-1"
        )
        await engine.wait_for(inst.id, lambda i: i.correlations != {}, timeout=5)
        await inst.stop()
        await asyncio.wait_for(seen.wait(), 5)
        assert received == ["o-1"]
        assert [m.value for m in engine.read_topic("cancellations", 0, 10)] == ["o-1"]
        assert (await engine.get_instance("c1")).status.code == "STOPPED"  # type: ignore[union-attr]
