"""Dagger's integration scenario (inventory §8.2, §10.56) ported to the embedded runtime.

Dagger ran it against Kafka, Aerospike and a worker container (``integration_tests/
test_app.py`` + ``test_dagger.py``). Here the same application runs in one engine on a
SQLite file: the topics are the engine's embedded topics, the driver agents are
``@engine.agent`` handlers, the checks go through the REST API as Dagger's did, and a
ManualClock replaces the waits for the 5 s timer (interval, trigger, monitor).

The application (OrderWorkflow, four processes and three composites; SimpleProcess built
into a workflow on the fly) is kept as close to Dagger's as the API allows; the steps and
their assertions follow ``test_dagger.py`` in order, with these deliberate differences:

- the ATLEAST_ONE ``parallelTasks`` group ends its still-waiting listener child (STOPPED)
  when the first executor completes it; Dagger left it EXECUTING after completion;
- a message carrying the fulfillment listener's *old* correlation value no longer matches
  it after re-keying (§10.18; Dagger still matched it);
- the update topic carries plain JSON snapshots instead of jsonpickle.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from daggerflow import (
    COMPLETE_BY_KEY,
    Dagger,
    DecisionTask,
    DecisionTaskTemplateBuilder,
    DefaultMonitoringTask,
    DefaultProcessTemplateDAGInstance,
    DefaultTaskTemplateBuilder,
    DefaultTemplateBuilder,
    DefaultTemplateDAGInstance,
    DynamicProcessTemplateDagBuilder,
    ExecutorTask,
    IntervalTask,
    IntervalTaskTemplateBuilder,
    ITask,
    KafkaCommandTask,
    KafkaCommandTaskTemplateBuilder,
    KafkaListenerTask,
    KafkaListenerTaskTemplateBuilder,
    ManualClock,
    MonitoredProcessTemplateDAGInstance,
    MonitoringTask,
    ParallelCompositeProcessTemplateDagBuilder,
    ParallelCompositeTask,
    ParallelCompositeTaskTemplateBuilder,
    ProcessTemplateDagBuilder,
    TaskLookupKey,
    TaskOperator,
    TriggerTask,
    TriggerTaskTemplateBuilder,
)
from daggerflow.model.instance import Instance, Node
from daggerflow.templates import ITemplateDAG

TOTAL_ORDERS = 4
SIMPLE_IDS = ["simpleid1", "simpleid2"]
ORDERS_TOPIC = "orders_topic"

# Like Dagger's test_app.py: the engine is a module-level object the tasks use, and what
# the tasks observe is kept at module level (set up by the test).
workflow_engine: Dagger | None = None
tagged_list_ids: list[str] = []
stopped_simple_listeners: asyncio.Queue[str] | None = None


def _engine() -> Dagger:
    assert workflow_engine is not None
    return workflow_engine


# The application's tasks (Dagger's test_app.py) ----------------------------------------------


class Noopexecutor(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters[f"noop_{self.id}"] = True


class OrderPreProcess1Executor(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters.setdefault("preprocessed", []).append(self.task_name)


class ShippingExecutor(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        # Four parallel SHIPPING processes run this: one key each, so none overwrites another.
        runtime_parameters[f"shipped_{self.id}"] = True


class PaymentKafkaCommandTask(KafkaCommandTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        assert self.topic is not None
        await (
            _engine()
            .topics[self.topic]
            .send(
                key=runtime_parameters["order_id"],
                value=json.dumps({"order_id": runtime_parameters["order_id"]}),
            )
        )


class PaymentDecisionTask(DecisionTask[str, str]):
    async def evaluate(self, **kwargs: Any) -> Any:
        for task_id in self.next_dags:
            return task_id
        return None


class FulfillmentKafkaCommandTask(KafkaCommandTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        assert self.topic is not None
        await (
            _engine()
            .topics[self.topic]
            .send(
                key=runtime_parameters["order_id"], value=json.dumps({"box_id": runtime_parameters["box_id"]})
            )
        )


class FulfillmentTriggerTask(TriggerTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["fulfillment_triggered_at"] = self.time_to_execute


class FulfillmentIntervalTask(IntervalTask[str, str]):
    async def interval_execute(self, runtime_parameters: dict[str, Any]) -> bool:
        runtime_parameters["count"] = runtime_parameters.get("count", 0) + 1
        return bool(runtime_parameters["count"] == 2)

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["interval_done"] = True


class PaymentKafkaListenerTask(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        new_params = json.loads(*args)
        runtime_parameters["box_id"] = new_params.get("box_id", None)
        return True

    def get_correlatable_key(self, payload: Any) -> TaskLookupKey:  # Dagger's deprecated hook
        tpayload = json.loads(payload)
        return self.correlatable_key, tpayload[self.correlatable_key]


class SimpleKafkaListenerTask(KafkaListenerTask[str, str]):
    correlatable_key = "simple_id"

    async def stop(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        assert stopped_simple_listeners is not None
        stopped_simple_listeners.put_nowait(self.id)

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        keys = json.loads(payload)[self.correlatable_key]
        return [(self.correlatable_key, key) for key in keys]


class NoopKafkaListenerTask(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True

    def get_correlatable_key(self, payload: Any) -> TaskLookupKey:
        return self.correlatable_key, json.loads(payload)[self.correlatable_key]


class FulfillmentKafkaListenerTask(KafkaListenerTask[str, str]):
    correlatable_key = "box_id"

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters.setdefault("fulfillment_acks", []).append(json.loads(args[0]))
        return True

    def get_correlatable_key(self, payload: Any) -> TaskLookupKey:
        return self.correlatable_key, json.loads(payload)[self.correlatable_key]


class TestMonitoringTask(DefaultMonitoringTask[str, str]):
    __test__ = False  # not a pytest class

    async def process_monitored_task(self, monitored_task: ITask[Any, Any], workflow_instance: Any) -> None:
        tagged_list_ids.append(str(self.monitored_task_id))


class FulfillmentMonitoringProcessDAGInstance(MonitoredProcessTemplateDAGInstance[str, str]):
    def get_monitoring_task_type(self) -> type[MonitoringTask[Any, Any]]:
        return TestMonitoringTask


def define_application(engine: Dagger) -> dict[str, Any]:
    """Dagger's test_app.py definitions, with the same builders (bound to ``engine``)."""
    shared: dict[str, Any] = {}

    order_preprocess1_executor = DefaultTaskTemplateBuilder(engine)
    order_preprocess1_executor.set_name("order_preprocess1_executor")
    order_preprocess1_executor.set_type(OrderPreProcess1Executor)
    shared["order_preprocess1_executor_task_template"] = order_preprocess1_executor.build()

    shipping_executor = DefaultTaskTemplateBuilder(engine)
    shipping_executor.set_name("shipping_executor")
    shipping_executor.set_type(ShippingExecutor)
    shared["shipping_executor_task_template"] = shipping_executor.build()

    @engine.register_process_template("SimpleProcess")
    def register_simple_process(process_name: str) -> Any:
        simple_topic = engine.create_topic("SIMPLE_LISTENER", key_type=bytes, value_type=bytes)
        listener = KafkaListenerTaskTemplateBuilder(engine)
        listener.set_topic(simple_topic)
        listener.set_type(SimpleKafkaListenerTask)
        listener.set_name("SIMPLE_LISTENER_TASK")
        simple_process_builder = ProcessTemplateDagBuilder(engine)
        simple_process_builder.set_name(process_name)
        simple_process_builder.set_root_task(listener.build())
        simple_process_builder.set_type(DefaultProcessTemplateDAGInstance)
        return simple_process_builder.build()

    @engine.register_template("OrderWorkflow")
    def order_template(template_name: str) -> ITemplateDAG:
        payment_listener = KafkaListenerTaskTemplateBuilder(engine)
        payment_listener.set_topic(engine.create_topic("PAYMENT_LISTENER"))
        payment_listener.set_type(PaymentKafkaListenerTask)
        payment_listener.set_name("PAYMENT_LISTENER_TASK")
        payment_decision = DecisionTaskTemplateBuilder(engine)
        payment_decision.set_type(PaymentDecisionTask)
        payment_decision.set_name("PAYMENT_DECISION_TASK")
        payment_decision.set_next(payment_listener.build())
        payment_command = KafkaCommandTaskTemplateBuilder(engine)
        payment_command.set_topic(engine.create_topic("PAYMENT_COMMAND"))
        payment_command.set_type(PaymentKafkaCommandTask)
        payment_command.set_name("PAYMENT_COMMAND_TASK")
        payment_command.set_next(payment_decision.build())
        payment_process = ProcessTemplateDagBuilder(engine)
        payment_process.set_name("PAYMENT")
        payment_process.set_root_task(payment_command.build())
        payment_process.set_type(DefaultProcessTemplateDAGInstance)

        dynamic = DynamicProcessTemplateDagBuilder(engine)
        dynamic.set_name("ORDER_PREPROCESSING")

        fulfillment_trigger = TriggerTaskTemplateBuilder(engine)
        fulfillment_trigger.set_time_to_execute_lookup_key("DEADLINE")
        fulfillment_trigger.set_type(FulfillmentTriggerTask)
        fulfillment_trigger.set_name("FULFILLMENT_TRIGGER_TASK")
        fulfillment_listener = KafkaListenerTaskTemplateBuilder(engine)
        fulfillment_listener.set_topic(engine.create_topic("FULFILLMENT_LISTENER"))
        fulfillment_listener.set_type(FulfillmentKafkaListenerTask)
        fulfillment_listener.set_name("FULFILLMENT_LISTENER_TASK")
        fulfillment_listener.set_next(fulfillment_trigger.build())
        fulfillment_interval = IntervalTaskTemplateBuilder(engine)
        fulfillment_interval.set_time_to_force_complete_lookup_key("DEADLINE")
        fulfillment_interval.set_interval_execute_period_lookup_key("interval")
        fulfillment_interval.set_next(fulfillment_listener.build())
        fulfillment_interval.set_type(FulfillmentIntervalTask)
        fulfillment_interval.set_name("FULFILLMENT_INTERVAL_TASK")
        fulfillment_command = KafkaCommandTaskTemplateBuilder(engine)
        fulfillment_command.set_topic(engine.create_topic("FULFILLMENT_COMMAND"))
        fulfillment_command.set_next(fulfillment_interval.build())
        fulfillment_command.set_type(FulfillmentKafkaCommandTask)
        fulfillment_command.set_name("FULFILLMENT_COMMAND_TASK")
        fulfillment_process = ProcessTemplateDagBuilder(engine)
        fulfillment_process.set_name("FULFILLMENT")
        fulfillment_process.set_root_task(fulfillment_command.build())
        fulfillment_process.set_type(FulfillmentMonitoringProcessDAGInstance)

        no_op_listener_1 = KafkaListenerTaskTemplateBuilder(engine)
        no_op_listener_1.set_topic(engine.create_topic("NOOP_LISTENER_1"))
        no_op_listener_1.set_type(NoopKafkaListenerTask)
        no_op_listener_1.set_name("NO_OP_1_LISTENER_TASK")
        no_op_executor = DefaultTaskTemplateBuilder(engine)
        no_op_executor.set_name("noop_executor")
        no_op_executor.set_type(Noopexecutor)
        no_op_executor_task_template = no_op_executor.build()

        parallel_tasks = ParallelCompositeTaskTemplateBuilder(engine, 2, no_op_executor_task_template)
        parallel_tasks.set_name("parallelTasks")

        parallel_process = ParallelCompositeProcessTemplateDagBuilder(engine)
        parallel_process.set_name("parallelProcess")
        parallel_process.set_parallel_operator_type(TaskOperator.JOIN_ALL)
        parallel_process.set_type(ParallelCompositeTask)
        dummy_executor_process = ProcessTemplateDagBuilder(engine)
        dummy_executor_process.set_name("DummyExecutor")
        dummy_executor_process.set_root_task(no_op_executor_task_template)
        dummy_executor_process.set_type(DefaultProcessTemplateDAGInstance)
        no_op_listener_2 = KafkaListenerTaskTemplateBuilder(engine)
        no_op_listener_2.set_topic(engine.create_topic("NOOP_LISTENER_2"))
        no_op_listener_2.set_type(NoopKafkaListenerTask)
        no_op_listener_2.set_name("NO_OP_2_LISTENER_TASK")
        dummy_listener_process = ProcessTemplateDagBuilder(engine)
        dummy_listener_process.set_name("DummyListener")
        dummy_listener_process.set_root_task(no_op_listener_2.build())
        dummy_listener_process.set_type(DefaultProcessTemplateDAGInstance)
        parallel_process.set_parallel_process_templates(dummy_listener_process.build())
        parallel_process.set_parallel_process_templates(dummy_executor_process.build())

        parallel_tasks.add_parallel_task(no_op_executor_task_template)
        parallel_tasks.add_parallel_task(no_op_listener_1.build())
        parallel_tasks.set_type(ParallelCompositeTask)
        parallel_tasks.set_task_operator(TaskOperator.ATLEAST_ONE)

        shipping_composite = ParallelCompositeProcessTemplateDagBuilder(engine)
        shipping_composite.set_name("ShippingCompositeProcess")
        shipping_composite.set_parallel_operator_type(TaskOperator.JOIN_ALL)
        shipping_composite.set_type(ParallelCompositeTask)
        shipping_composite.set_next_process(parallel_tasks.build())  # a task group chained as a process
        parallel_process.set_next_process(shipping_composite.build())

        fulfillment_process.set_next_process(parallel_process.build())
        dynamic.set_next_process(fulfillment_process.build())
        payment_process.set_next_process(dynamic.build())
        template_builder = DefaultTemplateBuilder(engine)
        template_builder.set_name(template_name)
        template_builder.set_type(DefaultTemplateDAGInstance)
        template_builder.set_root(payment_process.build())
        return template_builder.build()

    return shared


def install_driver_agents(
    engine: Dagger,
    shared: dict[str, Any],
    clock: ManualClock,
    running_task_ids: list[str],
    created: asyncio.Queue[str],
) -> None:
    """Dagger's app agents on orders_topic, simple_topic and simple_topic_stop."""
    t0 = clock.now()

    @engine.agent(ORDERS_TOPIC)
    async def orders_stream(value: Any) -> None:
        order = json.loads(value)
        template = engine.template_dags["OrderWorkflow"]
        preprocess_1 = ProcessTemplateDagBuilder(engine)
        preprocess_1.set_name("ORDER_PREPROCESS_1")
        preprocess_1.set_root_task(shared["order_preprocess1_executor_task_template"])
        preprocess_1.set_type(DefaultProcessTemplateDAGInstance)
        preprocess_2 = ProcessTemplateDagBuilder(engine)
        preprocess_2.set_name("ORDER_PREPROCESS_2")
        preprocess_2.set_root_task(shared["order_preprocess1_executor_task_template"])
        preprocess_2.set_type(DefaultProcessTemplateDAGInstance)
        template.set_dynamic_builders_for_process_template(
            "ORDER_PREPROCESSING", [preprocess_1, preprocess_2]
        )
        shipping = ProcessTemplateDagBuilder(engine)
        shipping.set_name("SHIPPING")
        shipping.set_root_task(shared["shipping_executor_task_template"])
        shipping.set_type(DefaultProcessTemplateDAGInstance)
        template.set_given_num_of_parallel_processes_for_a_composite_process(
            4, "ShippingCompositeProcess", shipping
        )

        rd = random.Random(f"order-{order}")
        dag_id = str(uuid.UUID(int=rd.getrandbits(128)))
        instance = await template.create_instance(
            dag_id,
            partition_key_lookup="order_id",
            box_id="box_ID00" + format(order),
            DEADLINE=t0 + 100,  # Dagger: now + 2 s, with a 5 s timer tick
            interval=10,
            order_id="ID00" + format(order),
            repartition=False,
            seed=rd,
            dagId=dag_id,
            **{COMPLETE_BY_KEY: t0 + 5},  # Dagger: 120000, long past
        )
        running_task_ids.append(instance.id)
        await engine.submit(instance, repartition=False)
        created.put_nowait(instance.id)

    @engine.agent("simple_topic")
    async def simple_data_stream(value: Any) -> None:
        simple_id = json.loads(value)
        rd = random.Random(f"simple-{simple_id}")
        template_builder = DefaultTemplateBuilder(engine)
        template_builder.set_name("OnTheFlyWorkflow")
        template_builder.set_type(DefaultTemplateDAGInstance)
        template_builder.set_root(engine.process_templates["SimpleProcess"])
        simple_template = template_builder.build()
        dag_id = str(uuid.UUID(int=rd.getrandbits(128)))
        instance = await simple_template.create_instance(
            dag_id,
            partition_key_lookup="order_id",
            simple_id=simple_id,
            DEADLINE=t0 + 2,
            interval=1,
            order_id="ID00" + format(simple_id),
            complete_by_time=120000,
            repartition=False,
            seed=rd,
        )
        running_task_ids.append(instance.id)
        await engine.submit(instance, repartition=False)
        created.put_nowait(instance.id)

    @engine.agent("simple_topic_stop")
    async def simple_data_stream_stop(value: Any) -> None:
        instance = await engine.get_instance(running_task_ids[-1])
        assert instance is not None
        await instance.stop()
        created.put_nowait(instance.id)


# Helpers ---------------------------------------------------------------------------------------


def _nodes(inst: Instance, name: str) -> list[Node]:
    return [n for n in inst.nodes.values() if n.name == name or n.name.endswith("." + name)]


def _node(inst: Instance, name: str) -> Node:
    found = _nodes(inst, name)
    assert len(found) == 1, (name, [n.name for n in found])
    return found[0]


def _is(name: str, status: str) -> Callable[[Instance], bool]:
    return lambda inst: _node(inst, name).status == status


def _interval_armed_after_first_poll(inst: Instance) -> bool:
    interval = _node(inst, "FULFILLMENT_INTERVAL_TASK")
    return inst.runtime_parameters.get("count") == 1 and f"{interval.id}:due" in inst.timers


def _state(engine: Dagger, iid: str) -> Instance:
    inst = engine.committed(iid)
    assert inst is not None
    return inst


async def _take(queue: asyncio.Queue[str], n: int) -> list[str]:
    return [await asyncio.wait_for(queue.get(), 5) for _ in range(n)]


async def _instances(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/tasks/instances")
    assert response.status_code == 200
    body: list[dict[str, Any]] = response.json()
    return body


# The scenario ----------------------------------------------------------------------------------


async def test_dagger_integration_scenario(make_engine: Callable[..., Dagger]) -> None:
    """§8.2 / §10.56: OrderWorkflow x4, two on-the-fly SimpleProcess workflows completed by
    one message, one more stopped through an agent, and the update-topic stream."""
    global workflow_engine, stopped_simple_listeners
    tagged_list_ids.clear()
    stopped_simple_listeners = asyncio.Queue()
    clock = ManualClock()
    t0 = clock.now()
    engine = make_engine(
        web_port=0,
        clock=clock,
        task_update_topic="task_update_topic",
        consumer_auto_offset_reset="latest",
        trigger_interval=5,  # accepted for compatibility; timers are exact here
    )
    workflow_engine = engine
    shared = define_application(engine)
    running_task_ids: list[str] = []
    created: asyncio.Queue[str] = asyncio.Queue()
    install_driver_agents(engine, shared, clock, running_task_ids, created)
    await engine.start()
    try:
        assert engine.web_url is not None
        async with httpx.AsyncClient(base_url=engine.web_url, timeout=5) as client:
            await _scenario(engine, client, clock, t0, running_task_ids, created)
    finally:
        await engine.stop()


async def _scenario(
    engine: Dagger,
    client: httpx.AsyncClient,
    clock: ManualClock,
    t0: float,
    running_task_ids: list[str],
    created: asyncio.Queue[str],
) -> None:
    # 1. test_clean_consumer: nothing on the update topic yet.
    assert engine.read_topic("task_update_topic", 0, 10) == []

    # 2. test_dagger_initialized
    ready = await client.get("/service/ready")
    assert ready.json()["is_ready"] is True

    # 3. test_dagger_start: four orders.
    for i in range(TOTAL_ORDERS):
        await engine.topics[ORDERS_TOPIC].send(value=json.dumps(i).encode("utf-8"))
    orders = await _take(created, TOTAL_ORDERS)
    assert len(set(orders)) == TOTAL_ORDERS
    for iid in orders:
        await engine.wait_for(iid, _is("PAYMENT_LISTENER_TASK", "EXECUTING"), 5)

    # 4. test_instances_created / test_instances_executing
    instances = await _instances(client)
    assert len(instances) == TOTAL_ORDERS
    for instance in instances:
        assert instance["task_type"] == "ROOT"
        assert instance["status"]["code"] == "EXECUTING"
    first = engine.committed(orders[0])
    assert first is not None
    assert _node(first, "PAYMENT_COMMAND_TASK").status == "COMPLETED"
    assert _node(first, "PAYMENT_DECISION_TASK").status == "COMPLETED"
    # The dynamic placeholder became the two pre-processing processes, once per order.
    assert [n.name for n in _nodes(first, "ORDER_PREPROCESS_1")] == ["OrderWorkflow.ORDER_PREPROCESS_1"]
    assert _nodes(first, "ORDER_PREPROCESSING") == []
    assert len(_nodes(first, "SHIPPING")) == 4
    sizes = {len(_state(engine, iid).nodes) for iid in orders}
    assert len(sizes) == 1, "re-configuring the template per order duplicated nodes"
    payment_commands = [json.loads(m.value) for m in engine.read_topic("PAYMENT_COMMAND", 0, 100)]
    assert sorted(c["order_id"] for c in payment_commands) == [f"ID00{i}" for i in range(TOTAL_ORDERS)]

    # 5. test_dagger_update_listeners: the payment listener copies box_id (re-keying the
    #    fulfillment listener); pre-processing runs; FULFILLMENT starts; the interval task
    #    polls once (count=1) and re-arms itself +10 s.
    for i in range(TOTAL_ORDERS):
        payload = {"box_id": "ID00" + format(i), "order_id": "ID00" + format(i)}
        await engine.topics["PAYMENT_LISTENER"].send(value=json.dumps(payload).encode("utf-8"))
    for iid in orders:
        inst = await engine.wait_for(iid, _interval_armed_after_first_poll, 5)
        committed = engine.committed(iid)
        assert committed is not None
        assert committed.runtime_parameters["box_id"] == committed.runtime_parameters["order_id"]
        assert committed.runtime_parameters["preprocessed"] == [
            "OrderWorkflow.ORDER_PREPROCESS_1.order_preprocess1_executor",
            "OrderWorkflow.ORDER_PREPROCESS_2.order_preprocess1_executor",
        ]
        assert _node(committed, "PAYMENT").status == "COMPLETED"
        assert _node(committed, "FULFILLMENT_COMMAND_TASK").status == "COMPLETED"
        assert _node(committed, "FULFILLMENT_INTERVAL_TASK").status == "EXECUTING"
        assert inst.status.code == "EXECUTING"
        interval = _node(committed, "FULFILLMENT_INTERVAL_TASK")
        assert committed.timers[f"{interval.id}:due"] == t0 + 10
    fulfillment_commands = [json.loads(m.value) for m in engine.read_topic("FULFILLMENT_COMMAND", 0, 100)]
    assert sorted(c["box_id"] for c in fulfillment_commands) == [f"ID00{i}" for i in range(TOTAL_ORDERS)]

    # 6. test_interval_tasks: the second poll (timer) returns True: count == 2 and the
    #    fulfillment listener waits; the monitor (complete_by_time = t0+5) has fired for
    #    every order because FULFILLMENT was still unfinished.
    clock.advance(10)
    for iid in orders:
        await engine.wait_for(iid, _is("FULFILLMENT_LISTENER_TASK", "EXECUTING"), 5)
        await engine.wait_for(iid, _is("FULFILLMENT.monitor", "COMPLETED"), 5)
    for instance in await _instances(client):
        assert instance["runtime_parameters"]["count"] == 2
        assert instance["runtime_parameters"]["interval_done"] is True
        assert instance["status"]["code"] == "EXECUTING"
    fulfillment_ids = {_node(_state(engine, iid), "FULFILLMENT").id for iid in orders}
    assert sorted(tagged_list_ids) == sorted(fulfillment_ids)

    # 7. test_send_fulfillment_ack: matched by the re-keyed box_id. A message with the
    #    old value (box_ID000) first: it no longer matches (fix of Dagger's index leak).
    await engine.topics["FULFILLMENT_LISTENER"].send(
        value=json.dumps({"order_id": "ID000", "box_id": "box_ID000"}).encode("utf-8")
    )
    for i in range(TOTAL_ORDERS):
        payload = {"order_id": "ID00" + format(i), "box_id": "ID00" + format(i)}
        await engine.topics["FULFILLMENT_LISTENER"].send(value=json.dumps(payload).encode("utf-8"))
    for iid in orders:
        await engine.wait_for(iid, _is("FULFILLMENT_TRIGGER_TASK", "EXECUTING"), 5)
        committed = engine.committed(iid)
        assert committed is not None
        assert committed.runtime_parameters["fulfillment_acks"] == [
            {
                "order_id": committed.runtime_parameters["order_id"],
                "box_id": committed.runtime_parameters["box_id"],
            }
        ]

    # 8. test_fulfillment_executing: all still EXECUTING (the trigger waits for DEADLINE).
    for instance in await _instances(client):
        assert instance["status"]["code"] == "EXECUTING"
    clock.set(t0 + 100)
    for iid in orders:
        await engine.wait_for(iid, _is("DummyListener", "EXECUTING"), 5)
        await engine.wait_for(iid, _is("DummyExecutor", "COMPLETED"), 5)
        committed = engine.committed(iid)
        assert committed is not None
        assert _node(committed, "FULFILLMENT").status == "COMPLETED"
        assert committed.runtime_parameters["fulfillment_triggered_at"] == t0 + 100
        assert _node(committed, "parallelProcess").status == "EXECUTING"
    # test_parallel_instances_executing
    for instance in await _instances(client):
        assert instance["status"]["code"] == "EXECUTING"

    # 9. test_send_parallel_process_ack: the JOIN_ALL parallel process completes, then the
    #    four SHIPPING processes, then parallelTasks (ATLEAST_ONE: its first executor).
    for i in range(TOTAL_ORDERS):
        payload = {"order_id": "ID00" + format(i), "box_id": "ID00" + format(i)}
        await engine.topics["NOOP_LISTENER_2"].send(value=json.dumps(payload).encode("utf-8"))

    # 10. test_all_completed
    for iid in orders:
        assert (await engine.wait_for(iid, timeout=5)).status.code == "COMPLETED"
    for instance in await _instances(client):
        assert instance["status"]["code"] == "COMPLETED"
    for iid in orders:
        committed = engine.committed(iid)
        assert committed is not None
        shipping = _nodes(committed, "SHIPPING")
        assert [n.status for n in shipping] == ["COMPLETED"] * 4
        shipped = [k for k in committed.runtime_parameters if k.startswith("shipped_")]
        assert len(shipped) == 4
        assert _node(committed, "ShippingCompositeProcess").status == "COMPLETED"
        assert _node(committed, "parallelTasks").status == "COMPLETED"
        assert _node(committed, "NO_OP_1_LISTENER_TASK").status == "STOPPED"
        assert committed.timers == {}
        assert committed.correlations == {}

    # 11. test_dagger_one_to_many_create
    for simple_id in SIMPLE_IDS:
        await engine.topics["simple_topic"].send(value=json.dumps(simple_id).encode("utf-8"))
    simple = await _take(created, len(SIMPLE_IDS))
    for iid in simple:
        await engine.wait_for(iid, _is("SIMPLE_LISTENER_TASK", "EXECUTING"), 5)

    # 12. test_on_the_fly_workflow_instances_created
    executing = [i for i in await _instances(client) if i["status"]["code"] == "EXECUTING"]
    assert len(executing) == len(SIMPLE_IDS)
    assert {i["template_name"] for i in executing} == {"OnTheFlyWorkflow"}
    assert "OnTheFlyWorkflow" not in engine.template_dags  # built per message, never registered

    # 13. test_on_the_fly_workflow_listeners: ONE message, two workflows.
    await engine.topics["SIMPLE_LISTENER"].send(value=json.dumps({"simple_id": SIMPLE_IDS}).encode("utf-8"))

    # 14. test_all_simple_completed
    for iid in simple:
        assert (await engine.wait_for(iid, timeout=5)).status.code == "COMPLETED"
    instances = await _instances(client)
    assert len(instances) == TOTAL_ORDERS + len(SIMPLE_IDS)
    for instance in instances:
        assert instance["status"]["code"] == "COMPLETED"

    # 15. test_workflow_update: the update topic, grouped by workflow.
    task_map: dict[str, list[dict[str, Any]]] = {}
    for message in engine.read_topic("task_update_topic", 0, 100_000):
        value = json.loads(message.value)
        task_map.setdefault(value["id"], []).append(value)
        assert message.key == value["runtime_parameters"]["order_id"]  # partition_key_lookup
    workflow_count = executing_count = completed_count = task_list_count = 0
    for task_list in task_map.values():
        workflow_count += 1
        for task in task_list:
            if task["status"]["code"] == "EXECUTING":
                executing_count += 1
            if task["status"]["code"] == "COMPLETED":
                completed_count += 1
                assert task["update_count"] > 1
            task_list_count += 1
        # Stronger than Dagger's check: one COMPLETED snapshot per workflow, the last one.
        assert [t["status"]["code"] for t in task_list].count("COMPLETED") == 1
        assert task_list[-1]["status"]["code"] == "COMPLETED"
    assert task_list_count > 1
    assert executing_count > 1
    assert completed_count >= 1
    assert workflow_count > 1
    assert set(task_map) == set(orders) | set(simple)

    # 16. test_create_new_simple / test_new_simple_workflow_instances_created
    await engine.topics["simple_topic"].send(value=json.dumps("SIMPLE_ID_3").encode("utf-8"))
    (third,) = await _take(created, 1)
    await engine.wait_for(third, _is("SIMPLE_LISTENER_TASK", "EXECUTING"), 5)
    executing = [i for i in await _instances(client) if i["status"]["code"] == "EXECUTING"]
    assert [i["id"] for i in executing] == [third]

    # 17. test_stop_new_simple / test_new_simple_workflow_instances_stopped
    await engine.topics["simple_topic_stop"].send(value=json.dumps("stop").encode("utf-8"))
    (stopped,) = await _take(created, 1)
    assert stopped == third == running_task_ids[-1]
    await engine.wait_for(third, timeout=5)
    instances = await _instances(client)
    assert [i["id"] for i in instances if i["status"]["code"] == "STOPPED"] == [third]
    assert sum(i["status"]["code"] == "COMPLETED" for i in instances) == TOTAL_ORDERS + len(SIMPLE_IDS)
    stopped_listener = _node(_state(engine, third), "SIMPLE_LISTENER_TASK")
    assert stopped_listener.status == "STOPPED"
    assert stopped_simple_listeners is not None
    assert await asyncio.wait_for(stopped_simple_listeners.get(), 5) == stopped_listener.id
    assert stopped_simple_listeners.empty()
