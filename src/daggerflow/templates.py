"""Workflow templates bound to an engine: ``ITemplateDAG`` and ``create_instance``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .model.template import (
    DynamicProcessTemplate,
    Overrides,
    ParallelProcessTemplate,
    ProcessLike,
    ProcessTemplate,
    WorkflowSpec,
    walk_templates,
)

if TYPE_CHECKING:
    from .tasks import ITemplateDAGInstance


class InstanceFactory(Protocol):
    """What a template calls on its engine (``Dagger`` is one): create instances, and
    register the task classes of processes given at creation."""

    async def create_instance(
        self,
        template: ITemplateDAG,
        instance_id: Any,
        runtime_parameters: dict[str, Any],
        *,
        partition_key_lookup: str | None = None,
        repartition: bool = False,
        seed: random.Random | int | str | None = None,
        submit_task: bool = False,
        overrides: Overrides | None = None,
    ) -> ITemplateDAGInstance[Any, Any]: ...

    async def stop_instance(self, instance_id: Any) -> ITemplateDAGInstance[Any, Any] | None: ...

    def register_task_types_of(self, template: Any) -> None: ...


def _as_process(p: Any) -> ProcessLike:
    build = getattr(p, "build", None)
    return build() if callable(build) else p  # type: ignore[no-any-return]


class ITemplateDAG:
    """A registered workflow definition. Immutable: per-instance variation goes through
    ``create_instance(dynamic_processes=..., parallel_processes=...)``."""

    def __init__(self, spec: WorkflowSpec, app: InstanceFactory | None, template_type: type | None = None) -> None:
        self.spec = spec
        self.app = app
        self.template_type = template_type
        self._defaults = Overrides(dynamic={}, parallel={})

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version()

    @property
    def search_attributes(self) -> tuple[str, ...]:
        """The runtime parameters declared searchable (an index, see ``WorkflowSpec``)."""
        return self.spec.search_attributes

    @property
    def root_process_dag(self) -> ProcessLike:
        return self.spec.root_process

    async def create_instance(
        self,
        id: Any,
        partition_key_lookup: str | None = None,
        *,
        repartition: bool = False,
        seed: random.Random | int | str | None = None,
        submit_task: bool = False,
        dynamic_processes: dict[str, Sequence[Any]] | None = None,
        parallel_processes: dict[str, Sequence[Any]] | None = None,
        **runtime_parameters: Any,
    ) -> ITemplateDAGInstance[Any, Any]:
        """Create (and with ``submit_task`` start) an instance; returns once it is durable.

        Re-creating an existing id returns the existing instance unchanged (idempotent).
        """
        if self.app is None:
            raise RuntimeError(f"template {self.name!r} is not bound to an engine")
        overrides = self.overrides(dynamic_processes, parallel_processes)
        return await self.app.create_instance(
            self,
            id,  # checked (and an int made text) by the engine, which knows the id rule
            runtime_parameters,
            partition_key_lookup=partition_key_lookup,
            repartition=repartition,
            seed=seed,
            submit_task=submit_task,
            overrides=overrides,
        )

    def overrides(
        self,
        dynamic_processes: dict[str, Sequence[Any]] | None = None,
        parallel_processes: dict[str, Sequence[Any]] | None = None,
    ) -> Overrides:
        """The processes an instance gets: the template's defaults (the setters below),
        with those given at creation in their place."""
        return Overrides(
            dynamic={
                **self._defaults.dynamic,
                **{k: [_as_process(p) for p in v] for k, v in (dynamic_processes or {}).items()},
            },
            parallel={
                **self._defaults.parallel,
                **{k: [_as_process(p) for p in v] for k, v in (parallel_processes or {}).items()},
            },
        )

    # Dagger's runtime setters. They set the default for instances created afterwards; the
    # process builders are built once here, so nothing is duplicated per instance (§10.35).

    def set_dynamic_builders_for_process_template(
        self, name: str, process_template_builders: Sequence[Any]
    ) -> None:
        processes = [_as_process(p) for p in process_template_builders]
        self._register(processes)
        self._defaults.dynamic = {**self._defaults.dynamic, name: processes}

    def set_parallel_process_template_dags_for_a_composite_process(
        self, name: str, parallel_process_templates: Sequence[Any]
    ) -> None:
        processes = [_as_process(p) for p in parallel_process_templates]
        self._register(processes)
        self._defaults.parallel = {**self._defaults.parallel, name: processes}

    def set_given_num_of_parallel_processes_for_a_composite_process(
        self, no_of_processes: int, composite_process_name: str, parallel_template_builder: Any
    ) -> None:
        process = _as_process(parallel_template_builder)
        self.set_parallel_process_template_dags_for_a_composite_process(
            composite_process_name, [process] * no_of_processes
        )

    def get_given_process(self, process_name: str) -> ProcessLike | None:
        for t in walk_templates(self.spec.root_process):
            if isinstance(t, (ProcessTemplate, ParallelProcessTemplate, DynamicProcessTemplate)):
                if t.name == process_name:
                    return t
        return None

    def _register(self, processes: Sequence[ProcessLike]) -> None:
        if self.app is not None:
            for p in processes:
                self.app.register_task_types_of(p)

    def __repr__(self) -> str:
        return f"<ITemplateDAG {self.name} version={self.version}>"


TemplateDAG = ITemplateDAG
__all__ = ["DynamicProcessTemplate", "ITemplateDAG", "ProcessTemplate", "TemplateDAG"]
