"""Behaviour tests for Dagger inventory §10, items 1-28, run through the real engine.

Each test starts a ``Dagger`` on a SQLite file (``tests/conftest.py``), defines small
workflows with the public API as Dagger users do (``DAGBuilderHelper``, the task base
classes, ``register_template``), delivers listener messages with
``engine.topics[topic].send(value=...)`` and waits on committed state with
``engine.wait_for``. Timers run on a ``ManualClock``.

"Nothing happened" assertions use a barrier, :func:`flush_topic`: a sentinel instance
waits on the same topic and a marker message is sent after the message under test. One
consumer reads a topic in order and the processor commits in order, so once the sentinel
has completed, the earlier message has been routed and its outcome committed: a wrongly
matched listener would show a new ``update_count`` (and a running ``on_message`` job).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    IntervalTask,
    InvalidTriggerTimeForTask,
    ITemplateDAG,
    KafkaCommandTask,
    KafkaListenerTask,
    ManualClock,
    TaskInvalidState,
    TaskLookupKey,
    TaskOperator,
    TemplateDoesNotExist,
    TriggerTask,
)
from daggerflow.machine.events import Create, JobDone
from daggerflow.machine.transitions import Context, apply
from daggerflow.model.instance import Correlation, Instance, Node, copy_instance
from daggerflow.model.template import instantiate
from daggerflow.testing import WorkflowEnvironment

T = 5.0  # timeout of every wait; the tests themselves take milliseconds

# What user code saw, for "ran exactly once" assertions: (instance id, task) -> calls.
EXECUTE_CALLS: Counter[tuple[str, str]] = Counter()
# (order id, listener task) -> on_message calls.
ON_MESSAGE_CALLS: Counter[tuple[str, str]] = Counter()


def short(task_name: str) -> str:
    return task_name.rsplit(".", 1)[-1]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# Task types --------------------------------------------------------------------------------


class Recorder(ExecutorTask[str, str]):
    """Appends its task name to ``runtime_parameters["trace"]`` and counts its calls."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        EXECUTE_CALLS[(workflow_instance.id, short(self.task_name))] += 1
        runtime_parameters.setdefault("trace", []).append(short(self.task_name))


class EtaReader(ExecutorTask[str, str]):
    """Copies what an earlier listener stored, to show later tasks read it."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["eta_seen_by_executor"] = runtime_parameters.get("eta")


class BoxSetter(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["box_id"] = runtime_parameters["new_box_id"]


# Instance id -> future a SlowWriter waits on before it writes (resolved by the test).
RELEASE: dict[str, asyncio.Future[None]] = {}


class SlowWriter(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        await RELEASE[workflow_instance.id]
        runtime_parameters["slow"] = "written"


class QuickWriter(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["quick"] = "written"


class OrderListener(KafkaListenerTask[str, str]):
    """Correlates on ``order_id``. The JSON payload carries ``order_id`` (or a list in
    ``order_ids``), optionally ``key_name`` (the key name of the pairs), ``status``
    (``on_message`` returns ``status == "READY"``, default READY) and ``set`` (runtime
    parameters to update, as a payment listener fills in a box id)."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        data = json.loads(payload)
        key_name = data.get("key_name", self.correlatable_key)
        values = data["order_ids"] if "order_ids" in data else [data.get(key_name)]
        return [(key_name, value) for value in values]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        data = json.loads(args[0])
        name = short(self.task_name)
        ON_MESSAGE_CALLS[(str(runtime_parameters.get("order_id")), name)] += 1
        calls = runtime_parameters.setdefault("calls", {})
        calls[name] = calls.get(name, 0) + 1
        status = data.get("status", "READY")
        runtime_parameters.setdefault("statuses", []).append(status)
        runtime_parameters.update(data.get("set", {}))
        return bool(status == "READY")


class BoxListener(OrderListener):
    correlatable_key = "box_id"


class FirstComerListener(OrderListener):
    match_only_one = True


class DedupedOrderListener(OrderListener):
    """Names each message by its ``msg_id`` (dedupe); a message without one (a barrier's
    marker) has no id."""

    def get_message_id(self, payload: Any) -> str | None:
        msg_id = json.loads(payload).get("msg_id")
        return None if msg_id is None else str(msg_id)


class RunAt(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        EXECUTE_CALLS[(workflow_instance.id, short(self.task_name))] += 1
        runtime_parameters.setdefault("trace", []).append(short(self.task_name))


class Poller(IntervalTask[str, str]):
    """Ready on the ``ready_after``-th poll."""

    async def interval_execute(self, runtime_parameters: dict[str, Any]) -> bool:
        runtime_parameters["polls"] = runtime_parameters.get("polls", 0) + 1
        return bool(runtime_parameters["polls"] >= runtime_parameters["ready_after"])

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["executed"] = runtime_parameters.get("executed", 0) + 1


# The README's pizza workflow -------------------------------------------------------------


def build_pizza(workflow_engine: Dagger) -> None:
    """Dagger's README example, nearly verbatim, bound to ``workflow_engine``. The delivery
    service's HTTP POST becomes a message on ``delivery_requests`` so the test can see it."""

    class OrderCommandTask(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            payload = {
                "order_id": runtime_parameters["order_id"],
                "customer_id": runtime_parameters["customer_id"],
                "pizza_type": runtime_parameters["pizza_type"],
            }
            await workflow_engine.topics[self.topic].send(value=json.dumps(payload))

    class PizzaWaitForReadyListener(KafkaListenerTask[str, str]):
        correlatable_key = "order_id"

        async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
            tpayload = json.loads(payload)
            key = tpayload[self.correlatable_key]
            return [(self.correlatable_key, key)]

        async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
            logging.getLogger(__name__).info("Pizza Order is Ready")
            return True

    class DeliveryCommandTask(ExecutorTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            payload = {
                "order_id": runtime_parameters["order_id"],
                "customer_id": runtime_parameters["customer_id"],
            }
            await workflow_engine.topics["delivery_requests"].send(value=json.dumps(payload))

    def pizza_ordering_process(process_name: str = "Order") -> Any:
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

    def pizza_delivery_process(process_name: str = "Delivery") -> Any:
        dag_builder = DAGBuilderHelper(dagger_app=workflow_engine)
        root_task = dag_builder.build_and_link_tasks(
            [dag_builder.generic_executor_task_builder(task_type=DeliveryCommandTask, name=process_name)]
        )
        return dag_builder.generic_process_builder(process_name=process_name, root_task=root_task)

    @Dagger.register_template("PizzaWorkflow")
    def register_pizza_workflow(template_name: str) -> ITemplateDAG:
        dag_builder_helper = DAGBuilderHelper(workflow_engine)
        order_process = dag_builder_helper.build_and_link_processes(
            [
                pizza_ordering_process(process_name="Order"),
                pizza_delivery_process(process_name="Delivery"),
            ]
        )
        return dag_builder_helper.generic_template(template_name=template_name, root_process=order_process)


PIZZA_LISTENER = "Order_listener_task"


def pizza_ready(order_id: str) -> str:
    return json.dumps({"order_id": order_id, "status": "READY"})


# Helpers -------------------------------------------------------------------------------


def node(inst: Instance, name: str) -> Node:
    """The node whose name is ``name`` or ends with ``"." + name``."""
    found = [n for n in inst.nodes.values() if n.name == name or n.name.endswith("." + name)]
    assert len(found) == 1, f"{name!r} matches {[n.name for n in found]}"
    return found[0]


def status_of(inst: Instance, name: str) -> str:
    return node(inst, name).status


def waiting(name: str) -> Callable[[Instance], bool]:
    """The listener ``name`` is EXECUTING with no on_message call in flight."""

    def check(inst: Instance) -> bool:
        n = node(inst, name)
        return n.status == "EXECUTING" and n.job is None

    return check


def has_status(name: str, status: str) -> Callable[[Instance], bool]:
    return lambda inst: node(inst, name).status == status


def committed(engine: Dagger, iid: str) -> Instance:
    inst = engine.committed(iid)
    assert inst is not None
    return inst


def snap(engine: Dagger, iid: str) -> Instance:
    """A private copy of the committed instance, for before/after comparisons (the object
    ``engine.committed`` returns is the processor's cached one and moves on with it)."""
    return copy_instance(committed(engine, iid))


def stored(engine: Dagger, iid: str) -> Instance:
    """The instance as read back from the SQLite database (not the processor's cache)."""
    found = [i for i in engine.list_instances(limit=10_000) if i.id == iid]
    assert len(found) == 1
    return found[0]


def executor(h: DAGBuilderHelper, name: str, task_type: type = Recorder) -> Any:
    return h.generic_executor_task_builder(task_type=task_type, name=name)


def listener(
    h: DAGBuilderHelper, topic: str, name: str, task_type: type = OrderListener, **options: Any
) -> Any:
    return h.generic_listener_task_builder(topic=topic, task_type=task_type, process_name=name, **options)


def register(engine: Dagger, template_name: str, *processes: tuple[str, list[Any]]) -> ITemplateDAG:
    """Register a chain of processes, each a chain of task builders (or built templates)."""
    h = DAGBuilderHelper(engine)

    @engine.register_template(template_name)
    def _template(name: str) -> ITemplateDAG:
        linked = h.build_and_link_processes(
            [
                h.generic_process_builder(process_name=p, root_task=h.build_and_link_tasks(tasks))
                for p, tasks in processes
            ]
        )
        return h.generic_template(template_name=name, root_process=linked)

    return engine.template_dags[template_name]


async def send(engine: Dagger, topic: str, **payload: Any) -> None:
    await engine.topics[topic].send(value=json.dumps(payload))


async def flush_topic(engine: Dagger, topic: str) -> None:
    """Barrier: return once every message sent to ``topic`` so far has been processed."""
    name = f"Sentinel_{topic}"
    if name not in engine.template_dags:
        h = DAGBuilderHelper(engine)
        register(engine, name, ("S", [listener(h, topic, "S")]))
    sid = uid("sentinel")
    await engine.template_dags[name].create_instance(sid, submit_task=True, order_id=sid)
    await engine.wait_for(sid, waiting("S_listener_task"), timeout=T)
    await send(engine, topic, order_id=sid)
    done = await engine.wait_for(sid, timeout=T)
    assert done.status.code == "COMPLETED"


@pytest.fixture
async def manual(make_engine: Callable[..., Dagger], clock: ManualClock) -> AsyncIterator[Dagger]:
    """A started engine on the ``clock`` fixture (a ManualClock)."""
    e = make_engine(clock=clock)
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


# §10.1-10.7: templates, creation, submission --------------------------------------------


async def test_registered_template_is_retrievable_by_name_and_unknown_name_raises(engine: Dagger) -> None:
    """§10.1: a template registered under a name (here with ``@Dagger.register_template``, as
    in Dagger's README, and with ``@engine.register_template``) is retrievable by that
    name; an unknown name raises TemplateDoesNotExist."""
    h = DAGBuilderHelper(engine)

    @Dagger.register_template("Simple")
    def simple(template_name: str) -> ITemplateDAG:
        return h.generic_template(
            template_name=template_name,
            root_process=h.generic_process_builder(process_name="P", root_task=executor(h, "A")),
        )

    other = register(engine, "Other", ("P", [executor(h, "B")]))

    template = engine.template_dags["Simple"]
    assert engine.get_template("Simple") is template
    assert template.name == "Simple"
    assert engine.get_template("Other") is other and other.name == "Other"
    with pytest.raises(TemplateDoesNotExist, match="Missing"):
        engine.get_template("Missing")

    # The retrieved definition is the one registered: its instance runs task A.
    iid = uid("simple")
    await template.create_instance(iid, submit_task=True)
    done = await engine.wait_for(iid, timeout=T)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters["trace"] == ["A_executor_task"]


async def test_create_materialises_whole_graph_not_started_with_dagger_names(engine: Dagger) -> None:
    """§10.2: creating an instance materialises workflow -> processes -> tasks up front,
    every node NOT_STARTED, named ``"<workflow>.<process>.<task>"``."""
    build_pizza(engine)
    template = engine.template_dags["PizzaWorkflow"]
    iid = uid("pizza")
    created = await template.create_instance(iid, order_id=iid, customer_id="c", pizza_type=1)

    inst = committed(engine, iid)
    by_name = {n.name: n for n in inst.nodes.values()}
    assert set(by_name) == {
        "PizzaWorkflow",
        "PizzaWorkflow.Order",
        "PizzaWorkflow.Order.Order_command_task",
        "PizzaWorkflow.Order.Order_listener_task",
        "PizzaWorkflow.Delivery",
        "PizzaWorkflow.Delivery.Delivery_executor_task",
    }
    assert {n.status for n in inst.nodes.values()} == {"NOT_STARTED"}
    root, order, delivery = (
        by_name["PizzaWorkflow"],
        by_name["PizzaWorkflow.Order"],
        by_name["PizzaWorkflow.Delivery"],
    )
    assert root.id == iid and root.children == (order.id,) and order.next == (delivery.id,)
    assert order.parent == root.id and delivery.parent == root.id
    command = by_name["PizzaWorkflow.Order.Order_command_task"]
    assert command.parent == order.id and order.children == (command.id,)
    assert command.next == (by_name["PizzaWorkflow.Order.Order_listener_task"].id,)
    assert by_name["PizzaWorkflow.Delivery.Delivery_executor_task"].parent == delivery.id

    # The Dagger-style view shows the same tree with Dagger's task types.
    assert created.status.code == "NOT_STARTED" and created.task_type == "ROOT"
    types = {t.task_name: t.task_type for t in created.tasks.values()}
    assert types["PizzaWorkflow.Order"] == "SUB_DAG"
    assert types["PizzaWorkflow.Order.Order_listener_task"] == "LEAF"
    assert all(t.status.code == "NOT_STARTED" for t in created.tasks.values())
    # It is in the database, not only in memory.
    assert stored(engine, iid).nodes.keys() == inst.nodes.keys()


async def test_same_seed_and_definition_give_identical_node_ids(
    engine: Dagger, make_engine: Callable[..., Dagger]
) -> None:
    """§10.3: the same deterministic seed and definition yield identical node ids; and
    re-creating an existing instance id is idempotent (the stored instance is returned
    unchanged, as Dagger's overwrite with identical ids would leave it)."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine, "Seeded", ("P", [executor(h, "A"), listener(h, "seed_topic", "L")]), ("Q", [executor(h, "B")])
    )

    def ids(inst: Instance) -> dict[str, str]:
        return {n.name: n.id for n in inst.nodes.values() if n.id != inst.id}

    await template.create_instance("x", seed=7, order_id="1")
    first = ids(committed(engine, "x"))
    await template.create_instance("y", seed=7, order_id="2")
    assert ids(committed(engine, "y")) == first
    await template.create_instance("z", seed=8, order_id="3")
    assert set(ids(committed(engine, "z")).values()).isdisjoint(first.values())

    # Another engine, another database, same seed: same ids.
    other = make_engine(name="other")
    register(
        other,
        "Seeded",
        ("P", [executor(DAGBuilderHelper(other), "A"), listener(DAGBuilderHelper(other), "seed_topic", "L")]),
        ("Q", [executor(DAGBuilderHelper(other), "B")]),
    )
    async with other:
        await other.template_dags["Seeded"].create_instance("x", seed=7, order_id="1")
        assert ids(committed(other, "x")) == first

    # Re-creating "x" (even with other parameters) returns the stored instance unchanged.
    before = snap(engine, "x")
    again = await template.create_instance("x", seed=7, order_id="changed")
    assert again.runtime_parameters == {"order_id": "1"}
    assert ids(committed(engine, "x")) == first
    assert committed(engine, "x").update_count == before.update_count


async def test_create_with_submit_runs_to_first_wait_point(engine: Dagger) -> None:
    """§10.4: create with submit runs the workflow to its first wait point. In daggerflow
    ``create_instance`` returns once the instance is durable and user code runs after the
    commit, so the wait point is awaited with ``wait_for``: then the root and the first
    process are EXECUTING, the completed command task is COMPLETED and its command was
    published once; the next process has not started."""
    build_pizza(engine)
    iid = uid("pizza")
    created = await engine.template_dags["PizzaWorkflow"].create_instance(
        iid, submit_task=True, order_id=iid, customer_id="c", pizza_type=2
    )
    assert created.status.code in ("SUBMITTED", "EXECUTING")
    assert stored(engine, iid).status in ("SUBMITTED", "EXECUTING")  # durable on return

    view = await engine.wait_for(iid, waiting(PIZZA_LISTENER), timeout=T)
    inst = committed(engine, iid)
    assert view.status.code == "EXECUTING"
    assert status_of(inst, "PizzaWorkflow.Order") == "EXECUTING"
    assert status_of(inst, "Order_command_task") == "COMPLETED"
    assert status_of(inst, PIZZA_LISTENER) == "EXECUTING"
    assert status_of(inst, "PizzaWorkflow.Delivery") == "NOT_STARTED"
    assert status_of(inst, "Delivery_executor_task") == "NOT_STARTED"
    commands = engine.read_topic("pizza_order_topic", 0, 10)
    assert [json.loads(m.value) for m in commands] == [{"order_id": iid, "customer_id": "c", "pizza_type": 2}]
    assert stored(engine, iid).nodes == inst.nodes


async def test_create_without_submit_persists_not_started_then_submit_starts(engine: Dagger) -> None:
    """§10.5: creating without submit persists a NOT_STARTED workflow and runs nothing; a
    later ``submit`` (README: ``submit(instance, repartition=False)``) starts it."""
    build_pizza(engine)
    iid = uid("pizza")
    instance = await engine.template_dags["PizzaWorkflow"].create_instance(
        iid, repartition=False, order_id=iid, customer_id="c", pizza_type=1
    )
    inst = stored(engine, iid)
    assert inst.status == "NOT_STARTED"
    assert all(n.status == "NOT_STARTED" and n.job is None for n in inst.nodes.values())
    assert (await engine.get_instance(iid)).status.code == "NOT_STARTED"  # type: ignore[union-attr]

    await engine.submit(instance, repartition=False)
    await engine.wait_for(iid, waiting(PIZZA_LISTENER), timeout=T)
    assert status_of(committed(engine, iid), "Order_command_task") == "COMPLETED"
    assert len(engine.read_topic("pizza_order_topic", 0, 10)) == 1


async def test_submitting_a_completed_workflow_raises_invalid_state(engine: Dagger) -> None:
    """§10.6: submitting an already COMPLETED workflow raises TaskInvalidState and changes
    nothing."""
    build_pizza(engine)
    iid = uid("pizza")
    instance = await engine.template_dags["PizzaWorkflow"].create_instance(
        iid, submit_task=True, order_id=iid, customer_id="c", pizza_type=1
    )
    await engine.wait_for(iid, waiting(PIZZA_LISTENER), timeout=T)
    await engine.topics["PizzaWaitForReadyListener"].send(value=pizza_ready(iid))
    done = await engine.wait_for(iid, timeout=T)
    assert done.status.code == "COMPLETED"
    before = snap(engine, iid)

    with pytest.raises(TaskInvalidState, match="COMPLETED"):
        await engine.submit(instance)
    with pytest.raises(TaskInvalidState):
        await engine.submit(iid, repartition=False)
    after = committed(engine, iid)
    assert after.update_count == before.update_count and after.status == "COMPLETED"
    assert len(engine.read_topic("delivery_requests", 0, 10)) == 1


async def test_repartition_keys_by_partition_key_lookup_and_missing_key_raises(
    make_engine: Callable[..., Dagger],
) -> None:
    """§10.7: ``repartition=True`` routes by the runtime parameter named by
    ``partition_key_lookup``; a missing parameter is an error (TaskInvalidState) and
    nothing is stored. The embedded runtime has a single partition, so the instance runs
    here; the routing key is visible as the key of its snapshots on the update topic."""
    engine = make_engine(task_update_topic="wf_updates")
    h = DAGBuilderHelper(engine)
    template = register(engine, "Routed", ("P", [executor(h, "A"), listener(h, "routed_topic", "L")]))
    async with engine:
        with pytest.raises(TaskInvalidState, match="order_id"):
            await template.create_instance(
                "r1", partition_key_lookup="order_id", repartition=True, customer_id="c"
            )
        assert await engine.get_instance("r1") is None
        assert engine.count_instances() == 0

        inst = await template.create_instance(
            "r2", partition_key_lookup="order_id", repartition=True, order_id="o-77"
        )
        assert inst.partition_key_lookup == "order_id"
        await engine.submit(inst, repartition=True)
        await engine.wait_for("r2", waiting("L_listener_task"), timeout=T)
        updates = engine.read_topic("wf_updates", 0, 100)
        assert len(updates) >= 2
        assert {m.key for m in updates} == {"o-77"}
        assert json.loads(updates[-1].value)["id"] == "r2"


# §10.8-10.11: the walk ------------------------------------------------------------------


async def test_executor_runs_exactly_once_then_next_task_starts(engine: Dagger) -> None:
    """§10.8: an executor's ``execute(runtime_parameters, workflow)`` runs exactly once when
    reached, then the next task in the chain starts."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine, "Execs", ("P", [executor(h, "A"), executor(h, "B"), listener(h, "execs_topic", "L")])
    )
    iid = uid("execs")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    inst = committed(engine, iid)
    assert EXECUTE_CALLS[(iid, "A_executor_task")] == 1
    assert EXECUTE_CALLS[(iid, "B_executor_task")] == 1
    assert inst.runtime_parameters["trace"] == ["A_executor_task", "B_executor_task"]
    a, b = node(inst, "A_executor_task"), node(inst, "B_executor_task")
    assert a.status == b.status == "COMPLETED"
    assert a.time_completed <= b.time_submitted

    await send(engine, "execs_topic", order_id=iid)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    assert EXECUTE_CALLS[(iid, "A_executor_task")] == 1  # never re-run by later progress
    assert EXECUTE_CALLS[(iid, "B_executor_task")] == 1


async def test_chain_runs_in_order_and_next_process_starts_after_last_task(engine: Dagger) -> None:
    """§10.9: tasks of a chain run strictly in order; a process completes when its last
    task completes, and only then does the next process start."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Chain",
        ("P1", [executor(h, "T1"), executor(h, "T2"), listener(h, "chain_topic", "L")]),
        ("P2", [executor(h, "T3"), executor(h, "T4")]),
    )
    iid = uid("chain")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    inst = committed(engine, iid)
    assert inst.runtime_parameters["trace"] == ["T1_executor_task", "T2_executor_task"]
    assert status_of(inst, "Chain.P1") == "EXECUTING"
    assert status_of(inst, "Chain.P2") == "NOT_STARTED"
    assert status_of(inst, "T3_executor_task") == "NOT_STARTED"

    await send(engine, "chain_topic", order_id=iid)
    done = await engine.wait_for(iid, timeout=T)
    inst = committed(engine, iid)
    assert done.status.code == "COMPLETED"
    assert inst.runtime_parameters["trace"] == [
        "T1_executor_task",
        "T2_executor_task",
        "T3_executor_task",
        "T4_executor_task",
    ]
    assert status_of(inst, "Chain.P1") == status_of(inst, "Chain.P2") == "COMPLETED"
    assert node(inst, "Chain.P1").time_completed <= node(inst, "Chain.P2").time_submitted


async def test_root_completes_with_last_process_and_time_completed_is_set(
    manual: Dagger, clock: ManualClock
) -> None:
    """§10.10: the root becomes COMPLETED when its last process completes, with
    ``time_completed`` set to that moment (ManualClock: 42 s after creation)."""
    engine = manual
    build_pizza(engine)
    t0 = clock.now()
    iid = uid("pizza")
    await engine.template_dags["PizzaWorkflow"].create_instance(
        iid, submit_task=True, order_id=iid, customer_id="c", pizza_type=1
    )
    await engine.wait_for(iid, waiting(PIZZA_LISTENER), timeout=T)
    inst = committed(engine, iid)
    assert inst.root.time_completed == 0.0 and inst.status == "EXECUTING"
    assert status_of(inst, "PizzaWorkflow.Delivery") == "NOT_STARTED"

    clock.advance(42)
    await engine.topics["PizzaWaitForReadyListener"].send(value=pizza_ready(iid))
    done = await engine.wait_for(iid, timeout=T)
    inst = committed(engine, iid)
    assert done.status.code == "COMPLETED"
    assert done.time_completed == inst.root.time_completed == t0 + 42
    assert node(inst, "PizzaWorkflow.Delivery").time_completed == t0 + 42
    assert node(inst, "Order_command_task").time_completed == t0


def test_application_preset_root_time_completed_is_kept() -> None:
    """§10.10 (second half), on the pure state machine: daggerflow's tasks get snapshots,
    so no public API presets a node's ``time_completed``; the machine still keeps a
    non-zero preset on the root when the workflow completes, as Dagger's ``on_complete``
    did, while other nodes get the completion time."""
    h = DAGBuilderHelper()
    spec = h.generic_template(
        template_name="W",
        root_process=h.generic_process_builder(process_name="P", root_task=executor(h, "A")),
    ).spec
    inst = instantiate(spec, "i1", {}, now=100.0)
    tr = apply(None, Create(inst, submit=True), Context(now=100.0))
    assert tr.instance is not None
    job = next(e for e in tr.effects if type(e).__name__ == "RunJob")
    inst = tr.instance
    inst.root.time_completed = 5.0  # preset by the application
    tr = apply(inst, JobDone(job.node, job.seq, "execute"), Context(now=200.0))  # type: ignore[attr-defined]
    assert tr.instance is not None and tr.instance.status == "COMPLETED"
    assert tr.instance.root.time_completed == 5.0
    assert node(tr.instance, "W.P").time_completed == 200.0


async def test_listener_pauses_the_workflow_until_a_correlated_message(engine: Dagger) -> None:
    """§10.11: a listener reached by the walk becomes EXECUTING and the workflow waits
    there: an uncorrelated message changes nothing; the correlated one lets it go on."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Pause", ("P", [listener(h, "pause_topic", "L"), executor(h, "After")]))
    iid = uid("pause")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    before = snap(engine, iid)
    assert before.status == "EXECUTING" and status_of(before, "After_executor_task") == "NOT_STARTED"

    await send(engine, "pause_topic", order_id="someone-else")
    await flush_topic(engine, "pause_topic")
    after = committed(engine, iid)
    assert after.update_count == before.update_count
    assert status_of(after, "After_executor_task") == "NOT_STARTED"
    assert EXECUTE_CALLS[(iid, "After_executor_task")] == 0

    await send(engine, "pause_topic", order_id=iid)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    assert EXECUTE_CALLS[(iid, "After_executor_task")] == 1


# §10.12-10.20: correlation ---------------------------------------------------------------


async def test_message_is_routed_by_key_value_and_topic(engine: Dagger) -> None:
    """§10.12: the message is mapped to (key name, value) pairs by the listener type's
    ``get_correlatable_keys_from_payload``; a pair matches waiting listeners on that topic
    whose workflow's ``runtime_parameters[key]`` equals the value. The same value on
    another topic, or under another key name, does not match."""
    h = DAGBuilderHelper(engine)
    on_a = register(engine, "OnA", ("P", [listener(h, "route_a", "L")]))
    on_b = register(engine, "OnB", ("P", [listener(h, "route_b", "L")]))
    order = uid("o")
    first, second = uid("a"), uid("a")
    await on_a.create_instance(first, submit_task=True, order_id=order)
    await on_a.create_instance(second, submit_task=True, order_id=uid("o"))
    await on_b.create_instance("b", submit_task=True, order_id=order)
    for iid in (first, second, "b"):
        await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    counts = {iid: committed(engine, iid).update_count for iid in (first, second, "b")}

    await send(engine, "route_a", key_name="customer_id", order_id=order, customer_id=order)
    await send(engine, "route_b", order_id=order)
    assert (await engine.wait_for("b", timeout=T)).status.code == "COMPLETED"
    await flush_topic(engine, "route_a")
    assert committed(engine, first).update_count == counts[first]  # other topic / key name

    await send(engine, "route_a", order_id=order)
    assert (await engine.wait_for(first, timeout=T)).status.code == "COMPLETED"
    await flush_topic(engine, "route_a")
    assert committed(engine, second).update_count == counts[second]
    assert status_of(committed(engine, second), "L_listener_task") == "EXECUTING"


async def test_one_message_completes_every_instance_waiting_on_its_value(engine: Dagger) -> None:
    """§10.13: a message whose correlation value matches two waiting instances completes
    both (``on_message`` returns True)."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Twins", ("P", [listener(h, "twins_topic", "L"), executor(h, "After")]))
    order = uid("o")
    await template.create_instance("t1", submit_task=True, order_id=order)
    await template.create_instance("t2", submit_task=True, order_id=order)
    for iid in ("t1", "t2"):
        await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    await send(engine, "twins_topic", order_id=order)
    for iid in ("t1", "t2"):
        assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
        assert EXECUTE_CALLS[(iid, "After_executor_task")] == 1


async def test_one_message_with_a_list_of_keys_completes_many_workflows(engine: Dagger) -> None:
    """§10.14 (and §10.12): a message carrying a list of keys maps to several pairs and
    completes every workflow matching any of them; a workflow not in the list waits on."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Many", ("P", [listener(h, "many_topic", "L")]))
    orders = {iid: uid("o") for iid in ("m1", "m2", "m3", "m4")}
    for iid, order in orders.items():
        await template.create_instance(iid, submit_task=True, order_id=order)
    for iid in orders:
        await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    left_out = committed(engine, "m4").update_count

    await send(engine, "many_topic", order_ids=[orders["m1"], orders["m2"], orders["m3"], "nobody"])
    for iid in ("m1", "m2", "m3"):
        assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    await flush_topic(engine, "many_topic")
    assert committed(engine, "m4").update_count == left_out
    assert status_of(committed(engine, "m4"), "L_listener_task") == "EXECUTING"


async def test_on_message_false_keeps_listener_waiting_for_more_messages(engine: Dagger) -> None:
    """§10.15: ``on_message`` returning False leaves the listener EXECUTING, and it keeps
    receiving messages until one returns True."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Cooking", ("P", [listener(h, "cook_topic", "L"), executor(h, "After")]))
    iid = uid("cook")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)

    await send(engine, "cook_topic", order_id=iid, status="COOKING")
    await engine.wait_for(iid, lambda i: i.runtime_parameters.get("statuses") == ["COOKING"], timeout=T)
    await send(engine, "cook_topic", order_id=iid, status="BAKING")
    await engine.wait_for(iid, lambda i: len(i.runtime_parameters.get("statuses", [])) == 2, timeout=T)
    inst = committed(engine, iid)
    assert status_of(inst, "L_listener_task") == "EXECUTING"
    assert status_of(inst, "After_executor_task") == "NOT_STARTED"

    await send(engine, "cook_topic", order_id=iid, status="READY")
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    inst = committed(engine, iid)
    assert inst.runtime_parameters["statuses"] == ["COOKING", "BAKING", "READY"]
    assert inst.runtime_parameters["calls"] == {"L_listener_task": 3}


async def test_on_message_changes_to_runtime_parameters_are_persisted(engine: Dagger) -> None:
    """§10.16: ``on_message`` may change ``runtime_parameters``; the change is stored with
    the workflow (read back from the database) and later tasks see it."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Mutate",
        ("P", [listener(h, "mutate_topic", "L"), executor(h, "Read", EtaReader)]),
        ("Q", [listener(h, "mutate_hold", "Hold")]),
    )
    iid = uid("mut")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)

    await send(engine, "mutate_topic", order_id=iid, set={"eta": 30, "driver": "Ann"})
    await engine.wait_for(iid, waiting("Hold_listener_task"), timeout=T)
    params = stored(engine, iid).runtime_parameters
    assert params["eta"] == 30 and params["driver"] == "Ann" and params["order_id"] == iid
    assert params["eta_seen_by_executor"] == 30
    view = await engine.get_instance(iid)
    assert view is not None and view.runtime_parameters["driver"] == "Ann"


async def test_runtime_parameters_read_by_a_caller_are_a_snapshot(engine: Dagger) -> None:
    """§10.16 (only tasks change a workflow's runtime parameters): changing the parameters
    of an instance returned by ``get_instance``/``wait_for`` changes neither the engine's
    committed state nor what the next task sees."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Snapshot", ("P", [listener(h, "snap_topic", "L"), executor(h, "After")]))
    iid = uid("snap")
    await template.create_instance(iid, submit_task=True, order_id=iid, trace=["created"])
    view = await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    view.runtime_parameters["trace"].append("caller")
    other = await engine.get_instance(iid)
    assert other is not None
    other.runtime_parameters["trace"].append("caller")
    assert committed(engine, iid).runtime_parameters["trace"] == ["created"]

    await send(engine, "snap_topic", order_id=iid)
    await engine.wait_for(iid, timeout=T)
    assert stored(engine, iid).runtime_parameters["trace"] == ["created", "After_executor_task"]


async def test_parameter_changes_of_parallel_tasks_are_all_persisted(engine: Dagger) -> None:
    """§10.16 (task changes to runtime parameters are persisted with the workflow): a
    change made by one branch of a parallel group is not lost when a sibling that
    started earlier finishes later with changes of its own."""
    h = DAGBuilderHelper(engine)
    both = h.generic_parallel_task_builder(
        name="both", tasks=[executor(h, "Slow", SlowWriter), executor(h, "Quick", QuickWriter)]
    )
    template = register(engine, "TwoWriters", ("P", [both]))
    iid = uid("writers")
    RELEASE[iid] = asyncio.get_running_loop().create_future()
    await template.create_instance(iid, submit_task=True)
    await engine.wait_for(iid, has_status("Quick_executor_task", "COMPLETED"), timeout=T)
    assert committed(engine, iid).runtime_parameters == {"quick": "written"}

    RELEASE.pop(iid).set_result(None)
    done = await engine.wait_for(iid, timeout=T)
    assert done.status.code == "COMPLETED"
    assert stored(engine, iid).runtime_parameters == {"quick": "written", "slow": "written"}


async def test_listener_is_rekeyed_when_on_message_sets_its_parameter(engine: Dagger) -> None:
    """§10.17: when an earlier listener's ``on_message`` sets the runtime parameter a later
    listener correlates on (a payment listener filling in the box id), the later listener
    is reachable under the new value. It was not indexed while the value was unknown."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Rekey",
        ("Payment", [listener(h, "payment_topic", "Payment")]),
        ("Fulfil", [listener(h, "box_topic", "Box", BoxListener)]),
    )
    iid = uid("rekey")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("Payment_listener_task"), timeout=T)
    box_node = node(committed(engine, iid), "Box_listener_task").id
    assert box_node not in committed(engine, iid).correlations

    box = uid("box")
    await send(engine, "payment_topic", order_id=iid, set={"box_id": box})
    inst = await engine.wait_for(iid, waiting("Box_listener_task"), timeout=T)
    assert inst.runtime_parameters["box_id"] == box
    assert committed(engine, iid).correlations[box_node] == Correlation("box_topic", "box_id", box)

    await send(engine, "box_topic", box_id=box)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"


async def test_after_rekeying_the_old_value_no_longer_matches(engine: Dagger) -> None:
    """§10.18 (fix): after re-keying by ``on_message``, a message carrying the old value does
    not match the listener any more (Dagger never removed the old index entry); the new
    value does. Both listeners wait side by side in a parallel group, so the box listener
    is indexed under the old value before the change."""
    h = DAGBuilderHelper(engine)
    both = h.generic_parallel_task_builder(
        name="both",
        tasks=[listener(h, "pay2_topic", "Payment"), listener(h, "box2_topic", "Box", BoxListener)],
    )
    template = register(engine, "Rekey2", ("P", [both]))
    iid = uid("rekey")
    old, new = uid("old"), uid("new")
    await template.create_instance(iid, submit_task=True, order_id=iid, box_id=old)
    await engine.wait_for(
        iid, lambda i: waiting("Payment_listener_task")(i) and waiting("Box_listener_task")(i), timeout=T
    )

    await send(engine, "pay2_topic", order_id=iid, set={"box_id": new})
    await engine.wait_for(iid, has_status("Payment_listener_task", "COMPLETED"), timeout=T)
    before = snap(engine, iid)

    await send(engine, "box2_topic", box_id=old)
    await flush_topic(engine, "box2_topic")
    after = committed(engine, iid)
    assert after.update_count == before.update_count
    assert waiting("Box_listener_task")(after)
    assert after.runtime_parameters["calls"] == {"Payment_listener_task": 1}

    await send(engine, "box2_topic", box_id=new)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"


async def test_after_rekeying_by_an_executor_the_old_value_no_longer_matches(engine: Dagger) -> None:
    """§10.18 (fix), daggerflow's wider rule: the index also follows a parameter changed by
    an executor (Dagger re-keyed only after ``on_message``)."""
    h = DAGBuilderHelper(engine)
    both = h.generic_parallel_task_builder(
        name="both", tasks=[listener(h, "box3_topic", "Box", BoxListener), executor(h, "SetBox", BoxSetter)]
    )
    template = register(engine, "Rekey3", ("P", [both]))
    iid = uid("rekey")
    old, new = uid("old"), uid("new")
    await template.create_instance(iid, submit_task=True, order_id=iid, box_id=old, new_box_id=new)
    await engine.wait_for(iid, has_status("SetBox_executor_task", "COMPLETED"), timeout=T)
    before = snap(engine, iid)
    assert before.runtime_parameters["box_id"] == new

    await send(engine, "box3_topic", box_id=old)
    await flush_topic(engine, "box3_topic")
    assert committed(engine, iid).update_count == before.update_count
    await send(engine, "box3_topic", box_id=new)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"


async def test_unmatched_message_is_ignored_and_empty_value_skipped(
    engine: Dagger, caplog: pytest.LogCaptureFixture
) -> None:
    """§10.19: a message with no matching waiting listener is ignored without error (no
    dead letter, the engine keeps going); a mapping with an empty value is skipped with a
    warning."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Lonely", ("P", [listener(h, "lonely_topic", "L")]))
    iid = uid("lonely")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    before = snap(engine, iid).update_count

    with caplog.at_level(logging.WARNING, logger="daggerflow"):
        await send(engine, "lonely_topic", order_id="nobody-waits-for-this")
        await send(engine, "lonely_topic", order_id="")
        await flush_topic(engine, "lonely_topic")
    assert committed(engine, iid).update_count == before
    assert any("empty correlation value" in r.getMessage() for r in caplog.records)
    assert engine.read_topic("daggerflow-dead-letter", 0, 10) == []

    await send(engine, "lonely_topic", order_id=iid)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    assert committed(engine, iid).runtime_parameters["calls"] == {"L_listener_task": 1}


async def test_match_only_one_completes_a_single_instance_per_message(engine: Dagger) -> None:
    """§10.20: with a listener type marked ``match_only_one``, a message completes only
    one of the instances waiting on its value; the next message completes the other."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "FirstComer", ("P", [listener(h, "first_topic", "L", FirstComerListener)]))
    order = uid("o")
    await template.create_instance("f1", submit_task=True, order_id=order)
    await template.create_instance("f2", submit_task=True, order_id=order)
    for iid in ("f1", "f2"):
        await engine.wait_for(iid, waiting("L_listener_task"), timeout=T)
    counts = {iid: committed(engine, iid).update_count for iid in ("f1", "f2")}

    await send(engine, "first_topic", order_id=order)
    await flush_topic(engine, "first_topic")
    touched = [iid for iid in ("f1", "f2") if committed(engine, iid).update_count != counts[iid]]
    assert len(touched) == 1
    (winner,) = touched
    (other,) = {"f1", "f2"} - {winner}
    assert (await engine.wait_for(winner, timeout=T)).status.code == "COMPLETED"
    assert waiting("L_listener_task")(committed(engine, other))

    await send(engine, "first_topic", order_id=order)
    assert (await engine.wait_for(other, timeout=T)).status.code == "COMPLETED"
    assert ON_MESSAGE_CALLS[(order, "L_listener_task")] == 2


async def test_match_only_one_holds_per_listener_not_per_topic(engine: Dagger) -> None:
    """§10.20: a normal listener sharing a topic with a ``match_only_one`` listener still gets
    every message that matches it: one message completes both normal waiters and one of the
    two first-come waiters; the second message completes the other first-come waiter."""
    h = DAGBuilderHelper(engine)
    normal = register(engine, "SharedNormal", ("P", [listener(h, "shared_topic", "N")]))
    first = register(engine, "SharedFirst", ("P", [listener(h, "shared_topic", "F", FirstComerListener)]))
    order = uid("o")
    for iid in ("n1", "n2"):
        await normal.create_instance(iid, submit_task=True, order_id=order)
        await engine.wait_for(iid, waiting("N_listener_task"), timeout=T)
    for iid in ("f1", "f2"):
        await first.create_instance(iid, submit_task=True, order_id=order)
        await engine.wait_for(iid, waiting("F_listener_task"), timeout=T)
    counts = {iid: committed(engine, iid).update_count for iid in ("f1", "f2")}

    await send(engine, "shared_topic", order_id=order)
    for iid in ("n1", "n2"):
        assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    await flush_topic(engine, "shared_topic")
    touched = [iid for iid in ("f1", "f2") if committed(engine, iid).update_count != counts[iid]]
    assert len(touched) == 1
    (other,) = {"f1", "f2"} - set(touched)
    assert waiting("F_listener_task")(committed(engine, other))

    await send(engine, "shared_topic", order_id=order)
    assert (await engine.wait_for(other, timeout=T)).status.code == "COMPLETED"
    assert ON_MESSAGE_CALLS[(order, "N_listener_task")] == 2
    assert ON_MESSAGE_CALLS[(order, "F_listener_task")] == 2


async def test_a_message_id_that_matched_nothing_is_not_remembered(engine: Dagger) -> None:
    """A message that no listener waited for (and that is not buffered) leaves no dedupe id:
    its producer's retry with the same id, once a listener waits, is delivered. A message
    that was delivered is remembered: its retry is ignored."""
    h = DAGBuilderHelper(engine)
    template = register(engine, "Retried", ("P", [listener(h, "retry_topic", "R", DedupedOrderListener)]))
    iid = uid("retried")
    await send(engine, "retry_topic", order_id=iid, msg_id="m1", status="EARLY")
    await flush_topic(engine, "retry_topic")

    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("R_listener_task"), timeout=T)
    await send(engine, "retry_topic", order_id=iid, msg_id="m1", status="RETRY")
    await engine.wait_for(iid, lambda i: "statuses" in i.runtime_parameters, timeout=T)
    await send(engine, "retry_topic", order_id=iid, msg_id="m1", status="DUPLICATE")
    await send(engine, "retry_topic", order_id=iid, msg_id="m2", status="READY")
    done = await engine.wait_for(iid, timeout=T)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters["statuses"] == ["RETRY", "READY"]


# §10.21-10.25: out-of-order, skipped, stopped, completed listeners ------------------------


async def test_message_for_not_started_allow_skip_to_listener_skips_earlier_tasks(engine: Dagger) -> None:
    """§10.21: a message for a NOT_STARTED listener with ``allow_skip_to`` completes it and
    marks every earlier unfinished node SKIPPED; their successors never run. The workflow
    then goes on from the listener."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Jump",
        ("P1", [executor(h, "A"), listener(h, "jump_wait", "L1"), executor(h, "C")]),
        ("P2", [listener(h, "jump_target", "L2", allow_skip_to=True), executor(h, "B")]),
    )
    iid = uid("jump")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L1_listener_task"), timeout=T)
    assert status_of(committed(engine, iid), "L2_listener_task") == "NOT_STARTED"

    await send(engine, "jump_target", order_id=iid)
    done = await engine.wait_for(iid, timeout=T)
    inst = committed(engine, iid)
    assert done.status.code == "COMPLETED"
    assert status_of(inst, "A_executor_task") == "COMPLETED"
    assert status_of(inst, "L1_listener_task") == "SKIPPED"
    assert status_of(inst, "C_executor_task") == "SKIPPED"
    assert status_of(inst, "Jump.P1") == "SKIPPED"
    assert status_of(inst, "L2_listener_task") == "COMPLETED"
    assert status_of(inst, "B_executor_task") == "COMPLETED"
    assert status_of(inst, "Jump.P2") == "COMPLETED"
    assert EXECUTE_CALLS[(iid, "C_executor_task")] == 0
    assert inst.runtime_parameters["trace"] == ["A_executor_task", "B_executor_task"]
    assert inst.runtime_parameters["calls"] == {"L2_listener_task": 1}


async def test_message_for_not_started_listener_without_allow_skip_to_is_ignored(engine: Dagger) -> None:
    """§10.22 (NOT_STARTED): without ``allow_skip_to`` a message for a listener the walk
    has not reached is ignored; the listener later waits for a message of its own."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "NoJump",
        ("P1", [listener(h, "nojump_wait", "L1")]),
        ("P2", [listener(h, "nojump_target", "L2")]),
    )
    iid = uid("nojump")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L1_listener_task"), timeout=T)
    before = snap(engine, iid).update_count

    await send(engine, "nojump_target", order_id=iid)
    await flush_topic(engine, "nojump_target")
    inst = committed(engine, iid)
    assert inst.update_count == before
    assert status_of(inst, "L1_listener_task") == "EXECUTING"
    assert status_of(inst, "L2_listener_task") == "NOT_STARTED"

    await send(engine, "nojump_wait", order_id=iid)
    await engine.wait_for(iid, waiting("L2_listener_task"), timeout=T)
    await send(engine, "nojump_target", order_id=iid)
    assert (await engine.wait_for(iid, timeout=T)).status.code == "COMPLETED"
    assert committed(engine, iid).runtime_parameters["calls"] == {
        "L1_listener_task": 1,
        "L2_listener_task": 1,
    }


async def test_message_for_stopped_listener_is_ignored(engine: Dagger) -> None:
    """§10.22 (STOPPED): a listener of a stopped workflow, and a listener STOPPED while its
    workflow goes on (the losing branch of an ATLEAST_ONE group), ignore later messages."""
    h = DAGBuilderHelper(engine)
    race = h.generic_parallel_task_builder(
        name="race",
        tasks=[listener(h, "race_a", "A"), listener(h, "race_b", "B")],
        operator=TaskOperator.ATLEAST_ONE,
    )
    template = register(engine, "Race", ("P", [race, listener(h, "race_after", "After")]))
    iid = uid("race")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(
        iid, lambda i: waiting("A_listener_task")(i) and waiting("B_listener_task")(i), timeout=T
    )

    await send(engine, "race_a", order_id=iid)
    await engine.wait_for(iid, waiting("After_listener_task"), timeout=T)
    inst = committed(engine, iid)
    assert status_of(inst, "B_listener_task") == "STOPPED"
    before = inst.update_count
    await send(engine, "race_b", order_id=iid)
    await flush_topic(engine, "race_b")
    inst = committed(engine, iid)
    assert inst.update_count == before and status_of(inst, "B_listener_task") == "STOPPED"

    # A stopped workflow: its waiting listener is STOPPED and stays so.
    view = await engine.get_instance(iid)
    assert view is not None
    await view.stop()
    stopped = snap(engine, iid)
    assert stopped.status == "STOPPED" and status_of(stopped, "After_listener_task") == "STOPPED"
    await send(engine, "race_after", order_id=iid)
    await flush_topic(engine, "race_after")
    assert committed(engine, iid).update_count == stopped.update_count
    assert committed(engine, iid).runtime_parameters["calls"] == {"A_listener_task": 1}


async def test_message_for_failed_or_timed_out_skipped_listener_is_ignored(
    manual: Dagger, clock: ManualClock
) -> None:
    """§10.22 (FAILURE and SKIPPED): listeners that timed out as FAILURE (with continue on
    failure) or as SKIPPED ignore later messages while the workflow goes on."""
    engine = manual
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Timeouts",
        (
            "P",
            [
                listener(h, "to_fail", "F").set_timeout(5, status="FAILURE").set_continue_on_failure(),
                listener(h, "to_skip", "S").set_timeout(5, status="SKIPPED"),
                listener(h, "to_hold", "Hold"),
            ],
        ),
    )
    iid = uid("timeouts")
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("F_listener_task"), timeout=T)
    clock.advance(5)
    await engine.wait_for(iid, waiting("S_listener_task"), timeout=T)
    clock.advance(5)
    await engine.wait_for(iid, waiting("Hold_listener_task"), timeout=T)
    inst = committed(engine, iid)
    assert status_of(inst, "F_listener_task") == "FAILURE"
    assert status_of(inst, "S_listener_task") == "SKIPPED"
    before = inst.update_count

    await send(engine, "to_fail", order_id=iid)
    await send(engine, "to_skip", order_id=iid)
    await flush_topic(engine, "to_fail")
    await flush_topic(engine, "to_skip")
    inst = committed(engine, iid)
    assert inst.update_count == before
    assert status_of(inst, "F_listener_task") == "FAILURE"
    assert status_of(inst, "S_listener_task") == "SKIPPED"
    assert "calls" not in inst.runtime_parameters


async def _jump_over_first_listener(engine: Dagger, template_name: str, first_allows_skip_to: bool) -> str:
    """P1: L1 -> P2: L2 (allow_skip_to) -> P3: Hold. A message for L2 skips L1."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        template_name,
        ("P1", [listener(h, f"{template_name}_l1", "L1", allow_skip_to=first_allows_skip_to)]),
        ("P2", [listener(h, f"{template_name}_l2", "L2", allow_skip_to=True)]),
        ("P3", [listener(h, f"{template_name}_hold", "Hold")]),
    )
    iid = uid(template_name)
    await template.create_instance(iid, submit_task=True, order_id=iid)
    await engine.wait_for(iid, waiting("L1_listener_task"), timeout=T)
    await send(engine, f"{template_name}_l2", order_id=iid)
    inst = await engine.wait_for(iid, waiting("Hold_listener_task"), timeout=T)
    assert inst.get_task(node(committed(engine, iid), "L1_listener_task").id).status.code == "SKIPPED"  # type: ignore[union-attr]
    return iid


async def test_message_for_plain_skipped_listener_is_ignored(engine: Dagger) -> None:
    """§10.22 (plain SKIPPED): a listener skipped by an out-of-order jump, without
    ``allow_skip_to`` of its own, ignores a later message."""
    iid = await _jump_over_first_listener(engine, "PlainSkip", first_allows_skip_to=False)
    before = snap(engine, iid).update_count
    await send(engine, "PlainSkip_l1", order_id=iid)
    await flush_topic(engine, "PlainSkip_l1")
    inst = committed(engine, iid)
    assert inst.update_count == before
    assert status_of(inst, "L1_listener_task") == "SKIPPED"
    assert inst.runtime_parameters["calls"] == {"L2_listener_task": 1}


async def test_message_for_skipped_listener_that_allows_skip_to_completes_it(engine: Dagger) -> None:
    """§10.23: a SKIPPED listener that allows skip-to still processes a later message and
    completes (its ``on_message`` runs); the rest of the workflow is unaffected."""
    iid = await _jump_over_first_listener(engine, "LateSkip", first_allows_skip_to=True)
    await send(engine, "LateSkip_l1", order_id=iid)
    inst = await engine.wait_for(iid, has_status("L1_listener_task", "COMPLETED"), timeout=T)
    raw = committed(engine, iid)
    assert inst.runtime_parameters["calls"] == {"L1_listener_task": 1, "L2_listener_task": 1}
    assert waiting("Hold_listener_task")(raw)
    assert status_of(raw, "LateSkip.P1") == "SKIPPED"
    assert raw.status == "EXECUTING"


async def test_repeated_message_for_completed_listener_does_not_rerun_on_message(engine: Dagger) -> None:
    """§10.24: a repeated message for a COMPLETED listener does not re-run ``on_message``
    and does not change the workflow."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Once",
        ("P1", [listener(h, "once_topic", "L1"), executor(h, "After")]),
        ("P2", [listener(h, "once_hold", "Hold")]),
    )
    order = uid("o")
    iid = uid("once")
    await template.create_instance(iid, submit_task=True, order_id=order)
    await engine.wait_for(iid, waiting("L1_listener_task"), timeout=T)
    await send(engine, "once_topic", order_id=order)
    await engine.wait_for(iid, waiting("Hold_listener_task"), timeout=T)
    before = snap(engine, iid)

    await send(engine, "once_topic", order_id=order, set={"tampered": True})
    await flush_topic(engine, "once_topic")
    after = committed(engine, iid)
    assert ON_MESSAGE_CALLS[(order, "L1_listener_task")] == 1
    assert after.update_count == before.update_count
    assert after.runtime_parameters == before.runtime_parameters
    assert "tampered" not in after.runtime_parameters
    assert EXECUTE_CALLS[(iid, "After_executor_task")] == 1


async def test_reprocess_on_message_reruns_on_message_and_persists_parameters(engine: Dagger) -> None:
    """§10.25: with ``reprocess_on_message`` a repeated message re-runs ``on_message`` on the
    completed listener and (fix) the changed runtime parameters are persisted; the
    listener stays COMPLETED and its successors are not re-run."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Again",
        ("P1", [listener(h, "again_topic", "L1", reprocess_on_message=True), executor(h, "After")]),
        ("P2", [listener(h, "again_hold", "Hold")]),
    )
    order = uid("o")
    iid = uid("again")
    await template.create_instance(iid, submit_task=True, order_id=order)
    await engine.wait_for(iid, waiting("L1_listener_task"), timeout=T)
    await send(engine, "again_topic", order_id=order, set={"eta": 10})
    await engine.wait_for(iid, waiting("Hold_listener_task"), timeout=T)

    await send(engine, "again_topic", order_id=order, set={"eta": 20})
    await engine.wait_for(iid, lambda i: i.runtime_parameters.get("eta") == 20, timeout=T)
    inst = stored(engine, iid)
    assert inst.runtime_parameters["eta"] == 20
    assert inst.runtime_parameters["calls"] == {"L1_listener_task": 2}
    assert ON_MESSAGE_CALLS[(order, "L1_listener_task")] == 2
    assert status_of(inst, "L1_listener_task") == "COMPLETED"
    assert EXECUTE_CALLS[(iid, "After_executor_task")] == 1
    assert waiting("Hold_listener_task")(inst)


# §10.26-10.28: triggers and intervals (ManualClock) ---------------------------------------


async def test_trigger_runs_at_once_if_due_else_on_first_tick_at_or_after_its_time(
    manual: Dagger, clock: ManualClock
) -> None:
    """§10.26: a trigger's time is read at creation from a named runtime parameter. If it
    is in the past the task runs as soon as it is reached; if in the future it stays
    EXECUTING and runs on the first tick at or after that time."""
    engine = manual
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "Timed",
        (
            "P",
            [
                h.generic_trigger_task_builder(task_type=RunAt, name="T", time_to_execute_key="run_at"),
                executor(h, "After"),
            ],
        ),
    )
    t0 = clock.now()
    await template.create_instance("past", submit_task=True, run_at=t0 - 10)
    assert (await engine.wait_for("past", timeout=T)).status.code == "COMPLETED"
    assert node(committed(engine, "past"), "T").time_completed == t0

    await template.create_instance("later", submit_task=True, run_at=t0 + 60)
    await template.create_instance("sooner", submit_task=True, run_at=t0 + 30)
    for iid in ("later", "sooner"):
        inst = await engine.wait_for(iid, has_status("T", "EXECUTING"), timeout=T)
        assert EXECUTE_CALLS[(iid, "T")] == 0
    assert node(committed(engine, "later"), "T").time_to_execute == t0 + 60

    clock.advance(30)
    assert (await engine.wait_for("sooner", timeout=T)).status.code == "COMPLETED"
    later = committed(engine, "later")
    assert status_of(later, "T") == "EXECUTING" and EXECUTE_CALLS[("later", "T")] == 0

    clock.advance(45)  # the first tick at or after t0 + 60
    inst = await engine.wait_for("later", timeout=T)
    assert inst.status.code == "COMPLETED"
    later = committed(engine, "later")
    assert node(later, "T").time_completed == t0 + 75
    assert later.runtime_parameters["trace"] == ["T", "After_executor_task"]
    assert EXECUTE_CALLS[("later", "T")] == 1


async def test_trigger_without_its_time_parameter_fails_at_creation(engine: Dagger) -> None:
    """§10.27: creating a trigger task whose time parameter is missing (or not a number)
    raises InvalidTriggerTimeForTask, and nothing is stored."""
    h = DAGBuilderHelper(engine)
    template = register(
        engine,
        "NoTime",
        ("P", [h.generic_trigger_task_builder(task_type=RunAt, name="T", time_to_execute_key="run_at")]),
    )
    with pytest.raises(InvalidTriggerTimeForTask, match="run_at"):
        await template.create_instance("nt1", submit_task=True, other=1)
    with pytest.raises(InvalidTriggerTimeForTask):
        await template.create_instance("nt2", submit_task=True, run_at="tomorrow")
    assert await engine.get_instance("nt1") is None
    assert await engine.get_instance("nt2") is None
    assert engine.count_instances() == 0


async def test_interval_task_polls_every_period_until_ready_then_executes_once(
    make_engine: Callable[..., Dagger],
) -> None:
    """§10.28: an interval task calls ``interval_execute`` when due; on False it is re-armed
    ``period`` seconds later; on True it runs ``execute`` once and completes. (In a
    WorkflowEnvironment: each ``sleep`` returns once what fell due has run.)"""
    async with WorkflowEnvironment(make_engine) as env:
        engine = env.engine
        h = DAGBuilderHelper(engine)
        poll = h.generic_interval_task_builder(
            task_type=Poller,
            name="Poll",
            time_to_force_complete_key="force_at",
            interval_execute_period_key="period",
        )
        register(engine, "Polling", ("P", [poll, executor(h, "After")]))
        t0 = env.now()
        await env.start_workflow("Polling", "poll", force_at=t0 + 1000, period=10, ready_after=3)

        raw = committed(engine, "poll")
        poll_id = node(raw, "Poll").id
        assert raw.runtime_parameters["polls"] == 1
        assert raw.timers == {f"{poll_id}:due": t0 + 10}  # re-armed one period later
        assert status_of(raw, "Poll") == "EXECUTING" and "executed" not in raw.runtime_parameters

        await env.sleep(10)
        raw = committed(engine, "poll")
        assert raw.runtime_parameters["polls"] == 2 and raw.timers == {f"{poll_id}:due": t0 + 20}
        assert "executed" not in raw.runtime_parameters

        await env.sleep(10)
        inst = await env.wait_for_status("poll", "COMPLETED")
        raw = committed(engine, "poll")
        assert inst.status.code == "COMPLETED"
        assert raw.runtime_parameters["polls"] == 3
        assert raw.runtime_parameters["executed"] == 1
        assert status_of(raw, "Poll") == "COMPLETED" and node(raw, "Poll").time_completed == t0 + 20
        assert raw.runtime_parameters["trace"] == ["After_executor_task"]
        assert raw.timers == {}


# The README's pizza workflow, end to end and across a restart -----------------------------


async def test_readme_pizza_workflow_completes_with_an_agent_answering_ready(engine: Dagger) -> None:
    """README pizza workflow: command -> listener -> executor over two processes. An agent
    plays the kitchen: it reads ``pizza_order_topic`` and answers READY on
    ``PizzaWaitForReadyListener``. The workflow completes and each command was sent once."""
    build_pizza(engine)

    @engine.agent("pizza_order_topic")
    async def kitchen(value: Any) -> None:
        order = json.loads(value)
        await engine.topics["PizzaWaitForReadyListener"].send(value=pizza_ready(order["order_id"]))

    pizza_workflow_template = engine.template_dags["PizzaWorkflow"]
    pizza_workflow_instance = await pizza_workflow_template.create_instance(
        uuid.uuid1(), repartition=False, order_id="order-1", customer_id="cust-9", pizza_type=1
    )
    await engine.submit(pizza_workflow_instance, repartition=False)

    done = await engine.wait_for(pizza_workflow_instance.id, timeout=T)
    assert done.status.code == "COMPLETED"
    assert {t.task_name: t.status.code for t in done.tasks.values()} == {
        "PizzaWorkflow.Order": "COMPLETED",
        "PizzaWorkflow.Order.Order_command_task": "COMPLETED",
        "PizzaWorkflow.Order.Order_listener_task": "COMPLETED",
        "PizzaWorkflow.Delivery": "COMPLETED",
        "PizzaWorkflow.Delivery.Delivery_executor_task": "COMPLETED",
    }
    orders = [json.loads(m.value) for m in engine.read_topic("pizza_order_topic", 0, 10)]
    assert orders == [{"order_id": "order-1", "customer_id": "cust-9", "pizza_type": 1}]
    answers = [json.loads(m.value) for m in engine.read_topic("PizzaWaitForReadyListener", 0, 10)]
    assert answers == [{"order_id": "order-1", "status": "READY"}]
    deliveries = [json.loads(m.value) for m in engine.read_topic("delivery_requests", 0, 10)]
    assert deliveries == [{"order_id": "order-1", "customer_id": "cust-9"}]


async def test_waiting_pizza_instance_survives_an_engine_restart(make_engine: Callable[..., Dagger]) -> None:
    """§10.55 style: an instance waiting at its listener survives stopping the engine; a
    new engine object with the same templates on the same SQLite file completes it when
    the message arrives, without re-sending the order command."""
    first = make_engine(name="pizza")
    build_pizza(first)
    async with first:
        iid = str(uuid.uuid1())
        await first.template_dags["PizzaWorkflow"].create_instance(
            iid, submit_task=True, order_id="order-2", customer_id="cust-1", pizza_type=3
        )
        await first.wait_for(iid, waiting(PIZZA_LISTENER), timeout=T)

    second = make_engine(name="pizza")
    build_pizza(second)
    async with second:
        view = await second.get_instance(iid)
        assert view is not None and view.status.code == "EXECUTING"
        assert waiting(PIZZA_LISTENER)(committed(second, iid))
        await second.topics["PizzaWaitForReadyListener"].send(value=pizza_ready("order-2"))
        done = await second.wait_for(iid, timeout=T)
        assert done.status.code == "COMPLETED"
        assert len(second.read_topic("pizza_order_topic", 0, 10)) == 1
        assert len(second.read_topic("delivery_requests", 0, 10)) == 1
