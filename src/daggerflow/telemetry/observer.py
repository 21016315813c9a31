"""``Telemetry``: what the pipeline observes (``pipeline.observe.PipelineObserver``) turned
into metrics and, when the application installed a tracer provider, spans.

The batch hands it each applied event's ``machine.Transition`` (``pending``), and after the
commit it reads what the machine reported there, without comparing instances: a root that
left NOT_STARTED started, a node that became terminal ended (its span, its duration), a job
started (``RunJob``: an attempt), a ``retry:`` timer set (a failed attempt that will be
retried), a listener indexed or not (``IndexPut``/``IndexDel``: the open listeners).
Everything it reports is committed state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..machine.effects import IndexDel, IndexPut, RunJob, SetTimer
from ..machine.transitions import Transition
from ..model.instance import Instance, Node
from ..model.records import Message, Outgoing
from ..model.status import TERMINAL_STATUSES
from . import ids
from .metrics import Child, Metrics
from .tracing import AgentScope, Tracing, _Consumed, _Delivered, _Send

if TYPE_CHECKING:
    from ..store.base import Store


class Telemetry:
    def __init__(self, now: Callable[[], float], metrics: Metrics, tracing: Tracing | None) -> None:
        self.now = now
        self.metrics = metrics
        self.tracing = tracing
        # Start times of retried attempts seen by this worker ((instance, node) -> time):
        # the record keeps only the task's first start. Taken when the attempt ends.
        self._attempt_started: dict[tuple[str, str], float] = {}
        self._templates: dict[str, _TemplateStats] = {}
        self._nodes: dict[str, dict[str, _NodeStats]] = {}  # template -> its tasks' (``_TemplateStats.nodes``)
        self._listening = metrics.enabled
        self._correlation: dict[str, dict[str, Child]] = {}
        self._commit_duration = metrics.commit_duration.child()
        self._batch_size = metrics.batch_size.child()

    # Before the commit ----------------------------------------------------------------

    def agent(self, msg: Message, name: str) -> AgentScope | None:
        return AgentScope(self.tracing, msg, name) if self.tracing is not None else None

    def outbox(self, pending: list[Any], inst: Instance, node: str, box: list[Outgoing]) -> None:
        n = inst.nodes.get(node)
        if n is None:
            return
        node_stats = self._stats(inst.template_name).node(n.name, n.topic)
        for out in box:
            node_stats.sent(out.topic).inc()
        if self.tracing is not None and inst.trace is not None:
            pending.extend(self.tracing.stamp(inst, n, box, self.now()))

    def headers(self, inst: Instance) -> dict[str, str] | None:
        tc = inst.trace
        if tc is None or self.tracing is None:
            return None
        headers = {"traceparent": ids.traceparent(int.from_bytes(tc.trace_id, "big"), tc.span, tc.flags)}
        if tc.state:
            headers["tracestate"] = tc.state
        return headers

    def correlated(
        self, pending: list[Any], msg: Message, consumer: str, result: str, matched: list[Instance], forwarded: int,
        partition: int | None = None,
    ) -> None:  # fmt: skip
        by_result = self._correlation.get(msg.topic)
        if by_result is None:
            by_result = self._correlation[msg.topic] = {}
        child = by_result.get(result)
        if child is None:
            child = by_result[result] = self.metrics.correlation.child(msg.topic, result)
        child.inc()
        if self.tracing is not None:
            pending.append(_Consumed(msg, consumer, result, matched, forwarded, self.now(), partition))

    def forward_trace(self, msg: Message, partition: int | None) -> str | None:
        if self.tracing is None:
            return None
        trace_id, span = self.tracing.consumer_ids(msg, partition)
        return ids.traceparent(trace_id, span, 1)

    def delivered(self, pending: list[Any], instance: str, event: Any, trace: str) -> None:
        if self.tracing is not None:
            pending.append(_Delivered(instance, event, trace, self.now()))

    def batch_committed(self, items: int, seconds: float) -> None:
        self._commit_duration.observe(seconds)
        self._batch_size.observe(items)

    def timer_fired(self, key: str, late: float) -> None:
        # Keys are "<node id>:<purpose>[:<job>]"; purposes are few (due, timeout, max_run, retry).
        parts = key.split(":")
        purpose = next((p for p in reversed(parts) if p in _PURPOSES), "other")
        self.metrics.timer_lateness.child(purpose).observe(max(0.0, late))

    def consumer_lag(self, topic: str, lag: int) -> None:
        self.metrics.consumer_lag.child(topic).set(lag)

    def rebalanced(self, change: str, partitions: int) -> None:
        self.metrics.rebalances.child(change).inc()

    def partition_opened(self, store: Store) -> None:
        """Count the listeners the running instances of a partition's store wait on: those
        the engine restored, or a partition that moved here. One read of its running
        instances, in pages (with metrics off: none)."""
        if not self._listening:
            return
        waiting = self.metrics.open_listeners
        now = self.now()
        offset = 0
        while True:
            page = store.list_instances(status="EXECUTING", template=None, limit=_PAGE, offset=offset)
            for inst in page:
                for nid, at in inst.correlations.items():
                    node = inst.nodes.get(nid)
                    if node is not None:
                        waiting[(inst.id, nid)] = ((inst.template_name, node.name, at.topic), node.time_submitted or now)
            if len(page) < _PAGE:
                return
            offset += _PAGE

    def partition_closed(self, owns: Callable[[str], bool] | None) -> None:
        """Forget the open listeners of a partition's instances: its new owner counts them."""
        waiting = self.metrics.open_listeners
        if owns is None:
            waiting.clear()
            return
        for key in [k for k in waiting if owns(k[0])]:
            del waiting[key]

    # After the commit -----------------------------------------------------------------

    def committed(self, changed: dict[str, Instance | None], deleted: dict[str, Instance],
                  before: dict[str, Instance | None], pending: list[Any]) -> None:  # fmt: skip
        """Report a committed batch from what it left in ``pending``: each applied event's
        ``Transition`` (its status changes and effects, as the machine reported them: no
        instance is compared with its earlier state) and the tracing entries."""
        if not pending:
            return
        now = self.now()
        tracing = self.tracing
        links: dict[str, list[Any]] | None = None
        if tracing is not None:
            for entry in pending:
                if isinstance(entry, _Send):
                    tracing.sent(entry)
                elif isinstance(entry, _Consumed):
                    link = tracing.consumed(entry, now)
                    if links is None:
                        links = {}
                    for hit in entry.matched:
                        links.setdefault(hit.id, []).append(link)
                elif isinstance(entry, _Delivered):
                    target = changed.get(entry.instance) or deleted.get(entry.instance)
                    delivered = tracing.delivered(entry, target, now)
                    if delivered is not None:
                        if links is None:
                            links = {}
                        links.setdefault(entry.instance, []).append(delivered)
        # The hot path (every workflow): few calls, no allocation. Of a transition's status
        # changes only a terminal one or the root's start matters (most are to EXECUTING).
        for entry in pending:
            if type(entry) is not Transition:
                continue
            inst = entry.instance
            if inst is None:
                continue
            for nid, was, status in entry.statuses:
                if status in TERMINAL_STATUSES:
                    if was not in TERMINAL_STATUSES:
                        self._ended(inst, nid, status, now, links)
                elif was == "NOT_STARTED" and nid == inst.id:
                    self._stats(inst.template_name).started.inc()
            if entry.effects:
                self._effects(inst, entry.effects, now)

    def _stats(self, template: str) -> _TemplateStats:
        found = self._templates.get(template)
        if found is None:
            found = self._templates[template] = _TemplateStats(self.metrics, template)
            self._nodes[template] = found.nodes
        return found

    def _node(self, template: str, node: Node) -> _NodeStats:
        by_name = self._nodes.get(template)
        found = by_name.get(node.name) if by_name is not None else None
        return found if found is not None else self._stats(template).node(node.name, node.topic)

    def _ended(self, inst: Instance, nid: str, status: str, now: float, links: dict[str, list[Any]] | None) -> None:
        """Node ``nid`` became terminal (``status``): its duration, its span."""
        node = inst.nodes[nid]
        tracing = self.tracing if inst.trace is not None else None
        if nid == inst.id:
            took = (node.time_completed or now) - node.time_created
            self._stats(inst.template_name).ended(status, took if took > 0.0 else 0.0)
            if tracing is not None:
                tracing.instance_span(inst, now)
            return
        kind = node.kind
        submitted = node.time_submitted
        if not submitted or (tracing is None and kind == "process"):
            return  # never ran (skipped, or halted before it started), or nothing to report
        start = self._attempt_started.pop((inst.id, nid), submitted) if tracing is not None else submitted
        end = node.time_completed or now
        if kind != "process":
            node_stats = self._node(inst.template_name, node)
            took = end - start
            node_stats.ended(status, took if took > 0.0 else 0.0)
            if kind == "listener":
                waited = end - submitted
                node_stats.wait.observe(waited if waited > 0.0 else 0.0)
        if tracing is not None:
            error = node.error if status == "FAILURE" else None
            found = links.get(inst.id, ()) if links and kind == "listener" else ()
            tracing.node_ended(inst, node, start, end, max(1, node.attempts), error, found)

    def _effects(self, inst: Instance, effects: list[Any], now: float) -> None:
        """Attempts started (``RunJob``), failed attempts to retry (a ``retry:`` timer) and
        the listeners indexed or no longer (``IndexPut``/``IndexDel``)."""
        for effect in effects:
            kind = type(effect)
            if kind is RunJob:
                # (a listener's on_message starts when its message comes: its wait is
                # ``listener_wait``, not a delay in starting; a stop() hook is no attempt)
                if effect.job == "on_message" or effect.job == "stop":
                    continue
                node = inst.nodes.get(effect.node)
                if node is None:
                    continue
                if node.attempts == 1:
                    if node.time_submitted:
                        delay = now - node.time_submitted
                        self._node(inst.template_name, node).schedule_to_start.observe(delay if delay > 0.0 else 0.0)
                elif self.tracing is not None and inst.trace is not None:
                    self._attempt_started[(inst.id, node.id)] = now
            elif kind is IndexPut:
                if self._listening and (node := inst.nodes.get(effect.node)) is not None:
                    self.metrics.open_listeners[(inst.id, effect.node)] = (
                        (inst.template_name, node.name, effect.at.topic), node.time_submitted or now)  # fmt: skip
            elif kind is IndexDel:
                if self._listening:
                    self.metrics.open_listeners.pop((inst.id, effect.node), None)
            elif kind is SetTimer and ":retry:" in effect.key:
                node = inst.nodes.get(effect.key.partition(":")[0])
                if node is None:
                    continue
                self._node(inst.template_name, node).retries.inc()
                if self.tracing is not None and inst.trace is not None:
                    start = self._attempt_started.pop((inst.id, node.id), node.time_submitted or now)
                    self.tracing.node_ended(inst, node, start, now, max(1, node.attempts), node.error)


#: Instances read at a time when a partition opens (``partition_opened``).
_PAGE = 1000

_PURPOSES = frozenset({"due", "timeout", "max_run", "retry"})


class _NodeStats:
    """The children of one task (template, task name): bound once, so that recording an
    event costs no label tuple and no look-up beyond this object's."""

    __slots__ = ("_durations", "_metrics", "_sent", "_task", "_template", "retries", "schedule_to_start", "wait")

    def __init__(self, metrics: Metrics, template: str, task: str, topic: str | None) -> None:
        self._metrics, self._template, self._task = metrics, template, task
        self.schedule_to_start = metrics.schedule_to_start.child(template, task)
        self.retries = metrics.retries.child(template, task)
        self.wait = metrics.listener_wait.child(template, task, topic or "")
        self._durations: dict[str, Child] = {}
        self._sent: dict[str, Child] = {}

    def ended(self, status: str, seconds: float) -> None:
        child = self._durations.get(status)
        if child is None:
            child = self._durations[status] = self._metrics.task_duration.child(self._template, self._task,
                                                                                status.lower())  # fmt: skip
        child.observe(seconds)

    def sent(self, topic: str) -> Child:
        child = self._sent.get(topic)
        if child is None:
            child = self._sent[topic] = self._metrics.commands_sent.child(self._template, self._task, topic)
        return child


class _TemplateStats:
    __slots__ = ("_durations", "_ended", "_metrics", "_template", "nodes", "started")

    def __init__(self, metrics: Metrics, template: str) -> None:
        self._metrics, self._template = metrics, template
        self.started = metrics.workflows_started.child(template)
        self._ended: dict[str, Child] = {}
        self._durations: dict[str, Child] = {}
        self.nodes: dict[str, _NodeStats] = {}

    def ended(self, status: str, seconds: float) -> None:
        ended = self._ended.get(status)
        if ended is None:
            outcome = status.lower()
            ended = self._ended[status] = self._metrics.workflows_completed.child(self._template, outcome)
            self._durations[status] = self._metrics.workflow_duration.child(self._template, outcome)
        ended.inc()
        self._durations[status].observe(seconds)

    def node(self, name: str, topic: str | None) -> _NodeStats:
        found = self.nodes.get(name)
        if found is None:
            found = self.nodes[name] = _NodeStats(self._metrics, self._template, name, topic)
        return found
