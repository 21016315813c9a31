"""The operators' actions on one instance: retry, skip, complete, patch parameters (and
migrations, ``machine/migrate.py``, dispatched from here).

``apply`` here is the whole machine: the actions (``events.Repair``) are applied by a walk
that extends the one of ``transitions`` (same bookkeeping, same effects), every other
event goes to ``transitions.apply``. Pure, like the rest of the machine: a refused action
is reported in ``Transition.error`` and changes nothing.

A retry re-walks the workflow from its root: the failed nodes and those the failure
cancelled or never reached (``Node.halted_by_failure``) are NOT_STARTED again, and the walk
passes over what had ended well (COMPLETED, or SKIPPED by a decision, a jump or the task
itself), starting what it reaches, as a fresh submit would. Listeners that start again are
indexed again by the usual diff of ``desired_correlations``.
"""

from __future__ import annotations

from ..model.instance import Instance, Node
from . import transitions
from .events import Complete, Event, Migrate, PatchParameters, Retry, Skip
from .migrate import apply_migrate
from .transitions import (
    COMPLETED,
    EXECUTING,
    FAILURE,
    K_LISTENER,
    K_MONITOR,
    K_PARALLEL,
    K_PROCESS,
    K_ROOT,
    K_SENSOR,
    K_TRIGGER,
    NOT_STARTED,
    SKIPPED,
    Context,
    Transition,
    _Walk,
)

_COMPOSITES = frozenset({K_ROOT, K_PROCESS, K_PARALLEL})
# Event types are final (msgspec structs nobody subclasses): a set lookup of the type is the
# cheapest test on the hot path, where nearly every event is none of these.
_OPERATORS = frozenset({Retry, Skip, Complete, PatchParameters, Migrate})
_COMPLETABLE = frozenset({K_LISTENER, K_SENSOR, K_TRIGGER})


def apply(instance: Instance | None, event: Event, ctx: Context) -> Transition:
    if type(event) not in _OPERATORS:
        return transitions.apply(instance, event, ctx)
    if isinstance(event, Migrate):
        return apply_migrate(instance, event, ctx)
    assert isinstance(event, (Retry, Skip, Complete, PatchParameters))
    if instance is None:
        return Transition(None, error="unknown workflow instance")
    problem = refusal(instance, event)
    if problem is not None:
        return Transition(instance, error=problem)
    walk = _RepairWalk(instance, ctx)
    if isinstance(event, Retry):
        walk.retry(event)
    elif isinstance(event, PatchParameters):
        instance.runtime_parameters.update(event.changes)
        walk.changed = True
    else:
        walk.finish(instance.nodes[event.node], SKIPPED if isinstance(event, Skip) else COMPLETED)
    return walk.finish_transition()


def refusal(instance: Instance, event: Retry | Skip | Complete | PatchParameters) -> str | None:
    """Why ``event`` cannot apply to ``instance`` now (None: it can)."""
    status = instance.root.status
    if isinstance(event, Retry):
        if status != FAILURE:
            return f"workflow {instance.id} is {status}: only a FAILURE workflow can be retried"
        return None
    if instance.is_terminal():
        return f"workflow {instance.id} is {status} and cannot be changed"
    if isinstance(event, PatchParameters):
        return None
    node = instance.nodes.get(event.node)
    if node is None:
        return f"workflow {instance.id} has no node {event.node!r}"
    action = "skipped" if isinstance(event, Skip) else "completed"
    if node.kind in _COMPOSITES:
        return f"node {event.node!r} is a {node.kind.lower()}: only a task can be {action}"
    if isinstance(event, Complete) and node.kind not in _COMPLETABLE:
        return f"task {event.node!r} is a {node.kind.lower()} task: only a listener, sensor or trigger can be completed"
    if node.status != EXECUTING:
        # A task not reached yet cannot be ended early: the walk would pass over a SKIPPED
        # successor as if a decision had not chosen it, ending the chain there.
        return f"task {event.node!r} is {node.status}: only a task the workflow is at (EXECUTING) can be {action}"
    if node.job is not None:
        # User code is running: ending the task now would race its outcome and the
        # messages it sends.
        return f"task {event.node!r} is running its {node.job}(): wait for it to end, or stop the workflow"
    return None


class _RepairWalk(_Walk):
    def retry(self, event: Retry) -> None:
        inst = self.inst
        if event.runtime_parameters:
            inst.runtime_parameters.update(event.runtime_parameters)
        for node in self.to_rerun():
            if node.status != NOT_STARTED:
                self.statuses.append((node.id, node.status, NOT_STARTED))
            node.status = NOT_STARTED
            node.halted_by_failure = False
            node.attempts = 0
            node.error = None
            node.traceback = None
            node.job = None
            node.inbox = ()
            node.time_completed = 0.0
        self.changed = True
        self.start(inst.root)

    def to_rerun(self) -> list[Node]:
        """The root, every failed node whose failure ended its parent, and what the failure
        cancelled or left unreached, within those (and the monitors of those processes)."""
        nodes = self.nodes
        memo: dict[str, bool] = {}

        def rerun(node: Node) -> bool:
            known = memo.get(node.id)
            if known is not None:
                return known
            if node.kind == K_ROOT:
                result = True
            elif node.parent is None:  # a monitor stands beside the walk
                monitored = nodes.get(node.monitored or "")
                result = node.kind == K_MONITOR and node.halted_by_failure and monitored is not None
                result = result and monitored is not None and rerun(monitored)
            else:
                ended_parent = node.status == FAILURE and not node.continue_on_failure
                result = (ended_parent or node.halted_by_failure) and rerun(nodes[node.parent])
            memo[node.id] = result
            return result

        return [node for node in nodes.values() if rerun(node)]

    def start(self, node: Node) -> None:
        if node.status == FAILURE and node.continue_on_failure:
            self.advance(node)  # its failure did not stop the walk the first time either
            return
        super().start(node)
