"""Process and workflow builders: chains of tasks into processes, processes into a template.
``build()`` copies what it links, so a builder reused for several templates never
duplicates nodes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidTaskType
from ..model.status import TaskOperator
from ..model.template import (
    DynamicProcessTemplate,
    ParallelProcessTemplate,
    ProcessLike,
    ProcessTemplate,
    TaskLike,
    WorkflowSpec,
    check_search_attributes,
)
from ..tasks import (
    DefaultProcessTemplateDAGInstance,
    DefaultTemplateDAGInstance,
    IMonitoredTask,
    MonitoringTask,
    type_name_of,
)
from ..templates import ITemplateDAG
from .tasks import BuilderHost, TaskTemplateBuilder, _built_task

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
        self._search: tuple[str, ...] = ()

    def set_name(self, name: str) -> DefaultTemplateBuilder:
        self._name = name
        return self

    def set_type(self, template_type: type) -> DefaultTemplateBuilder:
        self._type = template_type
        return self

    def set_root(self, process_template: ProcessLike | IProcessTemplateDAGBuilder) -> DefaultTemplateBuilder:
        self._root = _built_process(process_template)
        return self

    def set_search_attributes(self, names: Sequence[str]) -> DefaultTemplateBuilder:
        """The runtime parameters instances are found by (``param.NAME=VALUE``) through an
        index; the listeners' correlatable keys are searchable without being named here."""
        self._search = check_search_attributes(names)
        return self

    def build(self) -> ITemplateDAG:
        if self._name is None or self._root is None:
            raise InvalidTaskType("a workflow template needs set_name() and set_root()")
        spec = WorkflowSpec(self._name, self._root, search_attributes=self._search)
        return ITemplateDAG(spec, self.app, self._type)
