"""What an application registers with its engine, in Dagger's names: templates (the
``@Dagger.register_template`` decorator), process templates, task types, listeners, agents
and topics. A part of the facade (``Dagger`` inherits it); the bookkeeping itself is the
``Registry``, and a runtime that is running is told when its subscriptions change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigurationError
from .model.template import ProcessLike
from .pipeline.ingress import AgentSpec
from .pipeline.ports import Runtime
from .registry import Registry
from .tasks import ITask
from .templates import ITemplateDAG
from .topics import Topic, Topics

F = TypeVar("F", bound=Callable[..., Any])


class _either_class_or_instance:
    """``@Dagger.register_template(name)`` (Dagger's README) and
    ``@engine.register_template(name)`` both work: on the class, the engine is the one the
    template was built with."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return functools.partial(self.func, obj)


class Registration:
    """Dagger's registration methods (``add_template``, which binds a template to the engine,
    is the facade's own)."""

    _registry: Registry
    add_template: Callable[[str, ITemplateDAG], None]  # the facade's: it binds the template
    topics: Topics
    template_dags: dict[str, ITemplateDAG]
    process_templates: dict[str, ProcessLike]
    runtime: Runtime | None


    @_either_class_or_instance
    def register_template(self: Registration | None, template_name: str) -> Callable[[F], F]:
        """Decorator: call ``fn(template_name)`` now and register the template it returns."""

        def decorator(fn: F) -> F:
            template = fn(template_name)
            if not isinstance(template, ITemplateDAG):
                raise TypeError(f"{fn.__name__} must return a template (DAGBuilderHelper.generic_template)")
            engine = self if self is not None else template.app
            if not isinstance(engine, Registration):
                raise ConfigurationError(
                    f"template {template_name!r} is not bound to an engine: build it with "
                    "DAGBuilderHelper(engine) or use @engine.register_template"
                )
            engine.add_template(template_name, template)
            return fn

        return decorator

    @_either_class_or_instance
    def register_process_template(self: Registration | None, process_template_name: str) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            built = fn(process_template_name)
            process = built.build() if hasattr(built, "build") else built
            engine = self if self is not None else getattr(built, "app", None)
            if not isinstance(engine, Registration):
                raise ConfigurationError(f"process template {process_template_name!r} is not bound to an engine")
            engine.register_task_types_of(process)
            engine.process_templates[process_template_name] = process
            return fn

        return decorator

    def get_template(self, template_name: str) -> ITemplateDAG:
        return self._registry.template(template_name)

    def register_task_type(self, cls: type) -> str:
        return self._registry.register_task_type(cls)

    def register_task_types_of(self, template: Any) -> None:
        """Register every task class a template uses, and its listener topics."""
        if self._registry.register_task_types_of(template):
            self._subscriptions_changed()

    def task_class(self, type_name: str | None) -> type[ITask[Any, Any]]:
        return self._registry.task_class(type_name)

    def create_topic(
        self,
        topic_name: str,
        key_type: Any = None,
        value_type: Any = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Topic:
        return self.topics[topic_name]

    def add_topic(self, topic_name: str, topic: Topic) -> None:
        self.topics[topic_name] = topic

    def get_topic(self, topic_name: str) -> Topic:
        return self.topics[topic_name]

    def add_listener(self, topic: str, cls: type) -> None:
        if self._registry.add_listener(topic, cls):
            self._subscriptions_changed()

    def agent(self, topic: str | Topic, *, name: str | None = None, concurrency: int = 1) -> Callable[[F], F]:
        """Subscribe ``async def handler(value)`` to a topic. What it sends is committed
        atomically with its input position."""
        topic_name = topic.name if isinstance(topic, Topic) else topic

        def decorator(fn: F) -> F:
            self.create_topic(topic_name)
            spec = AgentSpec(topic_name, fn, name or f"{fn.__module__}.{fn.__qualname__}", concurrency)
            self._registry.agents.append(spec)
            self._subscriptions_changed()
            return fn

        return decorator

    def _subscriptions_changed(self) -> None:
        if self.runtime is not None:
            self.runtime.subscriptions_changed()
