"""Task builders: the fluent ``*TaskTemplateBuilder`` classes, each producing an immutable
``TaskTemplate`` (``model.template``)."""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import InvalidTaskType
from ..model.instance import RetryPolicy
from ..model.status import TaskOperator
from ..model.template import (
    ParallelTaskTemplate,
    TaskLike,
    TaskTemplate,
)
from ..tasks import (
    DecisionTask,
    IntervalTask,
    KafkaCommandTask,
    KafkaListenerTask,
    SensorTask,
    TriggerTask,
    kind_of,
    type_name_of,
)
from ..templates import InstanceFactory


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
