"""Fluent builders and ``DAGBuilderHelper``, with Dagger's names.

Builders produce immutable template objects (``model.template``). ``build()`` copies what
it links, so a builder reused for several templates (or instances) never duplicates nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import InvalidTaskType
from .model.instance import RetryPolicy
from .model.status import TaskOperator
from .model.template import (
    DynamicProcessTemplate,
    ParallelProcessTemplate,
    ParallelTaskTemplate,
    ProcessLike,
    ProcessTemplate,
    TaskLike,
    TaskTemplate,
    WorkflowSpec,
)
from .tasks import (
    DecisionTask,
    DefaultProcessTemplateDAGInstance,
    DefaultTemplateDAGInstance,
    ExecutorTask,
    IMonitoredTask,
    IntervalTask,
    KafkaCommandTask,
    KafkaListenerTask,
    MonitoringTask,
    SensorTask,
    TriggerTask,
    kind_of,
    type_name_of,
)
from .templates import InstanceFactory, ITemplateDAG


class BuilderHost(InstanceFactory, Protocol):
    """What the builders register on their engine as they build (``Dagger`` is one):
    listener classes, task types, topics."""

    def add_listener(self, topic: str, cls: type) -> None: ...

    def register_task_type(self, cls: type) -> str: ...

    def create_topic(self, topic_name: str) -> Any: ...


# Task builders ----------------------------------------------------------------------------


class TaskTemplateBuilder:
    _required_base: type[Any] | None = None
    _forbidden: tuple[type, ...] = ()

    def __init__(self, app: BuilderHost | None = None) -> None:
        self.app = app
        self._name = "task"
        self._type: type | None = None
        self._next: list[TaskLike] = []
        self._allow_skip_to = False
        self._reprocess_on_message = False
        self._retry: RetryPolicy | None = None
        self._continue_on_failure = False
        self._timeout: float | None = None
        self._timeout_status = "FAILURE"

    def set_name(self, name: str) -> TaskTemplateBuilder:
        self._name = name
        return self

    def set_type(self, task_type: type) -> TaskTemplateBuilder:
        kind_of(task_type)
        if self._required_base is not None and not issubclass(task_type, self._required_base):
            raise InvalidTaskType(
                f"{type(self).__name__} needs a subclass of {self._required_base.__name__}, "
                f"got {task_type.__name__}"
            )
        if self._forbidden and issubclass(task_type, self._forbidden):
            raise InvalidTaskType(
                f"{type(self).__name__} does not take {task_type.__name__}: use the "
                "command or listener builder for Kafka task types"
            )
        self._type = task_type
        return self

    def set_next(self, task_template: TaskLike) -> TaskTemplateBuilder:
        self._next.append(task_template)
        return self

    def set_allow_skip_to(self, allow_skip_to: bool) -> TaskTemplateBuilder:
        self._allow_skip_to = allow_skip_to
        return self

    def set_reprocess_on_message(self, reprocess_on_message: bool) -> TaskTemplateBuilder:
        self._reprocess_on_message = reprocess_on_message
        return self

    def set_retry_policy(self, policy: RetryPolicy | None) -> TaskTemplateBuilder:
        self._retry = policy
        return self

    def set_continue_on_failure(self, flag: bool = True) -> TaskTemplateBuilder:
        """A FAILURE of this task does not fail its process (Dagger's old behaviour)."""
        self._continue_on_failure = flag
        return self

    def set_timeout(self, seconds: float | None, *, status: str = "FAILURE") -> TaskTemplateBuilder:
        """End the task with ``status`` (FAILURE or SKIPPED) if still executing after
        ``seconds``: a listener that got no message, an executor that hangs."""
        if status not in ("FAILURE", "SKIPPED"):
            raise ValueError("timeout status must be FAILURE or SKIPPED")
        self._timeout = seconds
        self._timeout_status = status
        return self

    def _template(self, **extra: Any) -> TaskTemplate:
        if self._type is None:
            raise InvalidTaskType(f"{type(self).__name__}: set_type() was not called")
        retry = self._retry or getattr(self._type, "retry_policy", None)
        return TaskTemplate(
            kind=kind_of(self._type),
            name=self._name,
            task_class=self._type,
            type_name=type_name_of(self._type),
            next=list(self._next),
            allow_skip_to=self._allow_skip_to,
            reprocess_on_message=self._reprocess_on_message,
            retry=retry,
            continue_on_failure=self._continue_on_failure,
            timeout=self._timeout,
            timeout_status=self._timeout_status,
            **extra,
        )

    def build(self) -> TaskLike:
        return self._template()


class DefaultTaskTemplateBuilder(TaskTemplateBuilder):
    _forbidden = (KafkaCommandTask, KafkaListenerTask)


class KafkaCommandTaskTemplateBuilder(TaskTemplateBuilder):
    _required_base: type[Any] | None = KafkaCommandTask

    def __init__(self, app: BuilderHost | None = None) -> None:
        super().__init__(app)
        self._topic: str | None = None

    def set_topic(self, topic: Any) -> KafkaCommandTaskTemplateBuilder:
        self._topic = topic if isinstance(topic, str) else str(getattr(topic, "name", topic))
        return self

    def build(self) -> TaskLike:
        if self._topic is None:
            raise InvalidTaskType("a command task needs set_topic()")
        return self._template(topic=self._topic)


class KafkaListenerTaskTemplateBuilder(KafkaCommandTaskTemplateBuilder):
    _required_base: type[Any] | None = KafkaListenerTask

    def __init__(self, app: BuilderHost | None = None) -> None:
        super().__init__(app)
        self._concurrency = 1

    def set_concurrency(self, concurrency: int) -> KafkaListenerTaskTemplateBuilder:
        self._concurrency = concurrency
        return self

    def build(self) -> TaskLike:
        template = super().build()
        assert isinstance(template, TaskTemplate)
        if self.app is not None:
            # One consumer per topic, however many listener templates use it (§10.54).
            self.app.add_listener(template.topic or "", template.task_class)
        return template


class SensorTaskTemplateBuilder(KafkaListenerTaskTemplateBuilder):
    _required_base: type[Any] | None = SensorTask


class DecisionTaskTemplateBuilder(TaskTemplateBuilder):
    _required_base = DecisionTask


class TriggerTaskTemplateBuilder(TaskTemplateBuilder):
    _required_base = TriggerTask

    def __init__(self, app: BuilderHost | None = None) -> None:
        super().__init__(app)
        self._time_to_execute_key: str | None = None

    def set_time_to_execute_lookup_key(self, key: str) -> TriggerTaskTemplateBuilder:
        self._time_to_execute_key = key
        return self

    def build(self) -> TaskLike:
        return self._template(time_to_execute_key=self._time_to_execute_key)


class IntervalTaskTemplateBuilder(TriggerTaskTemplateBuilder):
    _required_base = IntervalTask

    def __init__(self, app: BuilderHost | None = None) -> None:
        super().__init__(app)
        self._force_key: str | None = None
        self._period_key: str | None = None

    def set_time_to_force_complete_lookup_key(self, key: str) -> IntervalTaskTemplateBuilder:
        self._force_key = key
        return self

    def set_interval_execute_period_lookup_key(self, key: str) -> IntervalTaskTemplateBuilder:
        self._period_key = key
        return self

    def build(self) -> TaskLike:
        return self._template(
            time_to_execute_key=self._time_to_execute_key,
            time_to_force_complete_key=self._force_key,
            interval_execute_period_key=self._period_key,
        )


class ParallelCompositeTaskTemplateBuilder(TaskTemplateBuilder):
    """Children: ``task_template`` repeated ``no_of_parallel_tasks`` times, plus added ones."""

    def __init__(
        self,
        app: BuilderHost | None = None,
        no_of_parallel_tasks: int = 0,
        task_template: TaskLike | None = None,
    ) -> None:
        super().__init__(app)
        self._children: list[TaskLike] = (
            [task_template] * no_of_parallel_tasks if task_template is not None else []
        )
        self._operator = TaskOperator.JOIN_ALL
        self._name = "parallel"

    def add_parallel_task(
        self, task_template: TaskLike | TaskTemplateBuilder
    ) -> ParallelCompositeTaskTemplateBuilder:
        self._children.append(_built_task(task_template))
        return self

    def set_task_operator(self, operator: TaskOperator) -> ParallelCompositeTaskTemplateBuilder:
        self._operator = TaskOperator(operator)
        return self

    def build(self) -> TaskLike:
        return ParallelTaskTemplate(
            name=self._name,
            children=list(self._children),
            operator=self._operator,
            next=list(self._next),
            continue_on_failure=self._continue_on_failure,
        )


def _built_task(t: TaskLike | TaskTemplateBuilder) -> TaskLike:
    return t.build() if isinstance(t, TaskTemplateBuilder) else t


# Process and workflow builders -----------------------------------------------------------


class IProcessTemplateDAGBuilder:
    def __init__(self, app: BuilderHost | None = None) -> None:
        self.app = app
        self._name = "process"
        self._next: list[ProcessLike] = []
        self._max_run_duration = 0.0
        self._continue_on_failure = False

    def set_name(self, name: str) -> IProcessTemplateDAGBuilder:
        self._name = name
        return self

    def set_next_process(self, process_template: ProcessLike) -> IProcessTemplateDAGBuilder:
        self._next.append(process_template)
        return self

    def set_max_run_duration(self, seconds: float) -> IProcessTemplateDAGBuilder:
        self._max_run_duration = float(seconds)
        return self

    def set_continue_on_failure(self, flag: bool = True) -> IProcessTemplateDAGBuilder:
        self._continue_on_failure = flag
        return self

    def build(self) -> ProcessLike:
        raise NotImplementedError(f"{type(self).__name__} is an interface: use ProcessTemplateDagBuilder")


class ProcessTemplateDagBuilder(IProcessTemplateDAGBuilder):
    def __init__(self, app: BuilderHost | None = None) -> None:
        super().__init__(app)
        self._root: TaskLike | None = None
        self._type: type = DefaultProcessTemplateDAGInstance

    def set_type(self, process_type: type) -> ProcessTemplateDagBuilder:
        self._type = process_type
        return self

    def set_root_task(self, task_template: TaskLike | TaskTemplateBuilder) -> ProcessTemplateDagBuilder:
        self._root = _built_task(task_template)
        return self

    def build(self) -> ProcessLike:
        if self._root is None:
            raise InvalidTaskType(f"process {self._name!r} has no root task")
        monitor: str | None = None
        if isinstance(self._type, type) and issubclass(self._type, IMonitoredTask):
            monitor_cls = self._type().get_monitoring_task_type()
            if not issubclass(monitor_cls, MonitoringTask):
                raise InvalidTaskType("get_monitoring_task_type() must return a MonitoringTask subclass")
            monitor = type_name_of(monitor_cls)
            if self.app is not None:
                self.app.register_task_type(monitor_cls)
        return ProcessTemplate(
            name=self._name,
            root_task=self._root,
            next=list(self._next),
            max_run_duration=self._max_run_duration,
            monitor_type_name=monitor,
            continue_on_failure=self._continue_on_failure,
        )


class DynamicProcessTemplateDagBuilder(IProcessTemplateDAGBuilder):
    def set_type(self, process_type: type) -> DynamicProcessTemplateDagBuilder:
        raise NotImplementedError("a dynamic process has no type of its own")

    def set_root_task(self, task_template: Any) -> DynamicProcessTemplateDagBuilder:
        raise NotImplementedError("a dynamic process is expanded per instance; it has no root task")

    def build(self) -> ProcessLike:
        return DynamicProcessTemplate(
            name=self._name, next=list(self._next), max_run_duration=self._max_run_duration
        )


class ParallelCompositeProcessTemplateDagBuilder(IProcessTemplateDAGBuilder):
    def __init__(self, app: BuilderHost | None = None) -> None:
        super().__init__(app)
        self._children: list[ProcessLike] = []
        self._operator = TaskOperator.JOIN_ALL

    def set_type(self, process_type: type) -> ParallelCompositeProcessTemplateDagBuilder:
        return self

    def set_parallel_process_templates(
        self, process_template: ProcessLike | IProcessTemplateDAGBuilder
    ) -> ParallelCompositeProcessTemplateDagBuilder:
        self._children.append(_built_process(process_template))
        return self

    def set_parallel_operator_type(
        self, operator: TaskOperator
    ) -> ParallelCompositeProcessTemplateDagBuilder:
        self._operator = TaskOperator(operator)  # honoured (Dagger ignored it, §10.34)
        return self

    def set_root_task(self, task_template: Any) -> ParallelCompositeProcessTemplateDagBuilder:
        raise NotImplementedError("a parallel process has children, not a root task")

    def set_max_run_duration(self, seconds: float) -> ParallelCompositeProcessTemplateDagBuilder:
        raise NotImplementedError("max_run_duration is set on the child processes")

    def build(self) -> ProcessLike:
        return ParallelProcessTemplate(
            name=self._name,
            children=list(self._children),
            operator=self._operator,
            next=list(self._next),
            continue_on_failure=self._continue_on_failure,
        )


def _built_process(p: ProcessLike | IProcessTemplateDAGBuilder) -> ProcessLike:
    return p.build() if isinstance(p, IProcessTemplateDAGBuilder) else p


def _with_next(t: ProcessLike, successor: ProcessLike) -> ProcessLike:
    """A copy of a built template with one more successor: built templates never change."""
    return dataclasses.replace(t, next=[*t.next, successor])  # type: ignore[arg-type]


class DefaultTemplateBuilder:
    def __init__(self, app: BuilderHost | None = None) -> None:
        self.app = app
        self._name: str | None = None
        self._root: ProcessLike | None = None
        self._type: type = DefaultTemplateDAGInstance

    def set_name(self, name: str) -> DefaultTemplateBuilder:
        self._name = name
        return self

    def set_type(self, template_type: type) -> DefaultTemplateBuilder:
        self._type = template_type
        return self

    def set_root(self, process_template: ProcessLike | IProcessTemplateDAGBuilder) -> DefaultTemplateBuilder:
        self._root = _built_process(process_template)
        return self

    def build(self) -> ITemplateDAG:
        if self._name is None or self._root is None:
            raise InvalidTaskType("a workflow template needs set_name() and set_root()")
        return ITemplateDAG(WorkflowSpec(self._name, self._root), self.app, self._type)


class DAGBuilderHelper:
    """Dagger's convenience façade over the builders."""

    def __init__(self, dagger_app: BuilderHost | None = None) -> None:
        self.app = dagger_app

    def build_and_link_tasks(self, tasks_builder_list: Sequence[TaskTemplateBuilder | TaskLike]) -> TaskLike:
        if not tasks_builder_list:
            raise InvalidTaskType("build_and_link_tasks needs at least one task")
        # Link copies of the built templates: the builders are not changed, so linking
        # the same builders again does not duplicate successors.
        built: TaskLike | None = None
        for item in reversed(tasks_builder_list):
            template = item.build() if isinstance(item, TaskTemplateBuilder) else item
            built = template if built is None else dataclasses.replace(template, next=[*template.next, built])
        assert built is not None
        return built

    def build_and_link_processes(
        self, process_builder_list: Sequence[IProcessTemplateDAGBuilder | ProcessLike]
    ) -> ProcessLike:
        if not process_builder_list:
            raise InvalidTaskType("build_and_link_processes needs at least one process")
        built: ProcessLike | None = None
        for item in reversed(process_builder_list):
            template = item.build() if isinstance(item, IProcessTemplateDAGBuilder) else item
            built = template if built is None else _with_next(template, built)
        assert built is not None
        return built

    def generic_template(
        self,
        *,
        template_name: str,
        root_process: ProcessLike | IProcessTemplateDAGBuilder,
        template_type: type = DefaultTemplateDAGInstance,
    ) -> ITemplateDAG:
        return (
            DefaultTemplateBuilder(self.app)
            .set_name(template_name)
            .set_type(template_type)
            .set_root(root_process)
            .build()
        )

    def generic_process_builder(
        self,
        *,
        process_name: str,
        root_task: TaskLike | TaskTemplateBuilder,
        process_type: type = DefaultProcessTemplateDAGInstance,
        max_run_duration: float = 0,
    ) -> ProcessTemplateDagBuilder:
        builder = ProcessTemplateDagBuilder(self.app)
        builder.set_name(process_name)
        builder.set_root_task(root_task)
        builder.set_type(process_type)
        builder.set_max_run_duration(max_run_duration)
        return builder

    def generic_dynamic_process_builder(
        self, *, name: str, max_run_duration: float = 0
    ) -> DynamicProcessTemplateDagBuilder:
        builder = DynamicProcessTemplateDagBuilder(self.app)
        builder.set_name(name)
        builder.set_max_run_duration(max_run_duration)
        return builder

    def generic_parallel_process_builder(
        self,
        *,
        name: str,
        processes: Sequence[ProcessLike | IProcessTemplateDAGBuilder],
        operator: TaskOperator = TaskOperator.JOIN_ALL,
    ) -> ParallelCompositeProcessTemplateDagBuilder:
        builder = ParallelCompositeProcessTemplateDagBuilder(self.app)
        builder.set_name(name)
        for p in processes:
            builder.set_parallel_process_templates(p)
        builder.set_parallel_operator_type(operator)
        return builder

    def generic_executor_task_builder(
        self, *, task_type: type, name: str, allow_skip_to: bool = False
    ) -> DefaultTaskTemplateBuilder:
        builder = DefaultTaskTemplateBuilder(self.app)
        builder.set_type(task_type)
        builder.set_name(f"{name}_executor_task")
        builder.set_allow_skip_to(allow_skip_to)
        return builder

    def generic_command_task_builder(
        self,
        *,
        topic: str,
        task_type: type,
        process_name: str,
        key_type: Any = None,
        value_type: Any = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> KafkaCommandTaskTemplateBuilder:
        if self.app is not None:
            self.app.create_topic(topic)
        builder = KafkaCommandTaskTemplateBuilder(self.app)
        builder.set_type(task_type)
        builder.set_name(f"{process_name}_command_task")
        builder.set_topic(topic)
        return builder

    def generic_listener_task_builder(
        self,
        *,
        topic: str,
        task_type: type,
        process_name: str,
        allow_skip_to: bool = False,
        concurrency: int = 1,
        reprocess_on_message: bool = False,
        key_type: Any = None,
        value_type: Any = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> KafkaListenerTaskTemplateBuilder:
        if self.app is not None:
            self.app.create_topic(topic)
        builder = KafkaListenerTaskTemplateBuilder(self.app)
        builder.set_type(task_type)
        builder.set_name(f"{process_name}_listener_task")
        builder.set_topic(topic)
        builder.set_allow_skip_to(allow_skip_to)
        builder.set_concurrency(concurrency)
        builder.set_reprocess_on_message(reprocess_on_message)
        return builder

    def generic_trigger_task_builder(
        self, *, task_type: type, name: str, time_to_execute_key: str, allow_skip_to: bool = False
    ) -> TriggerTaskTemplateBuilder:
        builder = TriggerTaskTemplateBuilder(self.app)
        builder.set_type(task_type)
        builder.set_name(name)
        builder.set_time_to_execute_lookup_key(time_to_execute_key)
        builder.set_allow_skip_to(allow_skip_to)
        return builder

    def generic_interval_task_builder(
        self,
        *,
        task_type: type,
        name: str,
        time_to_force_complete_key: str,
        interval_execute_period_key: str,
        time_to_execute_key: str | None = None,
    ) -> IntervalTaskTemplateBuilder:
        builder = IntervalTaskTemplateBuilder(self.app)
        builder.set_type(task_type)
        builder.set_name(name)
        builder.set_time_to_force_complete_lookup_key(time_to_force_complete_key)
        builder.set_interval_execute_period_lookup_key(interval_execute_period_key)
        if time_to_execute_key is not None:
            builder.set_time_to_execute_lookup_key(time_to_execute_key)
        return builder

    def generic_decision_task_builder(self, *, task_type: type, name: str) -> DecisionTaskTemplateBuilder:
        builder = DecisionTaskTemplateBuilder(self.app)
        builder.set_type(task_type)
        builder.set_name(name)
        return builder

    def generic_parallel_task_builder(
        self,
        *,
        name: str,
        tasks: Sequence[TaskLike | TaskTemplateBuilder],
        operator: TaskOperator = TaskOperator.JOIN_ALL,
    ) -> ParallelCompositeTaskTemplateBuilder:
        builder = ParallelCompositeTaskTemplateBuilder(self.app)
        builder.set_name(name)
        for t in tasks:
            builder.add_parallel_task(t)
        builder.set_task_operator(operator)
        return builder


__all__ = [
    "DAGBuilderHelper",
    "DecisionTaskTemplateBuilder",
    "DefaultTaskTemplateBuilder",
    "DefaultTemplateBuilder",
    "DynamicProcessTemplateDagBuilder",
    "ExecutorTask",
    "IProcessTemplateDAGBuilder",
    "IntervalTaskTemplateBuilder",
    "KafkaCommandTaskTemplateBuilder",
    "KafkaListenerTaskTemplateBuilder",
    "ParallelCompositeProcessTemplateDagBuilder",
    "ParallelCompositeTaskTemplateBuilder",
    "ProcessTemplateDagBuilder",
    "SensorTaskTemplateBuilder",
    "TaskTemplateBuilder",
    "TriggerTaskTemplateBuilder",
]
