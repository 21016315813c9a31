"""What an application registers with its engine: templates, task classes, listeners,
agents and topic names. Plain bookkeeping, read by the runtimes as their ``Subscriptions``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError, TemplateDoesNotExist
from .model.template import ProcessLike, TaskTemplate, walk_templates
from .pipeline.ingress import AgentSpec
from .tasks import ITask, type_name_of
from .templates import ITemplateDAG


class Registry:
    def __init__(self, topics: Mapping[str, object]) -> None:
        self.topics = topics  # the engine's ``topics``: every name user code asked for
        self.templates: dict[str, ITemplateDAG] = {}
        self.process_templates: dict[str, ProcessLike] = {}
        self.task_types: dict[str, type[ITask[Any, Any]]] = {}
        self.listeners: dict[str, list[type]] = {}
        self.agents: list[AgentSpec] = []

    def template(self, name: str) -> ITemplateDAG:
        try:
            return self.templates[name]
        except KeyError:
            raise TemplateDoesNotExist(f"no template named {name!r}; registered: {sorted(self.templates)}") from None

    def register_task_type(self, cls: type) -> str:
        name = type_name_of(cls)
        existing = self.task_types.get(name)
        if existing is not None and existing is not cls:
            same = existing.__qualname__ == cls.__qualname__ and existing.__module__ == cls.__module__
            if not same:
                raise ConfigurationError(
                    f"two task classes are registered as {name!r} ({existing.__module__}."
                    f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}); "
                    "give one a distinct `type_name`"
                )
        self.task_types[name] = cls
        return name

    def register_task_types_of(self, template: Any) -> bool:
        """Register every task class a template uses, and its listener topics; True if a
        listener topic is new."""
        new_listener = False
        for t in walk_templates(template):
            if isinstance(t, TaskTemplate):
                self.register_task_type(t.task_class)
                if t.topic and t.kind.value in ("listener", "sensor"):
                    new_listener |= self.add_listener(t.topic, t.task_class)
        return new_listener

    def add_listener(self, topic: str, cls: type) -> bool:
        """True if ``topic`` had no listener before."""
        classes = self.listeners.get(topic)
        if classes is None:
            self.listeners[topic] = [cls]
            return True
        if cls not in classes:
            classes.append(cls)
        return False

    def task_class(self, type_name: str | None) -> type[ITask[Any, Any]]:
        if type_name is None:
            raise KeyError("node has no task type")
        try:
            return self.task_types[type_name]
        except KeyError:
            raise KeyError(
                f"task type {type_name!r} is not registered in this worker (is the module that "
                "defines its template imported?)"
            ) from None

    def user_topics(self) -> set[str]:
        """Every topic the application uses: its templates send to or listen on, its agents
        read, or it named (created up front on Kafka)."""
        names = set(self.listeners) | {a.topic for a in self.agents} | set(self.topics)
        for template in self.templates.values():
            names.update(_topics_of(walk_templates(template.spec.root_process)))
        return names


def _topics_of(templates: Iterable[Any]) -> set[str]:
    return {t.topic for t in templates if isinstance(t, TaskTemplate) and t.topic}
