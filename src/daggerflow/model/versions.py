"""What a template version is made of, as plain JSON-able data: its nodes (dotted names as
instances name them, kinds, task types, topics).

A registered template is described from its definition (``describe_spec``); a version no
longer registered is described from the node tree of an instance created from it
(``describe_instance``), which every running instance carries. Both give the same shape, so
a listing does not care where a description came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from ..errors import InvalidTriggerTimeForTask, TaskInvalidState
from .instance import Instance, Node
from .status import Kind
from .template import (
    DynamicProcessTemplate,
    ParallelProcessTemplate,
    ParallelTaskTemplate,
    ProcessLike,
    ProcessTemplate,
    TaskLike,
    TaskTemplate,
    WorkflowSpec,
    instantiate,
)

# Statuses of an instance that has not ended (what "running" counts).
RUNNING_STATUSES = ("NOT_STARTED", "SUBMITTED", "EXECUTING")
_LISTENING = frozenset({Kind.LISTENER.value, Kind.SENSOR.value})


class VersionNode(msgspec.Struct, frozen=True, omit_defaults=True):
    """A node by its dotted name, with the structure that draws the template's graph: its
    parent, successors and children by dotted name (None/empty for none; a top-level process's
    parent is the workflow, which is not a node here), a parallel's operator, a listener's
    correlatable key and the process it is in (itself for a process)."""

    name: str
    kind: str
    type: str | None = None
    topic: str | None = None
    parent: str | None = None
    next: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    operator: str | None = None
    correlatable_key: str | None = None
    process: str | None = None


class VersionDefinition(msgspec.Struct, frozen=True, omit_defaults=True):
    """The describable structure of one template version."""

    template: str
    version: str
    nodes: tuple[VersionNode, ...] = ()

    def task_types(self) -> list[str]:
        return sorted({n.type for n in self.nodes if n.type})

    def topics(self) -> list[str]:
        return sorted({n.topic for n in self.nodes if n.topic})

    def listener_topics(self) -> list[str]:
        return sorted({n.topic for n in self.nodes if n.topic and n.kind in _LISTENING})


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(VersionDefinition)


def encode_definition(definition: VersionDefinition) -> bytes:
    return _encoder.encode(definition)


def decode_definition(data: bytes) -> VersionDefinition:
    return _decoder.decode(data)


def describe_instance(instance: Instance) -> VersionDefinition:
    """The version an instance was created from, as its node tree shows it."""
    nodes = instance.nodes

    def name(nid: str | None) -> str | None:
        node = nodes.get(nid) if nid is not None else None
        return None if node is None or node.kind == Kind.ROOT.value else node.name

    def process(node: Node) -> str | None:
        at: Node | None = node
        while at is not None and at.kind != Kind.ROOT.value:
            if at.process_name is not None:
                return at.name
            at = nodes.get(at.parent) if at.parent is not None else None
        return None

    described = tuple(
        VersionNode(
            n.name, n.kind, n.type_name, n.topic, parent=name(n.parent),
            next=tuple(x for x in map(name, n.next) if x is not None),
            children=tuple(x for x in map(name, n.children) if x is not None),
            operator=n.operator, correlatable_key=n.correlatable_key, process=process(n),
        )
        for n in nodes.values()
        if n.kind != Kind.ROOT.value
    )  # fmt: skip
    return VersionDefinition(instance.template_name, instance.template_version, _unique(described))


class _AnyTime(dict[str, Any]):
    """Runtime parameters under which every trigger, interval and monitor time lookup finds
    a time, so that a template's node tree can be built without real parameters."""

    def get(self, key: Any, default: Any = None) -> Any:
        return 0.0


def describe_spec(spec: WorkflowSpec) -> VersionDefinition:
    """A registered template's version (dynamic processes with their default processes):
    the node tree an instance of it gets, so that both descriptions agree."""
    try:
        return describe_instance(instantiate(spec, "describe", _AnyTime(), now=0.0, seed=0))
    except (TaskInvalidState, InvalidTriggerTimeForTask):
        # A tree no instance can get (a dynamic process with nothing to run): its names only.
        nodes = tuple(_process_chain(spec.root_process, spec.name, set()))
        return VersionDefinition(spec.name, spec.version(), _unique(nodes))


def _unique(nodes: Iterable[VersionNode]) -> tuple[VersionNode, ...]:
    # A successor shared by two branches is instantiated twice under one name: list it once.
    return tuple(dict.fromkeys(nodes))


def _process_chain(t: ProcessLike, prefix: str, seen: set[int]) -> Iterator[VersionNode]:
    """The nodes ``_Expander.process_chain`` would create for ``t`` and its successors."""
    if id(t) in seen:
        return
    seen = seen | {id(t)}
    if isinstance(t, DynamicProcessTemplate):
        for p in (*t.default_processes, *t.next):
            yield from _process_chain(p, prefix, seen)
        return
    if isinstance(t, (TaskTemplate, ParallelTaskTemplate)):
        yield from _task_chain(t, prefix, seen)
        return
    name = f"{prefix}.{t.name}"
    if isinstance(t, ProcessTemplate):
        yield VersionNode(name, Kind.PROCESS.value)
        yield from _task_chain(t.root_task, name, seen)
        if t.monitor_type_name is not None:
            yield VersionNode(f"{name}.monitor", Kind.MONITOR.value, t.monitor_type_name)
    else:
        assert isinstance(t, ParallelProcessTemplate)
        yield VersionNode(name, Kind.PARALLEL.value)
        for c in t.children:
            yield from _process_chain(c, prefix, seen)
    for n in t.next:
        yield from _process_chain(n, prefix, seen)


def _task_chain(t: TaskLike, prefix: str, seen: set[int]) -> Iterator[VersionNode]:
    if id(t) in seen:
        return
    seen = seen | {id(t)}
    name = f"{prefix}.{t.name}"
    if isinstance(t, ParallelTaskTemplate):
        yield VersionNode(name, Kind.PARALLEL.value)
        for c in t.children:
            yield from _task_chain(c, prefix, seen)
    else:
        yield VersionNode(name, t.kind.value, t.type_name, t.topic)
    for n in t.next:
        yield from _task_chain(n, prefix, seen)


def missing_in(
    instance: Instance, task_types: Iterable[str], listener_topics: Iterable[str]
) -> tuple[set[str], set[str]]:
    """What a running instance needs that this worker lacks: the task types of its nodes that
    may still run, and the topics its listeners that may still wait are on."""
    types = set(task_types)
    topics = set(listener_topics)
    missing_types: set[str] = set()
    missing_topics: set[str] = set()
    for node in instance.nodes.values():
        if node.is_terminal():
            continue
        if node.type_name and node.type_name not in types:
            missing_types.add(node.type_name)
        if node.kind in _LISTENING and node.topic and node.topic not in topics:
            missing_topics.add(node.topic)
    return missing_types, missing_topics


class TemplateVersion(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One version of a template as a worker sees it: whether it is the one registered
    (``current``), how many instances of it have not ended, and what they need that the
    worker lacks."""

    template: str
    version: str
    current: bool = False
    running: int = 0
    definition: VersionDefinition | None = None
    missing_task_types: list[str] = msgspec.field(default_factory=list)
    missing_topics: list[str] = msgspec.field(default_factory=list)


def merge_versions(listings: Iterable[Iterable[TemplateVersion]]) -> list[TemplateVersion]:
    """Several workers' listings as one: counts added, ``current`` if any worker registers
    it, what is missing anywhere; sorted by template, the current version first."""
    merged: dict[tuple[str, str], TemplateVersion] = {}
    for listing in listings:
        for v in listing:
            known = merged.get((v.template, v.version))
            if known is None:
                merged[(v.template, v.version)] = TemplateVersion(
                    template=v.template, version=v.version, current=v.current, running=v.running,
                    definition=v.definition, missing_task_types=list(v.missing_task_types),
                    missing_topics=list(v.missing_topics),
                )  # fmt: skip
                continue
            known.current = known.current or v.current
            known.running += v.running
            known.definition = known.definition or v.definition
            known.missing_task_types = sorted({*known.missing_task_types, *v.missing_task_types})
            known.missing_topics = sorted({*known.missing_topics, *v.missing_topics})
    return sorted(merged.values(), key=lambda v: (v.template, not v.current, v.version))


_versions_decoder = msgspec.json.Decoder(list[TemplateVersion])


def encode_versions(versions: list[TemplateVersion]) -> bytes:
    return _encoder.encode(versions)


def decode_versions(data: bytes) -> list[TemplateVersion]:
    return _versions_decoder.decode(data)


class MigrationOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a migration did (or, dry, would do) to one instance: ``migrate`` or ``refuse``,
    and why it refused. ``sent``: handed to the worker that owns it, which applies it."""

    id: str
    action: str
    reason: str | None = None
    sent: bool = False


class MigrationReport(msgspec.Struct, kw_only=True):
    template: str
    from_version: str
    to_version: str
    dry_run: bool
    matched: int
    migrated: int
    refused: int
    instances: list[MigrationOutcome]
