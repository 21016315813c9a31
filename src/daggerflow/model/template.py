"""Workflow definitions (templates) and their expansion into instances.

A template is immutable once registered. Per-instance variation (dynamic processes, the
children of a parallel process) is passed to :func:`instantiate` as overrides, so creating
an instance never mutates anything shared.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidTriggerTimeForTask, TaskInvalidState
from .instance import Instance, Node, RetryPolicy
from .status import COMPLETE_BY_KEY, Kind, TaskOperator


@dataclass(eq=False)
class TaskTemplate:
    """A leaf task: what kind it is, the class that implements it, and its successors."""

    kind: Kind
    name: str
    task_class: type
    type_name: str
    next: list[TaskLike] = field(default_factory=list)
    topic: str | None = None
    allow_skip_to: bool = False
    reprocess_on_message: bool = False
    time_to_execute_key: str | None = None
    time_to_force_complete_key: str | None = None
    interval_execute_period_key: str | None = None
    retry: RetryPolicy | None = None
    continue_on_failure: bool = False
    timeout: float | None = None
    timeout_status: str = "FAILURE"


@dataclass(eq=False)
class ParallelTaskTemplate:
    """Task-level fan-out: every child starts when the composite is reached."""

    name: str
    children: list[TaskLike]
    operator: TaskOperator = TaskOperator.JOIN_ALL
    next: list[TaskLike] = field(default_factory=list)
    continue_on_failure: bool = False


TaskLike = TaskTemplate | ParallelTaskTemplate


@dataclass(eq=False)
class ProcessTemplate:
    name: str
    root_task: TaskLike
    next: list[ProcessLike] = field(default_factory=list)
    max_run_duration: float = 0.0
    # Type name of the monitoring task class when the process type is a monitored process.
    monitor_type_name: str | None = None
    continue_on_failure: bool = False


@dataclass(eq=False)
class ParallelProcessTemplate:
    name: str
    children: list[ProcessLike]
    operator: TaskOperator = TaskOperator.JOIN_ALL
    next: list[ProcessLike] = field(default_factory=list)
    continue_on_failure: bool = False


@dataclass(eq=False)
class DynamicProcessTemplate:
    """A placeholder replaced, per instance, by a chain of processes chosen at creation."""

    name: str
    next: list[ProcessLike] = field(default_factory=list)
    max_run_duration: float = 0.0
    default_processes: list[ProcessLike] = field(default_factory=list)


ProcessLike = ProcessTemplate | ParallelProcessTemplate | DynamicProcessTemplate | TaskLike


@dataclass(eq=False)
class WorkflowSpec:
    """The definition part of a workflow template (the engine-bound object wraps it)."""

    name: str
    root_process: ProcessLike
    _version: str | None = None
    # Runtime parameters indexed for search (besides the listeners' correlatable keys).
    # Not part of the version: declaring one more does not strand running instances.
    search_attributes: tuple[str, ...] = ()

    def version(self) -> str:
        if self._version is None:
            self._version = hashlib.sha256(repr(_describe(self.root_process)).encode()).hexdigest()[:16]
        return self._version


@dataclass
class Overrides:
    """Per-instance choices: process chains for dynamic placeholders, parallel children."""

    dynamic: Mapping[str, Sequence[ProcessLike]] = field(default_factory=dict)
    parallel: Mapping[str, Sequence[ProcessLike]] = field(default_factory=dict)


def walk_templates(root: ProcessLike) -> Iterator[ProcessLike]:
    """Every template reachable from ``root`` (children, root tasks, successors, default
    dynamic processes), each once, parents before their parts."""
    seen: set[int] = set()
    stack: list[ProcessLike] = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        yield t
        if isinstance(t, ProcessTemplate):
            stack.append(t.root_task)
        elif isinstance(t, (ParallelTaskTemplate, ParallelProcessTemplate)):
            stack.extend(t.children)
        elif isinstance(t, DynamicProcessTemplate):
            stack.extend(t.default_processes)
        stack.extend(t.next)


def _describe(t: Any, seen: set[int] | None = None) -> Any:
    """A canonical structure of a template tree, for its content hash."""
    if seen is None:
        seen = set()
    if id(t) in seen:
        return "<cycle>"
    seen = seen | {id(t)}
    if isinstance(t, TaskTemplate):
        return (
            "task",
            t.kind.value,
            t.name,
            t.type_name,
            t.topic,
            t.allow_skip_to,
            t.reprocess_on_message,
            t.time_to_execute_key,
            t.time_to_force_complete_key,
            t.interval_execute_period_key,
            t.retry,
            t.continue_on_failure,
            t.timeout,
            t.timeout_status,
            [_describe(n, seen) for n in t.next],
        )
    if isinstance(t, ParallelTaskTemplate):
        return (
            "ptask",
            t.name,
            t.operator.value,
            [_describe(c, seen) for c in t.children],
            [_describe(n, seen) for n in t.next],
        )
    if isinstance(t, ProcessTemplate):
        return (
            "process",
            t.name,
            t.max_run_duration,
            t.monitor_type_name,
            t.continue_on_failure,
            _describe(t.root_task, seen),
            [_describe(n, seen) for n in t.next],
        )
    if isinstance(t, ParallelProcessTemplate):
        return (
            "pprocess",
            t.name,
            t.operator.value,
            [_describe(c, seen) for c in t.children],
            [_describe(n, seen) for n in t.next],
        )
    if isinstance(t, DynamicProcessTemplate):
        return ("dynamic", t.name, t.max_run_duration, [_describe(n, seen) for n in t.next])
    raise TypeError(f"not a template: {t!r}")


class IdSource:
    """Node ids: random, or drawn from a seeded RNG so re-creation yields the same ids."""

    def __init__(self, seed: random.Random | int | str | None) -> None:
        if seed is None:
            self._rng: random.Random | None = None
        elif isinstance(seed, random.Random):
            self._rng = seed
        else:
            self._rng = random.Random(seed)

    def next(self) -> str:
        rng = self._rng or _ID_RNG
        return _uuid4_text(rng.getrandbits(128))


# Ids need to be unique, not secret: a PRNG seeded from os.urandom is enough and is much
# cheaper than uuid4()'s system call per id.
_ID_RNG = random.Random()


def _uuid4_text(bits: int) -> str:
    """The text of ``uuid.UUID(int=bits, version=4)``, without building the object."""
    bits = (bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Expander:
    def __init__(self, instance: Instance, ids: IdSource, now: float, overrides: Overrides) -> None:
        self.instance = instance
        self.ids = ids
        self.now = now
        self.overrides = overrides
        self.params = instance.runtime_parameters

    def add(self, node: Node) -> Node:
        node.time_created = self.now
        self.instance.nodes[node.id] = node
        return node

    # Processes -------------------------------------------------------------------------

    def process_chain(self, t: ProcessLike, parent: str, prefix: str) -> str:
        """Create ``t`` and its successors; return the id of the first node created."""
        if isinstance(t, DynamicProcessTemplate):
            chosen = list(self.overrides.dynamic.get(t.name, t.default_processes))
            chain: list[ProcessLike] = [*chosen, *t.next]
            if not chain:
                raise TaskInvalidState(
                    f"dynamic process {t.name!r} has no processes configured and no next process"
                )
            return self._linked(chain, parent, prefix)
        if isinstance(t, (TaskTemplate, ParallelTaskTemplate)):
            # Dagger lets a task template stand in a process chain; it then runs as a task
            # whose parent is the workflow.
            return self.task_chain(t, parent, prefix)
        node_id = self.ids.next()
        if isinstance(t, ProcessTemplate):
            node = self.add(
                Node(
                    id=node_id,
                    name=f"{prefix}.{t.name}",
                    kind=Kind.PROCESS.value,
                    parent=parent,
                    process_name=t.name,
                    max_run_duration=float(t.max_run_duration or 0),
                    continue_on_failure=t.continue_on_failure,
                )
            )
            node.children = (self.task_chain(t.root_task, node_id, node.name),)
            if t.monitor_type_name is not None:
                monitor_id = self.ids.next()
                due = self.params.get(COMPLETE_BY_KEY)
                self.add(
                    Node(
                        id=monitor_id,
                        name=f"{node.name}.monitor",
                        kind=Kind.MONITOR.value,
                        parent=None,
                        type_name=t.monitor_type_name,
                        monitored=node_id,
                        time_to_execute=float(due) if isinstance(due, (int, float)) else None,
                    )
                )
                node.monitor = monitor_id
        else:
            children = list(self.overrides.parallel.get(t.name, t.children))
            node = self.add(
                Node(
                    id=node_id,
                    name=f"{prefix}.{t.name}",
                    kind=Kind.PARALLEL.value,
                    parent=parent,
                    process_name=t.name,
                    operator=t.operator.value,
                    continue_on_failure=t.continue_on_failure,
                )
            )
            node.children = tuple(self.process_chain(c, node_id, prefix) for c in children)
        if t.next:
            node.next = tuple(self.process_chain(n, parent, prefix) for n in t.next)
        return node_id

    def _linked(self, chain: Sequence[ProcessLike], parent: str, prefix: str) -> str:
        """Instantiate a list of processes as a chain without touching their templates."""
        first_id: str | None = None
        previous: Node | None = None
        for t in chain:
            # Each element may have successors of its own; keep them, append the rest after.
            nid = self.process_chain(t, parent, prefix)
            if previous is not None:
                tail = previous
                while tail.next:
                    tail = self.instance.nodes[tail.next[0]]
                tail.next = (nid,)
            previous = self.instance.nodes[nid]
            first_id = first_id or nid
        assert first_id is not None
        return first_id

    # Tasks -----------------------------------------------------------------------------

    def task_chain(self, t: TaskLike, parent: str, prefix: str) -> str:
        node_id = self.ids.next()
        if isinstance(t, ParallelTaskTemplate):
            node = self.add(
                Node(
                    id=node_id,
                    name=f"{prefix}.{t.name}",
                    kind=Kind.PARALLEL.value,
                    parent=parent,
                    operator=t.operator.value,
                    continue_on_failure=t.continue_on_failure,
                )
            )
            node.children = tuple(self.task_chain(c, node_id, prefix) for c in t.children)
        else:
            node = self.add(self._leaf(t, node_id, parent, prefix))
        node.next = tuple(self.task_chain(n, parent, prefix) for n in t.next)
        return node_id

    def _leaf(self, t: TaskTemplate, node_id: str, parent: str, prefix: str) -> Node:
        node = Node(
            id=node_id,
            name=f"{prefix}.{t.name}",
            kind=t.kind.value,
            parent=parent,
            type_name=t.type_name,
            topic=t.topic,
            allow_skip_to=t.allow_skip_to,
            reprocess_on_message=t.reprocess_on_message,
            retry=t.retry,
            continue_on_failure=t.continue_on_failure,
            timeout=t.timeout,
            timeout_status=t.timeout_status,
        )
        if t.kind in (Kind.LISTENER, Kind.SENSOR):
            node.correlatable_key = getattr(t.task_class, "correlatable_key", None)
            node.match_only_one = bool(getattr(t.task_class, "match_only_one", False))
        if t.kind in (Kind.TRIGGER, Kind.MONITOR):
            node.time_to_execute = self._time(t, t.time_to_execute_key, required=True)
        if t.kind is Kind.INTERVAL:
            node.time_to_execute = self._time(t, t.time_to_execute_key, required=False)
            node.time_to_force_complete = self._time(t, t.time_to_force_complete_key, required=True)
            node.interval_execute_period = self._time(t, t.interval_execute_period_key, required=True)
        return node

    def _time(self, t: TaskTemplate, key: str | None, *, required: bool) -> float | None:
        if key is None:
            if required:
                raise InvalidTriggerTimeForTask(f"task {t.name!r} has no time lookup key configured")
            return None
        value = self.params.get(key)
        if not _is_number(value):
            raise InvalidTriggerTimeForTask(
                f"task {t.name!r} needs runtime parameter {key!r} as epoch seconds, got {value!r}"
            )
        assert isinstance(value, (int, float))
        return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def instantiate(
    spec: WorkflowSpec,
    instance_id: str,
    runtime_parameters: dict[str, Any],
    *,
    now: float,
    seed: random.Random | int | str | None = None,
    partition_key_lookup: str | None = None,
    overrides: Overrides | None = None,
) -> Instance:
    """Materialise the whole node tree of a new instance, every node NOT_STARTED."""
    instance = Instance(
        id=instance_id,
        template_name=spec.name,
        template_version=spec.version(),
        nodes={},
        runtime_parameters=runtime_parameters,
        partition_key_lookup=partition_key_lookup,
        lastupdated=now,
    )
    expander = _Expander(instance, IdSource(seed), now, overrides or Overrides())
    root = expander.add(Node(id=instance_id, name=spec.name, kind=Kind.ROOT.value))
    root.children = (expander.process_chain(spec.root_process, instance_id, spec.name),)
    # Only the declared ones: the listeners' correlatable keys are read from the nodes
    # (``model.query.search_names``), and a template without declarations stores nothing.
    instance.search_keys = spec.search_attributes
    return instance


def check_search_attributes(names: Any) -> tuple[str, ...]:
    """``search_attributes`` as given by a user: a sequence of non-empty names."""
    if isinstance(names, str) or not isinstance(names, Sequence | set | frozenset):
        raise TaskInvalidState(f"search_attributes must be a list of parameter names, got {names!r}")
    out = tuple(dict.fromkeys(names))
    for name in out:
        if not isinstance(name, str) or not name:
            raise TaskInvalidState(f"search_attributes must be non-empty strings, got {name!r}")
    return out
