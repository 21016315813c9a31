"""The state machine of a workflow instance.

``apply`` takes an instance (owned by the caller, and changed in place), one event and the
context (clock reading, options) and returns the effects the runtime must carry out after
committing. It never raises for a well-formed event: problems are reported in
``Transition.error`` so that one bad request cannot stop the pipeline.

The walk follows Dagger: a workflow is a chain of processes, a process a chain of tasks;
reaching a node starts it; finishing the last node of a chain finishes its parent. Where
Dagger was broken the intent is implemented (see docs/design.md, "Semantics").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..model.instance import Correlation, Instance, Node
from ..model.status import Kind, TaskOperator
from .effects import (
    CancelJob,
    CancelTimer,
    Effect,
    IndexDel,
    IndexPut,
    InstanceDeleted,
    RunJob,
    SetTimer,
)
from .events import Create, Deliver, Event, JobDone, JobFailed, Stop, Submit, TimerFired

NOT_STARTED = "NOT_STARTED"
SUBMITTED = "SUBMITTED"
EXECUTING = "EXECUTING"
COMPLETED = "COMPLETED"
FAILURE = "FAILURE"
SKIPPED = "SKIPPED"
STOPPED = "STOPPED"

ATLEAST_ONE = TaskOperator.ATLEAST_ONE.value
# Kind values as plain strings: enum attribute access is slow on the hot path.
K_COMMAND = Kind.COMMAND.value
K_DECISION = Kind.DECISION.value
K_EXECUTOR = Kind.EXECUTOR.value
K_INTERVAL = Kind.INTERVAL.value
K_LISTENER = Kind.LISTENER.value
K_MONITOR = Kind.MONITOR.value
K_PARALLEL = Kind.PARALLEL.value
K_PROCESS = Kind.PROCESS.value
K_ROOT = Kind.ROOT.value
K_SENSOR = Kind.SENSOR.value
K_TRIGGER = Kind.TRIGGER.value

_ACTIVE = frozenset({NOT_STARTED, SUBMITTED, EXECUTING})
_LEAF_JOB_KINDS = frozenset({K_EXECUTOR, K_COMMAND, K_TRIGGER, K_MONITOR})
_WAITING_KINDS = frozenset({K_LISTENER, K_SENSOR})


@dataclass(frozen=True)
class Context:
    now: float
    delete_on_complete: bool = False
    # The version of a template the applying worker registers (None: it registers none); a
    # migration is applied only where its target version is registered. None: no check.
    registered_version: Callable[[str], str | None] | None = None


@dataclass
class Transition:
    instance: Instance | None
    effects: list[Effect] = field(default_factory=list)
    changed: bool = False
    error: str | None = None
    # The (node, from, to) status changes, in order (for the history).
    statuses: list[tuple[str, str, str]] = field(default_factory=list)


def desired_correlations(instance: Instance) -> dict[str, Correlation]:
    """Where each listener of the instance must be indexed right now (design §3)."""
    if instance.is_terminal():
        return {}
    params = instance.runtime_parameters
    out: dict[str, Correlation] = {}
    for node in instance.nodes.values():
        if node.kind not in _WAITING_KINDS or not node.topic or not node.correlatable_key:
            continue
        if not (_accepts_messages(node) or (node.allow_skip_to and node.status == NOT_STARTED)):
            continue
        value = params.get(node.correlatable_key)
        if value is None or value == "":
            continue  # Not known yet: indexed once a task sets it (never under "None").
        out[node.id] = Correlation(node.topic, node.correlatable_key, str(value))
    return out


def apply(instance: Instance | None, event: Event, ctx: Context) -> Transition:
    if isinstance(event, Create):
        if instance is not None:
            return Transition(instance)  # Re-creation with the same id is idempotent.
        instance = event.instance
        walk = _Walk(instance, ctx, fresh=True)
        if event.submit:
            walk.submit()
        return walk.finish_transition()
    if instance is None:
        return Transition(None, error="unknown workflow instance")
    walk = _Walk(instance, ctx)
    if isinstance(event, Submit):
        if instance.root.is_terminal():
            return Transition(
                instance, error=f"workflow {instance.id} is {instance.status} and cannot be submitted"
            )
        walk.submit()
    elif instance.is_terminal():
        return Transition(instance)  # A terminal workflow never changes again.
    elif isinstance(event, Stop):
        walk.stop()
    elif isinstance(event, Deliver):
        walk.deliver(event)
    elif isinstance(event, JobDone):
        walk.job_done(event)
    elif isinstance(event, JobFailed):
        walk.job_failed(event)
    elif isinstance(event, TimerFired):
        walk.timer_fired(event.key)
    return walk.finish_transition()


class _Walk:
    def __init__(self, instance: Instance, ctx: Context, *, fresh: bool = False) -> None:
        self.inst = instance
        self.nodes = instance.nodes
        self.ctx = ctx
        self.now = ctx.now
        self.effects: list[Effect] = []
        self.statuses: list[tuple[str, str, str]] = []
        self.changed = fresh
        self.fresh = fresh
        self._timers_before = {} if fresh else dict(instance.timers)
        self._index_before = {} if fresh else dict(instance.correlations)
        self.deleted = False

    # Bookkeeping ------------------------------------------------------------------------

    def finish_transition(self) -> Transition:
        inst = self.inst
        desired = desired_correlations(inst)
        before = self._index_before
        if desired != before:
            self.changed = True
            for node_id, at in before.items():
                if desired.get(node_id) != at:
                    self.effects.append(IndexDel(inst.id, node_id, at))
            for node_id, at in desired.items():
                if before.get(node_id) != at:
                    self.effects.append(IndexPut(inst.id, node_id, at, self.nodes[node_id].match_only_one))
            inst.correlations = desired
        if inst.timers != self._timers_before:
            self.changed = True
            for key in self._timers_before.keys() - inst.timers.keys():
                self.effects.append(CancelTimer(inst.id, key))
            for key, due in inst.timers.items():
                if self._timers_before.get(key) != due:
                    self.effects.append(SetTimer(inst.id, key, due))
        if self.deleted:
            self.effects.append(InstanceDeleted(inst.id))
        if self.changed:
            inst.lastupdated = self.now
        return Transition(inst, self.effects, self.changed, None, self.statuses)

    def set_status(self, node: Node, status: str) -> None:
        # (a no-op change, were there one, is left out of the history when it is read)
        self.statuses.append((node.id, node.status, status))
        node.status = status
        self.changed = True

    def run_job(self, node: Node, job: str, payload: Any = None) -> None:
        node.job = job
        node.job_seq += 1
        node.attempts += 1
        self.changed = True
        self.effects.append(RunJob(self.inst.id, node.id, job, node.job_seq, payload))

    def set_timer(self, node: Node, purpose: str, due: float) -> None:
        self.inst.timers[f"{node.id}:{purpose}"] = due

    def cancel_timers(self, node: Node) -> None:
        prefix = node.id + ":"
        for key in [k for k in self.inst.timers if k.startswith(prefix)]:
            del self.inst.timers[key]

    def descendants(self, ancestor: str) -> Iterator[Node]:
        for node in self.nodes.values():
            parent = node.parent
            while parent is not None:
                if parent == ancestor:
                    yield node
                    break
                parent = self.nodes[parent].parent

    # Lifecycle of the whole instance ----------------------------------------------------

    def submit(self) -> None:
        root = self.inst.root
        if root.status == NOT_STARTED:
            root.time_submitted = self.now
            self.set_status(root, SUBMITTED)
            self.start(root)

    def stop(self) -> None:
        """Stop every non-terminal node, parallel children included; call stop() hooks."""
        for node in self.nodes.values():
            if node.is_terminal():
                continue
            self.halt(node, STOPPED)
        self.inst.timers.clear()

    def halt(self, node: Node, status: str) -> None:
        """End a node that did not finish on its own (stop, skip, cancellation)."""
        was_executing = node.status == EXECUTING
        if was_executing and node.job is not None and node.job != "stop":
            self.effects.append(CancelJob(self.inst.id, node.id))
        self.set_status(node, status)
        if node.time_completed == 0.0:
            node.time_completed = self.now
        node.inbox = ()
        node.job = None
        self.cancel_timers(node)
        if was_executing and node.type_name is not None and status == STOPPED:
            # The stop() hook runs beside the pipeline; its outcome changes nothing.
            node.job_seq += 1
            self.effects.append(RunJob(self.inst.id, node.id, "stop", node.job_seq))

    def cancel_under(self, ancestor: str, status_for_running: str = STOPPED, *, failed: bool = False) -> None:
        for node in list(self.descendants(ancestor)):
            if node.is_terminal():
                continue
            node.halted_by_failure = failed
            self.halt(node, status_for_running if node.status == EXECUTING else SKIPPED)

    # Reaching a node --------------------------------------------------------------------

    def start(self, node: Node) -> None:
        if node.is_terminal():
            if node.status in (COMPLETED, SKIPPED):
                self.advance(node)
            return
        if node.status == EXECUTING and node.kind not in (K_ROOT, K_PROCESS):
            return
        kind = node.kind
        if node.status != EXECUTING:
            self.set_status(node, EXECUTING)
            node.time_submitted = node.time_submitted or self.now
        if kind in (K_ROOT, K_PROCESS):
            if kind == K_PROCESS:
                self.start_process_guards(node)
            if node.children:
                self.start(self.nodes[node.children[0]])
            else:
                self.finish(node, COMPLETED)
        elif kind == K_PARALLEL:
            if not node.children:
                self.finish(node, COMPLETED)
            for child_id in node.children:
                if node.is_terminal():
                    break  # ATLEAST_ONE satisfied by a child that was already terminal
                self.start(self.nodes[child_id])
        elif kind in (K_EXECUTOR, K_COMMAND):
            self.run_job(node, "execute")
            if node.timeout:
                self.set_timer(node, "timeout", self.now + node.timeout)
        elif kind in (K_TRIGGER, K_INTERVAL):
            self.fire_when_due(node)
        elif kind == K_DECISION:
            self.run_job(node, "evaluate")
        elif kind in _WAITING_KINDS:
            if node.timeout:
                self.set_timer(node, "timeout", self.now + node.timeout)
        elif kind == K_MONITOR:
            self.fire_when_due(node)

    def start_process_guards(self, process: Node) -> None:
        if process.max_run_duration > 0:
            self.set_timer(process, "max_run", self.now + process.max_run_duration)
        if process.monitor is not None:
            monitor = self.nodes[process.monitor]
            due = self.inst.runtime_parameters.get("complete_by_time")
            if monitor.status == NOT_STARTED and isinstance(due, (int, float)):
                monitor.time_to_execute = float(due)
                monitor.time_submitted = self.now
                self.set_status(monitor, EXECUTING)
                self.set_timer(monitor, "due", max(float(due), self.now))

    def fire_when_due(self, node: Node) -> None:
        due = node.time_to_execute
        if due is None or due <= self.now:
            self.run_due_job(node)
        else:
            self.set_timer(node, "due", due)

    def run_due_job(self, node: Node) -> None:
        if node.kind == K_INTERVAL:
            force = node.time_to_force_complete
            if force is not None and self.now >= force:
                self.run_job(node, "execute")
            else:
                self.run_job(node, "interval_execute")
        elif node.kind == K_MONITOR:
            monitored = self.nodes.get(node.monitored or "")
            if monitored is None or monitored.is_terminal():
                self.finish(node, COMPLETED)
            else:
                self.run_job(node, "execute")
        else:
            self.run_job(node, "execute")

    # Finishing a node -------------------------------------------------------------------

    def finish(self, node: Node, status: str) -> None:
        self.set_status(node, status)
        if node.time_completed == 0.0 or node.kind != K_ROOT:
            node.time_completed = self.now
        node.job = None
        node.inbox = ()
        self.cancel_timers(node)
        if node.monitor is not None:
            monitor = self.nodes[node.monitor]
            if not monitor.is_terminal():
                self.halt(monitor, COMPLETED if monitor.status == EXECUTING else SKIPPED)
        if node.kind == K_ROOT:
            self.root_finished()
            return
        if node.parent is None:
            return  # monitors stand beside the walk
        parent = self.nodes[node.parent]
        if status == FAILURE and not node.continue_on_failure:
            if _is_atleast_one(parent):
                self.child_done(parent, node)  # this branch ends here; the others go on
            elif not parent.is_terminal():
                self.cancel_under(parent.id, failed=True)
                self.finish(parent, FAILURE)
            return
        self.advance(node)

    def advance(self, node: Node) -> None:
        if node.next:
            for successor_id in node.next:
                successor = self.nodes[successor_id]
                if successor.status != SKIPPED:
                    self.start(successor)
                    return
        if node.parent is not None:
            self.child_done(self.nodes[node.parent], node)

    def child_done(self, parent: Node, child: Node) -> None:
        if parent.is_terminal():
            return
        if parent.kind == K_PARALLEL:
            # A member may be a chain (tasks with next, processes with next processes):
            # the group waits for the end of every chain, not just for its first node.
            ends = [self.branch_end(self.nodes[c]) for c in parent.children]
            if parent.operator == ATLEAST_ONE:
                if child.status in (COMPLETED, SKIPPED):
                    self.cancel_under(parent.id)
                    self.finish(parent, COMPLETED)
                elif all(end is not None for end in ends):
                    ok = any(end is not None and end.status in (COMPLETED, SKIPPED) for end in ends)
                    self.finish(parent, COMPLETED if ok else FAILURE)
            elif all(end is not None for end in ends):
                self.finish(parent, COMPLETED)
            return
        # Process or workflow: its chain reached the end.
        if parent.status != EXECUTING:
            return  # e.g. a chain completed again after an out-of-order jump skipped it
        self.finish(parent, COMPLETED)

    def branch_end(self, head: Node) -> Node | None:
        """The node where the chain starting at ``head`` ended, or None while it runs.

        Follows the path the walk takes (the first successor not SKIPPED); a FAILURE
        without continue_on_failure ends the chain.
        """
        node = head
        while node.is_terminal():
            if node.status == FAILURE and not node.continue_on_failure:
                return node
            successor = next((self.nodes[s] for s in node.next if self.nodes[s].status != SKIPPED), None)
            if successor is None:
                return node
            node = successor
        return None

    def root_finished(self) -> None:
        root = self.inst.root
        for node in self.nodes.values():
            if node is not root and not node.is_terminal():
                node.halted_by_failure = root.status == FAILURE
                self.halt(node, STOPPED if node.status == EXECUTING else SKIPPED)
        self.inst.timers.clear()
        if self.ctx.delete_on_complete and root.status == COMPLETED:
            self.deleted = True

    # Events -----------------------------------------------------------------------------

    def deliver(self, event: Deliver) -> None:
        node = self.nodes.get(event.node)
        if node is None or node.kind not in _WAITING_KINDS:
            return
        if node.status == NOT_STARTED and node.allow_skip_to:
            self.skip_to(node)
        if _accepts_messages(node):
            node.inbox = (*node.inbox, event.payload)
            self.changed = True
            self.next_message(node)

    def next_message(self, node: Node) -> None:
        """Run the oldest queued message of a listener, one at a time and not while a
        failed on_message waits for its retry; drop the queue once messages are refused."""
        if not _accepts_messages(node):
            node.inbox = ()
        elif node.inbox and node.job is None and f"{node.id}:retry:on_message" not in self.inst.timers:
            payload, node.inbox = node.inbox[0], node.inbox[1:]
            self.run_job(node, "on_message", payload)

    def skip_to(self, target: Node) -> None:
        """Jump to a listener out of order: every earlier unfinished node is SKIPPED.

        Branches of a parallel group around the target are not "earlier": they are left
        alone, and started if the jump is what reaches the group.
        """
        siblings: dict[str, list[str]] = {}  # parallel ancestor -> heads of the other branches
        ancestor = target.parent
        while ancestor is not None:
            a = self.nodes[ancestor]
            if a.kind == K_PARALLEL:
                siblings[a.id] = [h for h in a.children if all(n is not target for n in self.chain(h))]
            ancestor = a.parent
        parallel = {n.id for heads in siblings.values() for h in heads for n in self.chain(h)}
        for node in self.walk_order(self.inst.root):
            if node is target:
                break
            if (
                node.status in _ACTIVE
                and node.id not in parallel
                and not _is_ancestor(self.nodes, node, target)
            ):
                self.halt(node, SKIPPED)
        reached: list[Node] = []
        ancestor = target.parent
        while ancestor is not None:
            a = self.nodes[ancestor]
            if a.status in (NOT_STARTED, SUBMITTED):
                self.set_status(a, EXECUTING)
                a.time_submitted = a.time_submitted or self.now
                reached.append(a)
            ancestor = a.parent
        self.set_status(target, EXECUTING)
        target.time_submitted = self.now
        if target.timeout:
            self.set_timer(target, "timeout", self.now + target.timeout)
        for a in reversed(reached):  # outermost first, as the walk would have reached them
            if a.kind == K_PROCESS:
                self.start_process_guards(a)
            for head in siblings.get(a.id, ()):
                self.start(self.nodes[head])

    def walk_order(self, node: Node) -> Iterator[Node]:
        """Dagger's order: a node's children subtree, the node, then its successors."""
        for child_id in node.children:
            yield from self.walk_order(self.nodes[child_id])
        yield node
        for successor_id in node.next:
            yield from self.walk_order(self.nodes[successor_id])

    def job_done(self, event: JobDone) -> None:
        node = self.nodes.get(event.node)
        if node is None or node.job_seq != event.seq or node.job != event.job:
            return  # stale: the node was stopped, skipped or restarted meanwhile
        params = self.inst.runtime_parameters
        if event.params or event.removed:
            params.update(event.params)
            for key in event.removed:
                params.pop(key, None)
        node.job = None
        node.error = None
        node.traceback = None
        self.changed = True
        job = event.job
        if job == "stop":
            return
        if job == "execute":
            status = event.status if event.status in (FAILURE, SKIPPED) else COMPLETED
            self.finish(node, status)
        elif job == "interval_execute":
            node.attempts = 0
            force = node.time_to_force_complete
            if event.result is True or (force is not None and self.now >= force):
                self.run_job(node, "execute")
            else:
                period = node.interval_execute_period or 0.0
                due = self.now + period
                if force is not None:
                    due = min(due, force)  # fire at the deadline, then force-complete
                node.time_to_execute = due
                self.set_timer(node, "due", due)
        elif job == "evaluate":
            self.decide(node, event.result)
        elif job == "on_message":
            node.attempts = 0
            if event.result is True and node.status == EXECUTING:
                self.finish(node, COMPLETED)
            elif event.result is True and node.status == SKIPPED:
                self.set_status(node, COMPLETED)  # late message for a skipped-to listener
                node.time_completed = self.now
            self.next_message(node)

    def decide(self, node: Node, chosen: Any) -> None:
        chosen_id = self.resolve_successor(node, chosen)
        if chosen is not None and chosen_id is None:
            # A typo in evaluate() must not silently skip every branch.
            names = [self.nodes[s].name for s in node.next]
            node.error = (
                f"evaluate() returned {chosen!r}, which is not a successor; expected one of {names} or None"
            )
            self.finish(node, FAILURE)
            return
        for successor_id in node.next:
            if successor_id != chosen_id:
                for n in self.chain(successor_id):
                    if n.status == NOT_STARTED:
                        self.halt(n, SKIPPED)
        self.finish(node, COMPLETED)

    def chain(self, first: str) -> Iterator[Node]:
        node = self.nodes[first]
        yield node
        yield from self.descendants(node.id)
        for successor_id in node.next:
            yield from self.chain(successor_id)

    def resolve_successor(self, node: Node, chosen: Any) -> str | None:
        if chosen is None:
            return None
        text = str(chosen)
        for successor_id in node.next:
            successor = self.nodes[successor_id]
            if text in (successor_id, successor.name) or successor.name.endswith("." + text):
                return successor_id
        return None

    def job_failed(self, event: JobFailed) -> None:
        node = self.nodes.get(event.node)
        if node is None or node.job_seq != event.seq or node.job != event.job:
            return
        node.job = None
        node.error = event.error
        node.traceback = event.traceback
        self.changed = True
        if event.job == "stop":
            return
        policy = node.retry
        if event.retryable and policy is not None and node.attempts < policy.max_attempts:
            if event.job == "on_message":
                node.inbox = (event.payload, *node.inbox)
            self.set_timer(node, f"retry:{event.job}", self.now + policy.delay(node.attempts))
            return
        if node.is_terminal():
            # A reprocessed message failed on a completed (or skipped-to) listener: keep
            # its status and go on with the messages queued behind it.
            self.next_message(node)
            return
        self.finish(node, FAILURE)

    def timer_fired(self, key: str) -> None:
        if key not in self.inst.timers:
            return  # cancelled or already fired
        del self.inst.timers[key]
        self.changed = True
        node_id, _, purpose = key.partition(":")
        node = self.nodes.get(node_id)
        if node is None:
            return
        if node.is_terminal() and not (purpose == "retry:on_message" and _accepts_messages(node)):
            return
        if purpose == "due":
            if node.status == EXECUTING and node.job is None:
                self.run_due_job(node)
        elif purpose.startswith("retry:"):
            job = purpose[len("retry:") :]
            if job == "on_message":
                self.next_message(node)  # the failed payload is first in the inbox
            else:
                self.run_job(node, job)
        elif purpose == "timeout":
            if node.status == EXECUTING:
                if node.job is not None:
                    self.effects.append(CancelJob(self.inst.id, node.id))
                node.error = f"timed out after {node.timeout:g} s"
                self.finish(node, node.timeout_status)
        elif purpose == "max_run":
            if node.status == EXECUTING:
                self.cancel_under(node.id, SKIPPED)
                node.error = f"max_run_duration of {node.max_run_duration} s exceeded"
                self.finish(node, SKIPPED)


def _accepts_messages(node: Node) -> bool:
    """Whether a delivered message runs on_message on this node (design §3, §10.21-25)."""
    if node.kind not in _WAITING_KINDS:
        return False
    status = node.status
    return (
        status == EXECUTING
        or (status == SKIPPED and node.allow_skip_to)
        or (status == COMPLETED and node.reprocess_on_message)
    )


def _is_atleast_one(node: Node) -> bool:
    return node.kind == K_PARALLEL and node.operator == ATLEAST_ONE


def _is_ancestor(nodes: dict[str, Node], candidate: Node, of: Node) -> bool:
    parent = of.parent
    while parent is not None:
        if parent == candidate.id:
            return True
        parent = nodes[parent].parent
    return False
