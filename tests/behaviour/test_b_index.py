"""Inventory §10.51-54: many waiters on one correlation value, pruning of stale index
entries, builder type checks, one consumer per listener topic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    DecisionTask,
    DecisionTaskTemplateBuilder,
    DefaultMonitoringTask,
    DefaultTaskTemplateBuilder,
    ExecutorTask,
    IntervalTask,
    IntervalTaskTemplateBuilder,
    InvalidTaskType,
    KafkaCommandTask,
    KafkaCommandTaskTemplateBuilder,
    KafkaListenerTask,
    KafkaListenerTaskTemplateBuilder,
    MonitoredProcessTemplateDAGInstance,
    ParallelCompositeProcessTemplateDagBuilder,
    ProcessTemplateDagBuilder,
    TaskLookupKey,
    TriggerTask,
    TriggerTaskTemplateBuilder,
)
from daggerflow.builders import DynamicProcessTemplateDagBuilder
from daggerflow.model.instance import Correlation
from daggerflow.store.base import WriteBatch
from daggerflow.templates import ITemplateDAG

from .support_29_56 import JsonKeyListener, index_entries, node, rows, state


class BoxListener(JsonKeyListener):
    correlatable_key = "box_id"


class Noop(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        return None


def _listener_template(engine: Dagger, name: str, topic: str, cls: type) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="WAIT",
        root_task=helper.build_and_link_tasks(
            [helper.generic_listener_task_builder(topic=topic, task_type=cls, process_name="WAIT")]
        ),
    )
    template = helper.generic_template(
        template_name=name, root_process=helper.build_and_link_processes([process])
    )
    engine.add_template(name, template)
    return template


# §10.51 -----------------------------------------------------------------------------------------


async def test_one_value_with_20000_waiting_listeners(engine: Dagger) -> None:
    """§10.51: 20,000 workflows wait on the same correlation value (Dagger chunked such
    index values); one message completes every one of them, leaves the workflows waiting on
    another value alone, and the index is empty for that value afterwards."""
    template = _listener_template(engine, "ManyWaiters", "boxes", BoxListener)
    n = 20_000
    await asyncio.gather(
        *(template.create_instance(f"w{i}", submit_task=True, box_id="BOX-1") for i in range(n))
    )
    await asyncio.gather(
        *(template.create_instance(f"o{i}", submit_task=True, box_id="BOX-2") for i in range(3))
    )
    assert engine.count_instances(status="EXECUTING") == n + 3
    assert rows(engine, "correlation") == n + 3

    await engine.topics["boxes"].send(value={"box_id": "BOX-1"})
    await asyncio.gather(*(engine.wait_for(f"w{i}", timeout=30) for i in range(n)))

    assert engine.count_instances(status="COMPLETED") == n
    assert engine.count_instances(status="EXECUTING") == 3
    for iid in ("w0", f"w{n // 2}", f"w{n - 1}"):
        assert state(engine, iid).runtime_parameters["messages"] == [{"box_id": "BOX-1"}]
    assert {e[2] for e in index_entries(engine)} == {"BOX-2"}
    assert rows(engine, "correlation") == 3


# §10.52 -----------------------------------------------------------------------------------------


async def test_stale_index_entries_are_pruned(engine: Dagger) -> None:
    """§10.52: index entries that point to a workflow that no longer exists, or to a task
    the workflow does not have, are removed when a message meets them; the live waiter
    under the same value still gets the message."""
    template = _listener_template(engine, "Pruned", "boxes", BoxListener)
    await template.create_instance("live", submit_task=True, box_id="BOX-9")
    store = engine.runtime.store
    # Simulate leftovers (e.g. a workflow removed behind the engine's back).
    at = Correlation("boxes", "box_id", "BOX-9")
    store.commit(
        WriteBatch(index_put=[(at, "deleted-workflow", "n1", False), (at, "live", "no-such-task", False)]),
        0.0,
    )
    assert len(index_entries(engine, "boxes")) == 3

    await engine.topics["boxes"].send(value={"box_id": "BOX-9"})
    assert (await engine.wait_for("live", timeout=5)).status.code == "COMPLETED"
    assert index_entries(engine) == []
    assert engine.committed("deleted-workflow") is None  # nothing was resurrected
    assert engine.runtime.processor is not None and engine.runtime.processor.failed is None


# §10.53 -----------------------------------------------------------------------------------------


class AListener(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"


class ACommand(KafkaCommandTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        return None


class ATrigger(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        return None


class AnInterval(IntervalTask[str, str]):
    pass


class ADecision(DecisionTask[str, str]):
    pass


class NotAMonitorProcess(MonitoredProcessTemplateDAGInstance[str, str]):
    def get_monitoring_task_type(self) -> Any:
        return Noop


class AMonitor(DefaultMonitoringTask[str, str]):
    pass


class GoodMonitorProcess(MonitoredProcessTemplateDAGInstance[str, str]):
    def get_monitoring_task_type(self) -> Any:
        return AMonitor


class NotATask:
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        return None


@pytest.mark.parametrize(
    ("builder", "wrong"),
    [
        (KafkaListenerTaskTemplateBuilder, Noop),
        (KafkaListenerTaskTemplateBuilder, ACommand),
        (KafkaCommandTaskTemplateBuilder, AListener),
        (KafkaCommandTaskTemplateBuilder, Noop),
        (DefaultTaskTemplateBuilder, AListener),
        (DefaultTaskTemplateBuilder, ACommand),
        (TriggerTaskTemplateBuilder, Noop),
        (IntervalTaskTemplateBuilder, ATrigger),
        (DecisionTaskTemplateBuilder, Noop),
        (DefaultTaskTemplateBuilder, NotATask),
        (DefaultTaskTemplateBuilder, int),
        (DefaultTaskTemplateBuilder, "Noop"),
    ],
)
def test_builders_reject_task_types_that_do_not_fit(builder: type, wrong: Any) -> None:
    """§10.53: a builder given a task type of the wrong kind raises InvalidTaskType."""
    with pytest.raises(InvalidTaskType):
        builder(None).set_type(wrong)


@pytest.mark.parametrize(
    ("builder", "right"),
    [
        (KafkaListenerTaskTemplateBuilder, AListener),
        (KafkaCommandTaskTemplateBuilder, ACommand),
        (DefaultTaskTemplateBuilder, Noop),
        (TriggerTaskTemplateBuilder, ATrigger),
        (TriggerTaskTemplateBuilder, AnInterval),
        (IntervalTaskTemplateBuilder, AnInterval),
        (DecisionTaskTemplateBuilder, ADecision),
    ],
)
def test_builders_accept_task_types_that_fit(builder: type, right: type) -> None:
    """§10.53 counterpart: the fitting types are accepted (the checks are not blanket)."""
    assert builder(None).set_type(right) is not None


def test_helper_and_process_builders_reject_wrong_types(engine: Dagger) -> None:
    """§10.53: the helper's listener/command builders check the type too; a monitored
    process whose monitoring type is not a MonitoringTask is refused at build; builders
    refuse settings that do not apply to them."""
    helper = DAGBuilderHelper(engine)
    with pytest.raises(InvalidTaskType):
        helper.generic_listener_task_builder(topic="t", task_type=Noop, process_name="P")
    with pytest.raises(InvalidTaskType):
        helper.generic_command_task_builder(topic="t", task_type=AListener, process_name="P")
    with pytest.raises(InvalidTaskType):
        helper.generic_executor_task_builder(task_type=AListener, name="x")
    with pytest.raises(InvalidTaskType):
        helper.generic_decision_task_builder(task_type=Noop, name="d")
    with pytest.raises(InvalidTaskType):
        helper.generic_trigger_task_builder(task_type=Noop, name="t", time_to_execute_key="when")
    root = helper.build_and_link_tasks([helper.generic_executor_task_builder(task_type=Noop, name="x")])
    with pytest.raises(InvalidTaskType):
        ProcessTemplateDagBuilder(engine).set_name("P").set_root_task(root).set_type(
            NotAMonitorProcess
        ).build()
    ProcessTemplateDagBuilder(engine).set_name("P").set_root_task(root).set_type(GoodMonitorProcess).build()
    with pytest.raises(InvalidTaskType):
        DefaultTaskTemplateBuilder(engine).build()  # no type at all
    with pytest.raises(InvalidTaskType):
        KafkaCommandTaskTemplateBuilder(engine).set_type(ACommand).build()  # no topic
    with pytest.raises(InvalidTaskType):
        ProcessTemplateDagBuilder(engine).set_name("P").build()  # no root task
    with pytest.raises(NotImplementedError):
        DynamicProcessTemplateDagBuilder(engine).set_root_task(root)
    with pytest.raises(NotImplementedError):
        ParallelCompositeProcessTemplateDagBuilder(engine).set_root_task(root)


# §10.54 -----------------------------------------------------------------------------------------


class SharedOrderListener(KafkaListenerTask[str, str]):
    """README style: reads its key straight from the payload."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        data = json.loads(payload)
        return [(self.correlatable_key, data[self.correlatable_key])] if self.correlatable_key in data else []

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters["by"] = type(self).__name__
        return True


class SharedBoxListener(SharedOrderListener):
    correlatable_key = "box_id"


class SharedOrderListenerToo(SharedOrderListener):
    pass


def _listener_consumers(engine: Dagger) -> list[str]:
    return sorted(k for k in engine.runtime.consumers if k.startswith("listener:"))


async def test_one_consumer_per_listener_topic(make_engine: Any) -> None:
    """§10.54: one consumer per listener topic, however many listener tasks, listener
    types and templates use it, registered before or after the start; that consumer
    serves all of them."""
    engine = make_engine()
    first = _listener_template(engine, "SharedA", "shared_topic", SharedOrderListener)
    second = _listener_template(engine, "SharedB", "shared_topic", SharedBoxListener)
    await engine.start()
    try:
        assert _listener_consumers(engine) == ["listener:shared_topic"]
        consumer = engine.runtime.consumers["listener:shared_topic"]
        third = _listener_template(engine, "SharedC", "shared_topic", SharedOrderListenerToo)
        helper = DAGBuilderHelper(engine)
        two_listeners = helper.generic_process_builder(
            process_name="TWO",
            root_task=helper.build_and_link_tasks(
                [
                    helper.generic_listener_task_builder(
                        topic="shared_topic", task_type=SharedOrderListener, process_name="FIRST"
                    ),
                    helper.generic_listener_task_builder(
                        topic="shared_topic", task_type=SharedBoxListener, process_name="SECOND"
                    ),
                ]
            ),
        )
        fourth = helper.generic_template(
            template_name="SharedD", root_process=helper.build_and_link_processes([two_listeners])
        )
        engine.add_template("SharedD", fourth)
        _listener_template(engine, "Elsewhere", "other_topic", SharedOrderListener)
        assert _listener_consumers(engine) == ["listener:other_topic", "listener:shared_topic"]
        assert engine.runtime.consumers["listener:shared_topic"] is consumer

        await first.create_instance("a", submit_task=True, order_id="O-1")
        await second.create_instance("b", submit_task=True, box_id="B-1")
        await third.create_instance("c", submit_task=True, order_id="O-1")
        await fourth.create_instance("d", submit_task=True, order_id="O-1", box_id="B-1")
        await engine.topics["shared_topic"].send(value={"order_id": "O-1"})
        for iid in ("a", "c"):
            assert (await engine.wait_for(iid, timeout=5)).status.code == "COMPLETED"
        await engine.wait_for("d", lambda i: node(i, "SECOND_listener_task").status == "EXECUTING", 5)
        assert state(engine, "b").status == "EXECUTING"
        await engine.topics["shared_topic"].send(value={"box_id": "B-1"})
        for iid in ("b", "d"):
            assert (await engine.wait_for(iid, timeout=5)).status.code == "COMPLETED"
        assert state(engine, "a").runtime_parameters["by"] == "SharedOrderListener"
        assert state(engine, "b").runtime_parameters["by"] == "SharedBoxListener"
        assert state(engine, "c").runtime_parameters["by"] == "SharedOrderListenerToo"
    finally:
        await engine.stop()


async def test_latest_offset_reset_consumes_messages_sent_after_start(make_engine: Any) -> None:
    """§10.54 consumers with ``consumer_auto_offset_reset="latest"`` (Dagger's README
    setting): what was on the topics before the first start is skipped; every message
    appended once ``start()`` has returned is consumed, by agents and listeners alike."""
    seed = make_engine("latest")
    await seed.start()
    await seed.topics["latest_in"].send(value="before start")
    await seed.topics["latest_orders"].send(value={"order_id": "L-0"})
    await seed.stop()

    engine = make_engine("latest", consumer_auto_offset_reset="latest", unmatched_message_ttl=60)
    template = _listener_template(engine, "Latest", "latest_orders", SharedOrderListener)
    got: list[str] = []
    done = asyncio.Event()

    @engine.agent("latest_in")
    async def handler(value: Any) -> None:
        got.append(value)
        if value == "second":
            done.set()

    await engine.start()
    try:
        # No await between start() and the sends: the consumers have not run yet.
        await engine.topics["latest_in"].send(value="first")
        await engine.topics["latest_in"].send(value="second")
        await engine.topics["latest_orders"].send(value={"order_id": "L-1"})
        await asyncio.wait_for(done.wait(), 5)
        assert got == ["first", "second"]
        # The listener consumer read L-1 (buffered: no waiter yet), not the older L-0.
        await template.create_instance("old", submit_task=True, order_id="L-0")
        await template.create_instance("late", submit_task=True, order_id="L-1")
        assert (await engine.wait_for("late", timeout=5)).status.code == "COMPLETED"
        assert state(engine, "late").runtime_parameters["by"] == "SharedOrderListener"
        assert state(engine, "old").status == "EXECUTING"
    finally:
        await engine.stop()


class StrictOrderListener(KafkaListenerTask[str, str]):
    """Exactly the README's mapping: ``json.loads(payload)[self.correlatable_key]``, which
    raises KeyError on a payload meant for another listener type of the same topic."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)[self.correlatable_key])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


class StrictBoxListener(StrictOrderListener):
    correlatable_key = "box_id"


async def test_listener_types_sharing_a_topic_do_not_break_each_other(engine: Dagger) -> None:
    """§10.54: the shared consumer maps each message with every listener type of the topic;
    a type whose mapping raises on a payload meant for another type does not keep that
    payload from the workflows it is meant for. A payload that no type can map still goes
    to the dead-letter topic."""
    orders = _listener_template(engine, "StrictOrders", "strict_topic", StrictOrderListener)
    boxes = _listener_template(engine, "StrictBoxes", "strict_topic", StrictBoxListener)
    await orders.create_instance("o", submit_task=True, order_id="O-5")
    await boxes.create_instance("b", submit_task=True, box_id="B-5")
    await engine.topics["strict_topic"].send(value={"order_id": "O-5"})
    assert (await engine.wait_for("o", timeout=5)).status.code == "COMPLETED"
    await engine.topics["strict_topic"].send(value={"box_id": "B-5"})
    assert (await engine.wait_for("b", timeout=5)).status.code == "COMPLETED"
    assert engine.read_topic(engine.dead_letter_topic, 0, 10) == []

    await boxes.create_instance("b2", submit_task=True, box_id="B-6")
    await engine.topics["strict_topic"].send(value={"neither": 1})
    await engine.topics["strict_topic"].send(value={"box_id": "B-6"})
    assert (await engine.wait_for("b2", timeout=5)).status.code == "COMPLETED"
    dead = engine.read_topic(engine.dead_letter_topic, 0, 10)
    assert len(dead) == 1
    record = json.loads(dead[0].value)
    assert record["topic"] == "strict_topic" and json.loads(record["value"]) == {"neither": 1}
    assert "KeyError" in record["error"]


async def test_dead_letters_go_to_the_configured_topic(make_engine: Any) -> None:
    """``dead_letter_topic`` names where unmappable payloads go; the default topic stays empty."""
    engine = make_engine(dead_letter_topic="my-letters")
    boxes = _listener_template(engine, "LetterBoxes", "letter_topic", StrictBoxListener)
    async with engine:
        assert engine.dead_letter_topic == "my-letters"
        await boxes.create_instance("lb", submit_task=True, box_id="B-7")
        await engine.topics["letter_topic"].send(value={"neither": 1})
        await engine.topics["letter_topic"].send(value={"box_id": "B-7"})
        assert (await engine.wait_for("lb", timeout=5)).status.code == "COMPLETED"
        dead = engine.read_topic("my-letters", 0, 10)
        assert [json.loads(json.loads(r.value)["value"]) for r in dead] == [{"neither": 1}]
        assert engine.read_topic("daggerflow-dead-letter", 0, 10) == []
