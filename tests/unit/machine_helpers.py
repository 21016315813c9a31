"""Helpers for pure tests of the state machine: task classes, template shorthands and a
small driver that feeds events to ``daggerflow.machine.apply`` (no engine, no I/O)."""

from __future__ import annotations

import dataclasses
from typing import Any

from daggerflow.machine import (
    CancelJob,
    CancelTimer,
    Context,
    Create,
    Deliver,
    Effect,
    Event,
    IndexDel,
    IndexPut,
    JobDone,
    JobFailed,
    RunJob,
    SetTimer,
    Stop,
    Submit,
    TimerFired,
    Transition,
    apply,
)
from daggerflow.model.instance import Instance, Node, RetryPolicy
from daggerflow.model.status import TaskOperator
from daggerflow.model.template import (
    DynamicProcessTemplate,
    Overrides,
    ParallelProcessTemplate,
    ParallelTaskTemplate,
    ProcessLike,
    ProcessTemplate,
    TaskLike,
    TaskTemplate,
    WorkflowSpec,
    instantiate,
)
from daggerflow.tasks import (
    DecisionTask,
    ExecutorTask,
    IntervalTask,
    KafkaCommandTask,
    KafkaListenerTask,
    SensorTask,
    TriggerTask,
    kind_of,
    type_name_of,
)

T0 = 1_000_000.0


class Exec(ExecutorTask[Any, Any]):
    pass


class Cmd(KafkaCommandTask[Any, Any]):
    pass


class OrderListener(KafkaListenerTask[Any, Any]):
    correlatable_key = "order_id"


class KitchenListener(KafkaListenerTask[Any, Any]):
    correlatable_key = "kitchen_id"


class OrderSensor(SensorTask[Any, Any]):
    correlatable_key = "order_id"


class Trig(TriggerTask[Any, Any]):
    pass


class Poll(IntervalTask[Any, Any]):
    pass


class Choose(DecisionTask[Any, Any]):
    pass


# Template shorthands -----------------------------------------------------------------------


def leaf(cls: type, name: str, **fields: Any) -> TaskTemplate:
    return TaskTemplate(kind=kind_of(cls), name=name, task_class=cls, type_name=type_name_of(cls), **fields)


def ex(name: str, **fields: Any) -> TaskTemplate:
    return leaf(Exec, name, **fields)


def cmd(name: str, topic: str = "commands", **fields: Any) -> TaskTemplate:
    return leaf(Cmd, name, topic=topic, **fields)


def listener(name: str, topic: str = "orders", cls: type = OrderListener, **fields: Any) -> TaskTemplate:
    return leaf(cls, name, topic=topic, **fields)


def trigger(name: str, key: str = "run_at", **fields: Any) -> TaskTemplate:
    return leaf(Trig, name, time_to_execute_key=key, **fields)


def interval(name: str, **fields: Any) -> TaskTemplate:
    fields.setdefault("time_to_force_complete_key", "force_at")
    fields.setdefault("interval_execute_period_key", "period")
    return leaf(Poll, name, **fields)


def decision(name: str, *successors: TaskLike) -> TaskTemplate:
    return leaf(Choose, name, next=list(successors))


def chain(*tasks: TaskLike) -> TaskLike:
    """Link tasks in order without touching the given templates."""
    head: TaskLike | None = None
    for t in reversed(tasks):
        head = t if head is None else dataclasses.replace(t, next=[*t.next, head])
    assert head is not None
    return head


def ptask(name: str, *children: TaskLike, op: TaskOperator = TaskOperator.JOIN_ALL) -> ParallelTaskTemplate:
    return ParallelTaskTemplate(name=name, children=list(children), operator=op)


def proc(name: str, *tasks: TaskLike, **fields: Any) -> ProcessTemplate:
    return ProcessTemplate(name=name, root_task=chain(*tasks), **fields)


def pproc(
    name: str, *children: ProcessLike, op: TaskOperator = TaskOperator.JOIN_ALL, **fields: Any
) -> ParallelProcessTemplate:
    return ParallelProcessTemplate(name=name, children=list(children), operator=op, **fields)


def dyn(name: str, *, default: list[ProcessLike] | None = None, **fields: Any) -> DynamicProcessTemplate:
    return DynamicProcessTemplate(name=name, default_processes=list(default or []), **fields)


def procs(*processes: ProcessLike) -> ProcessLike:
    head: ProcessLike | None = None
    for p in reversed(processes):
        head = p if head is None else dataclasses.replace(p, next=[*p.next, head])  # type: ignore[arg-type]
    assert head is not None
    return head


def spec(*processes: ProcessLike, name: str = "wf") -> WorkflowSpec:
    return WorkflowSpec(name, procs(*processes))


# Driver --------------------------------------------------------------------------------------


class Run:
    """One instance driven through ``apply``; ``now`` is the clock of the next event."""

    def __init__(
        self,
        workflow: WorkflowSpec,
        params: dict[str, Any] | None = None,
        *,
        now: float = T0,
        seed: int | None = 7,
        overrides: Overrides | None = None,
        delete_on_complete: bool = False,
        instance_id: str = "wf-1",
    ) -> None:
        self.now = now
        self.delete_on_complete = delete_on_complete
        self.inst: Instance = instantiate(
            workflow, instance_id, dict(params or {}), now=now, seed=seed, overrides=overrides
        )
        self.last: Transition | None = None

    # Events --------------------------------------------------------------------------------

    def ctx(self) -> Context:
        return Context(now=self.now, delete_on_complete=self.delete_on_complete)

    def send(self, event: Event, at: float | None = None) -> Transition:
        if at is not None:
            self.now = at
        tr = apply(self.inst, event, self.ctx())
        assert tr.instance is self.inst
        self.last = tr
        return tr

    def create(self, submit: bool = True) -> Transition:
        tr = apply(None, Create(self.inst, submit=submit), self.ctx())
        assert tr.instance is self.inst
        self.last = tr
        return tr

    def submit(self) -> Transition:
        return self.send(Submit())

    def stop(self) -> Transition:
        return self.send(Stop())

    def done(
        self,
        name: str,
        result: Any = None,
        *,
        params: dict[str, Any] | None = None,
        removed: list[str] | None = None,
        status: str | None = None,
        at: float | None = None,
    ) -> Transition:
        node = self.node(name)
        assert node.job is not None, f"{node.name} has no job in flight"
        return self.send(
            JobDone(node.id, node.job_seq, node.job, result, dict(params or {}), list(removed or []), status),
            at,
        )

    def fail(
        self, name: str, error: str = "boom", *, retryable: bool = True, at: float | None = None
    ) -> Transition:
        node = self.node(name)
        assert node.job is not None, f"{node.name} has no job in flight"
        payload = self.last_payload.get(node.id)
        return self.send(
            JobFailed(node.id, node.job_seq, node.job, error, "Traceback: boom", retryable, payload), at
        )

    def deliver(self, name: str, payload: Any, at: float | None = None) -> Transition:
        node = self.node(name)
        return self.send(Deliver(node.id, payload, node.topic or ""), at)

    def fire(self, name: str, purpose: str, at: float | None = None) -> Transition:
        return self.send(TimerFired(f"{self.node(name).id}:{purpose}"), at)

    @property
    def last_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.last is not None:
            for e in self.last.effects:
                if isinstance(e, RunJob):
                    out[e.node] = e.payload
        return out

    # Queries -------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        """The node whose name is ``name`` or ends with ``.name``; must be unique."""
        found = [n for n in self.inst.nodes.values() if n.name == name or n.name.endswith("." + name)]
        assert len(found) == 1, f"{name!r} matches {[n.name for n in found]}"
        return found[0]

    def status(self, name: str) -> str:
        return self.node(name).status

    def statuses(self) -> dict[str, str]:
        return {n.name: n.status for n in self.inst.nodes.values()}

    def short(self, node_id: str) -> str:
        return self.inst.nodes[node_id].name.rsplit(".", 1)[-1]

    @property
    def root(self) -> str:
        return self.inst.status


def runs(run: Run, tr: Transition) -> list[tuple[str, str]]:
    """(short node name, job) of every RunJob, in order."""
    return [(run.short(e.node), e.job) for e in tr.effects if isinstance(e, RunJob)]


def of(tr: Transition, kind: type[Effect]) -> list[Any]:
    return [e for e in tr.effects if isinstance(e, kind)]


__all__ = [
    "T0",
    "CancelJob",
    "CancelTimer",
    "Choose",
    "Cmd",
    "Exec",
    "IndexDel",
    "IndexPut",
    "KitchenListener",
    "OrderListener",
    "OrderSensor",
    "Poll",
    "RetryPolicy",
    "Run",
    "SetTimer",
    "Trig",
    "chain",
    "cmd",
    "decision",
    "dyn",
    "ex",
    "interval",
    "leaf",
    "listener",
    "of",
    "pproc",
    "proc",
    "procs",
    "ptask",
    "runs",
    "spec",
    "trigger",
]
