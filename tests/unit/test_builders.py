"""Builders and DAGBuilderHelper without an engine: type checks, names, linking, reuse."""

from __future__ import annotations

from typing import Any

import pytest

from daggerflow.builders import (
    DAGBuilderHelper,
    DecisionTaskTemplateBuilder,
    DefaultTaskTemplateBuilder,
    DefaultTemplateBuilder,
    DynamicProcessTemplateDagBuilder,
    IntervalTaskTemplateBuilder,
    KafkaCommandTaskTemplateBuilder,
    KafkaListenerTaskTemplateBuilder,
    ParallelCompositeProcessTemplateDagBuilder,
    ParallelCompositeTaskTemplateBuilder,
    ProcessTemplateDagBuilder,
    SensorTaskTemplateBuilder,
    TriggerTaskTemplateBuilder,
    kind_of,
    type_name_of,
)
from daggerflow.errors import InvalidTaskType
from daggerflow.model.instance import RetryPolicy
from daggerflow.model.status import Kind, TaskOperator
from daggerflow.model.template import (
    DynamicProcessTemplate,
    ParallelProcessTemplate,
    ParallelTaskTemplate,
    ProcessTemplate,
    TaskTemplate,
    instantiate,
)
from daggerflow.tasks import (
    DefaultMonitoringTask,
    ExecutorTask,
    IntervalTask,
    MonitoredProcessTemplateDAGInstance,
    MonitoringTask,
)

from .machine_helpers import T0, Choose, Cmd, Exec, OrderListener, OrderSensor, Poll, Trig

H = DAGBuilderHelper(None)


def _names(head: Any) -> list[str]:
    """Names along a linked chain (first successor each time)."""
    out = []
    while head is not None:
        out.append(head.name)
        head = head.next[0] if head.next else None
    return out


# Type checks -----------------------------------------------------------------------------------


class NotATask:
    pass


@pytest.mark.parametrize("cls", [Exec, Cmd, Trig, Poll, Choose, OrderSensor])
def test_listener_builder_rejects_non_listener_types(cls: type) -> None:
    with pytest.raises(InvalidTaskType):
        KafkaListenerTaskTemplateBuilder(None).set_type(cls)
    if cls is not OrderSensor:
        with pytest.raises(InvalidTaskType):
            H.generic_listener_task_builder(topic="orders", task_type=cls, process_name="P")


@pytest.mark.parametrize("cls", [Exec, OrderListener, Trig])
def test_command_builder_rejects_non_command_types(cls: type) -> None:
    with pytest.raises(InvalidTaskType):
        H.generic_command_task_builder(topic="cmds", task_type=cls, process_name="P")


@pytest.mark.parametrize("cls", [Cmd, OrderListener, OrderSensor])
def test_default_builder_rejects_kafka_types(cls: type) -> None:
    if cls is OrderSensor:
        # A sensor is not a Kafka type: the default builder accepts it (sensor kind).
        assert DefaultTaskTemplateBuilder(None).set_type(cls) is not None
        return
    with pytest.raises(InvalidTaskType):
        DefaultTaskTemplateBuilder(None).set_type(cls)
    with pytest.raises(InvalidTaskType):
        H.generic_executor_task_builder(task_type=cls, name="x")


@pytest.mark.parametrize("cls", [NotATask, int, "Exec"])
def test_every_builder_rejects_non_task_classes(cls: Any) -> None:
    for builder in (
        DefaultTaskTemplateBuilder(None),
        KafkaCommandTaskTemplateBuilder(None),
        KafkaListenerTaskTemplateBuilder(None),
        TriggerTaskTemplateBuilder(None),
        DecisionTaskTemplateBuilder(None),
    ):
        with pytest.raises(InvalidTaskType):
            builder.set_type(cls)


@pytest.mark.parametrize(
    ("builder_cls", "bad", "good"),
    [
        (DecisionTaskTemplateBuilder, Exec, Choose),
        (TriggerTaskTemplateBuilder, Exec, Trig),
        (IntervalTaskTemplateBuilder, Trig, Poll),
        (SensorTaskTemplateBuilder, Exec, OrderSensor),
    ],
)
def test_specialised_builders_take_only_their_task_type(builder_cls: type, bad: type, good: type) -> None:
    with pytest.raises(InvalidTaskType):
        builder_cls(None).set_type(bad)
    assert builder_cls(None).set_type(good) is not None


def test_generic_decision_trigger_interval_builders_reject_wrong_types() -> None:
    with pytest.raises(InvalidTaskType):
        H.generic_decision_task_builder(task_type=Exec, name="d")
    with pytest.raises(InvalidTaskType):
        H.generic_trigger_task_builder(task_type=Exec, name="t", time_to_execute_key="at")
    with pytest.raises(InvalidTaskType):
        H.generic_interval_task_builder(
            task_type=Trig, name="i", time_to_force_complete_key="f", interval_execute_period_key="p"
        )


def test_incomplete_builders_refuse_to_build() -> None:
    with pytest.raises(InvalidTaskType):
        DefaultTaskTemplateBuilder(None).build()  # no type
    with pytest.raises(InvalidTaskType):
        KafkaCommandTaskTemplateBuilder(None).set_type(Cmd).build()  # no topic
    with pytest.raises(InvalidTaskType):
        ProcessTemplateDagBuilder(None).set_name("P").build()  # no root task
    with pytest.raises(InvalidTaskType):
        DefaultTemplateBuilder(None).set_root(_process("P")).build()  # no name
    with pytest.raises(InvalidTaskType):
        DefaultTemplateBuilder(None).set_name("w").build()  # no root
    with pytest.raises(InvalidTaskType):
        H.build_and_link_tasks([])
    with pytest.raises(InvalidTaskType):
        H.build_and_link_processes([])
    with pytest.raises(ValueError):
        DefaultTaskTemplateBuilder(None).set_timeout(5, status="COMPLETED")


def test_parallel_and_dynamic_process_builders_refuse_what_they_do_not_have() -> None:
    with pytest.raises(NotImplementedError):
        ParallelCompositeProcessTemplateDagBuilder(None).set_root_task(_ex("a"))
    with pytest.raises(NotImplementedError):
        ParallelCompositeProcessTemplateDagBuilder(None).set_max_run_duration(5)
    with pytest.raises(NotImplementedError):
        DynamicProcessTemplateDagBuilder(None).set_root_task(_ex("a"))
    with pytest.raises(NotImplementedError):
        DynamicProcessTemplateDagBuilder(None).set_type(Exec)


def test_kind_and_type_name_of_task_classes() -> None:
    class Named(ExecutorTask[Any, Any]):
        type_name = "orders.Named"

    class Inherits(Named):
        pass

    assert {cls: kind_of(cls) for cls in (Exec, Cmd, OrderListener, OrderSensor, Trig, Poll, Choose)} == {
        Exec: Kind.EXECUTOR,
        Cmd: Kind.COMMAND,
        OrderListener: Kind.LISTENER,
        OrderSensor: Kind.SENSOR,
        Trig: Kind.TRIGGER,
        Poll: Kind.INTERVAL,
        Choose: Kind.DECISION,
    }
    assert kind_of(DefaultMonitoringTask) is Kind.MONITOR
    assert type_name_of(Exec) == "Exec"
    assert type_name_of(Named) == "orders.Named"
    assert type_name_of(Inherits) == "Inherits"  # an explicit name is not inherited


# Names -----------------------------------------------------------------------------------------


def _ex(name: str) -> DefaultTaskTemplateBuilder:
    return H.generic_executor_task_builder(task_type=Exec, name=name)


def _process(name: str) -> ProcessTemplateDagBuilder:
    return H.generic_process_builder(process_name=name, root_task=_ex("a"))


def test_generic_builders_name_tasks_like_dagger() -> None:
    command = H.generic_command_task_builder(topic="orders", task_type=Cmd, process_name="ORDERS").build()
    listen = H.generic_listener_task_builder(
        topic="orders", task_type=OrderListener, process_name="ORDERS"
    ).build()
    executor = H.generic_executor_task_builder(task_type=Exec, name="PAYMENT").build()
    trigger = H.generic_trigger_task_builder(task_type=Trig, name="wake", time_to_execute_key="at").build()
    poll = H.generic_interval_task_builder(
        task_type=Poll, name="poll", time_to_force_complete_key="f", interval_execute_period_key="p"
    ).build()
    choose = H.generic_decision_task_builder(task_type=Choose, name="route").build()
    assert [t.name for t in (command, listen, executor, trigger, poll, choose)] == [
        "ORDERS_command_task",
        "ORDERS_listener_task",
        "PAYMENT_executor_task",
        "wake",
        "poll",
        "route",
    ]
    assert isinstance(command, TaskTemplate) and command.kind is Kind.COMMAND and command.topic == "orders"
    assert isinstance(listen, TaskTemplate) and listen.kind is Kind.LISTENER and listen.topic == "orders"
    assert isinstance(trigger, TaskTemplate) and trigger.time_to_execute_key == "at"
    assert isinstance(poll, TaskTemplate)
    assert (poll.time_to_force_complete_key, poll.interval_execute_period_key) == ("f", "p")
    assert poll.time_to_execute_key is None


def test_listener_builder_options_reach_the_template() -> None:
    t = H.generic_listener_task_builder(
        topic="orders",
        task_type=OrderListener,
        process_name="P",
        allow_skip_to=True,
        reprocess_on_message=True,
    ).build()
    assert isinstance(t, TaskTemplate) and t.allow_skip_to and t.reprocess_on_message
    topic_obj = type("T", (), {"name": "kitchen"})()
    built = KafkaListenerTaskTemplateBuilder(None).set_type(OrderListener)
    assert isinstance(built, KafkaListenerTaskTemplateBuilder)
    t2 = built.set_topic(topic_obj).build()
    assert isinstance(t2, TaskTemplate) and t2.topic == "kitchen"


def test_built_instance_nodes_are_named_workflow_process_task() -> None:
    process = H.generic_process_builder(
        process_name="ORDERS",
        root_task=H.build_and_link_tasks(
            [
                H.generic_command_task_builder(topic="orders", task_type=Cmd, process_name="ORDERS"),
                H.generic_listener_task_builder(
                    topic="orders", task_type=OrderListener, process_name="ORDERS"
                ),
            ]
        ),
    )
    template = H.generic_template(template_name="pizza", root_process=process)
    inst = instantiate(template.spec, "i1", {"order_id": 1}, now=T0)
    assert sorted(n.name for n in inst.nodes.values()) == [
        "pizza",
        "pizza.ORDERS",
        "pizza.ORDERS.ORDERS_command_task",
        "pizza.ORDERS.ORDERS_listener_task",
    ]
    assert template.name == "pizza" and template.root_process_dag.name == "ORDERS"


# Linking and reuse -----------------------------------------------------------------------------


def test_build_and_link_tasks_returns_the_head_linked_in_order() -> None:
    head = H.build_and_link_tasks([_ex("a"), _ex("b"), _ex("c")])
    assert _names(head) == ["a_executor_task", "b_executor_task", "c_executor_task"]
    assert all(len(t.next) <= 1 for t in _chain(head))


def _chain(head: Any) -> list[Any]:
    out = []
    while head is not None:
        out.append(head)
        head = head.next[0] if head.next else None
    return out


def test_build_and_link_tasks_mixes_builders_and_built_templates_without_mutating_them() -> None:
    built_b = _ex("b").build()
    head = H.build_and_link_tasks([_ex("a"), built_b, _ex("c")])
    assert _names(head) == ["a_executor_task", "b_executor_task", "c_executor_task"]
    assert built_b.next == []  # the given template was copied, not changed


def test_linking_the_same_builders_twice_does_not_duplicate_successors() -> None:
    a, b, c = _ex("a"), _ex("b"), _ex("c")
    first = H.build_and_link_tasks([a, b, c])
    second = H.build_and_link_tasks([a, b, c])
    for head in (first, second):
        assert _names(head) == ["a_executor_task", "b_executor_task", "c_executor_task"]
        assert [len(t.next) for t in _chain(head)] == [1, 1, 0]
    assert a.build().next == []  # the builder itself was not linked

    p1 = H.generic_process_builder(process_name="P1", root_task=_ex("x"))
    p2 = H.generic_process_builder(process_name="P2", root_task=_ex("y"))
    for _ in range(2):
        head = H.build_and_link_processes([p1, p2])
        assert _names(head) == ["P1", "P2"] and len(head.next) == 1
    assert p1.build().next == []


def test_build_and_link_processes_returns_the_head_linked_in_order() -> None:
    p3 = H.generic_process_builder(process_name="P3", root_task=_ex("z")).build()
    head = H.build_and_link_processes(
        [
            H.generic_process_builder(process_name="P1", root_task=_ex("x")),
            H.generic_process_builder(process_name="P2", root_task=_ex("y")),
            p3,
        ]
    )
    assert isinstance(head, ProcessTemplate)
    assert _names(head) == ["P1", "P2", "P3"]
    assert p3.next == []


def test_a_builder_built_twice_gives_equal_independent_templates() -> None:
    builder = _ex("a").set_next(_ex("b").build())
    one, two = builder.build(), builder.build()
    assert one is not two and one.next == two.next and _names(one) == _names(two)
    builder.set_next(_ex("c").build())
    assert len(one.next) == 1  # built earlier: not affected by later builder changes
    process = H.generic_process_builder(process_name="P", root_task=_ex("a"))
    t1 = H.generic_template(template_name="w1", root_process=process)
    t2 = H.generic_template(template_name="w2", root_process=process)
    n1 = instantiate(t1.spec, "i1", {}, now=T0).nodes
    n2 = instantiate(t2.spec, "i2", {}, now=T0).nodes
    assert len(n1) == len(n2) == 3


def test_template_version_is_a_content_hash() -> None:
    def build(name: str) -> Any:
        return H.generic_template(
            template_name="w", root_process=H.generic_process_builder(process_name="P", root_task=_ex(name))
        )

    assert build("a").version == build("a").version
    assert build("a").version != build("b").version


# Parallel, dynamic and monitored builders -------------------------------------------------------


def test_parallel_task_builder_children_operator_and_next() -> None:
    template = _ex("child").build()
    builder = ParallelCompositeTaskTemplateBuilder(None, 3, template)
    builder.add_parallel_task(_ex("extra"))
    builder.set_task_operator(TaskOperator.ATLEAST_ONE)
    builder.set_name("fan")
    builder.set_next(_ex("after").build())
    built = builder.build()
    assert isinstance(built, ParallelTaskTemplate)
    assert [c.name for c in built.children] == ["child_executor_task"] * 3 + ["extra_executor_task"]
    assert built.operator is TaskOperator.ATLEAST_ONE and [n.name for n in built.next] == [
        "after_executor_task"
    ]
    inst = instantiate(
        H.generic_template(
            template_name="w", root_process=H.generic_process_builder(process_name="P", root_task=built)
        ).spec,
        "i",
        {},
        now=T0,
    )
    fan = next(n for n in inst.nodes.values() if n.name == "w.P.fan")
    assert len(fan.children) == 4 and len(set(fan.children)) == 4  # one node per child
    assert all(inst.nodes[c].parent == fan.id for c in fan.children)


def test_generic_parallel_task_builder() -> None:
    built = H.generic_parallel_task_builder(
        name="fan", tasks=[_ex("a"), _ex("b").build()], operator=TaskOperator.JOIN_ALL
    ).build()
    assert isinstance(built, ParallelTaskTemplate)
    assert [c.name for c in built.children] == ["a_executor_task", "b_executor_task"]
    assert built.operator is TaskOperator.JOIN_ALL and built.name == "fan"


def test_generic_parallel_process_builder_honours_the_operator() -> None:
    children = [
        H.generic_process_builder(process_name="A", root_task=_ex("a")),
        H.generic_process_builder(process_name="B", root_task=_ex("b")).build(),
    ]
    built = H.generic_parallel_process_builder(
        name="PP", processes=children, operator=TaskOperator.ATLEAST_ONE
    ).build()
    assert isinstance(built, ParallelProcessTemplate)
    assert [c.name for c in built.children] == ["A", "B"] and built.operator is TaskOperator.ATLEAST_ONE
    assert (
        H.generic_parallel_process_builder(name="PP", processes=[]).build().operator is TaskOperator.JOIN_ALL
    )  # type: ignore[union-attr]


def test_dynamic_process_builder() -> None:
    static = H.generic_process_builder(process_name="S", root_task=_ex("s")).build()
    builder = H.generic_dynamic_process_builder(name="D", max_run_duration=30)
    builder.set_next_process(static)
    built = builder.build()
    assert isinstance(built, DynamicProcessTemplate)
    assert built.name == "D" and built.max_run_duration == 30 and built.next == [static]


def test_process_builder_options() -> None:
    built = (
        H.generic_process_builder(process_name="P", root_task=_ex("a"), max_run_duration=12)
        .set_continue_on_failure()
        .build()
    )
    assert isinstance(built, ProcessTemplate)
    assert built.max_run_duration == 12.0 and built.continue_on_failure and built.monitor_type_name is None


def test_monitored_process_builder_records_the_monitoring_task_type() -> None:
    class Custom(MonitoringTask[Any, Any]):
        pass

    class CustomMonitored(MonitoredProcessTemplateDAGInstance[Any, Any]):
        def get_monitoring_task_type(self) -> type[MonitoringTask[Any, Any]]:
            return Custom

    class Broken(MonitoredProcessTemplateDAGInstance[Any, Any]):
        def get_monitoring_task_type(self) -> Any:
            return Exec

    default = H.generic_process_builder(
        process_name="M", root_task=_ex("a"), process_type=MonitoredProcessTemplateDAGInstance
    ).build()
    custom = H.generic_process_builder(
        process_name="M", root_task=_ex("a"), process_type=CustomMonitored
    ).build()
    assert isinstance(default, ProcessTemplate) and default.monitor_type_name == "DefaultMonitoringTask"
    assert isinstance(custom, ProcessTemplate) and custom.monitor_type_name == "Custom"
    with pytest.raises(InvalidTaskType):
        H.generic_process_builder(process_name="M", root_task=_ex("a"), process_type=Broken).build()


# Failure-handling options -----------------------------------------------------------------------


def test_retry_policy_from_the_class_or_the_builder_and_timeouts() -> None:
    class Flaky(ExecutorTask[Any, Any]):
        retry_policy = RetryPolicy(max_attempts=4)

    from_class = H.generic_executor_task_builder(task_type=Flaky, name="f").build()
    assert isinstance(from_class, TaskTemplate) and from_class.retry == RetryPolicy(max_attempts=4)
    override = RetryPolicy(max_attempts=2, initial_interval=0.5)
    from_builder = (
        H.generic_executor_task_builder(task_type=Flaky, name="f").set_retry_policy(override).build()
    )
    assert isinstance(from_builder, TaskTemplate) and from_builder.retry == override
    plain = _ex("p").set_timeout(30, status="SKIPPED").set_continue_on_failure().build()
    assert isinstance(plain, TaskTemplate)
    assert (plain.retry, plain.timeout, plain.timeout_status, plain.continue_on_failure) == (
        None,
        30,
        "SKIPPED",
        True,
    )


def test_interval_builder_accepts_subclasses_of_interval_task() -> None:
    class Sub(IntervalTask[Any, Any]):
        pass

    built = IntervalTaskTemplateBuilder(None).set_type(Sub).set_name("s").build()
    assert isinstance(built, TaskTemplate) and built.kind is Kind.INTERVAL


def test_get_given_process_finds_processes_anywhere_in_the_template() -> None:
    """Dagger's lookup followed only the first successor; ours reaches parallel children too."""
    helper = DAGBuilderHelper(None)
    parallel = ParallelCompositeProcessTemplateDagBuilder(None)
    parallel.set_name("Both")
    parallel.set_parallel_process_templates(_process("B"))
    parallel.set_parallel_process_templates(_process("C"))
    root = helper.build_and_link_processes([_process("A"), parallel, _process("D")])
    template = helper.generic_template(template_name="W", root_process=root)
    for name in ("A", "Both", "B", "C", "D"):
        found = template.get_given_process(name)
        assert found is not None and found.name == name  # type: ignore[union-attr]
    assert template.get_given_process("a_executor_task") is None  # tasks are not processes
    assert template.get_given_process("missing") is None
