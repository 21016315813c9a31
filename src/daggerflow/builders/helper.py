"""``DAGBuilderHelper``: Dagger's one-call builders (``generic_*``) over the fluent ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidTaskType
from ..model.status import TaskOperator
from ..model.template import (
    ProcessLike,
    TaskLike,
)
from ..tasks import (
    DefaultProcessTemplateDAGInstance,
    DefaultTemplateDAGInstance,
)
from ..templates import ITemplateDAG
from .processes import (
    DefaultTemplateBuilder,
    DynamicProcessTemplateDagBuilder,
    IProcessTemplateDAGBuilder,
    ParallelCompositeProcessTemplateDagBuilder,
    ProcessTemplateDagBuilder,
    _with_next,
)
from .tasks import (
    BuilderHost,
    DecisionTaskTemplateBuilder,
    DefaultTaskTemplateBuilder,
    IntervalTaskTemplateBuilder,
    KafkaCommandTaskTemplateBuilder,
    KafkaListenerTaskTemplateBuilder,
    ParallelCompositeTaskTemplateBuilder,
    TaskTemplateBuilder,
    TriggerTaskTemplateBuilder,
)


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
        search_attributes: Sequence[str] = (),
    ) -> ITemplateDAG:
        """A workflow template; ``search_attributes`` names the runtime parameters its
        instances are indexed by for search (its listeners' correlatable keys always are)."""
        return (
            DefaultTemplateBuilder(self.app)
            .set_name(template_name)
            .set_type(template_type)
            .set_root(root_process)
            .set_search_attributes(search_attributes)
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
