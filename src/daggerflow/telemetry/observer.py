"""``Telemetry``: what the pipeline observes (``pipeline.observe.PipelineObserver``) turned
into metrics and, when the application installed a tracer provider, spans.

After each commit it compares every changed instance with its state before the batch, as
the lifecycle log does: a root that left NOT_STARTED started, a node that became terminal
ended (its span, its duration), a task whose job ended with an error and is not terminal
failed an attempt that will be retried. Everything it reports is committed state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.instance import Instance, Node
from ..model.records import Message, Outgoing
from ..model.status import TERMINAL_STATUSES
from . import ids
from .metrics import Child, Metrics
from .tracing import AgentScope, Tracing, _Consumed, _Send

_NO_NODES: dict[str, Node] = {}
_NO_CORRELATIONS: dict[str, Any] = {}


class Telemetry:
    def __init__(self, now: Callable[[], float], metrics: Metrics, tracing: Tracing | None) -> None:
        self.now = now
        self.metrics = metrics
        self.tracing = tracing
        # Start times of retried attempts seen by this worker ((instance, node) -> time):
        # the record keeps only the task's first start. Taken when the attempt ends.
        self._attempt_started: dict[tuple[str, str], float] = {}
        self._templates: dict[str, _TemplateStats] = {}

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
        self, pending: list[Any], msg: Message, consumer: str, result: str, matched: list[Instance], forwarded: int
    ) -> None:
        self.metrics.correlation.child(msg.topic, result).inc()
        if self.tracing is not None:
            pending.append(_Consumed(msg, consumer, result, matched, forwarded, self.now()))

    def batch_committed(self, items: int, seconds: float) -> None:
        self.metrics.commit_duration.child().observe(seconds)
        self.metrics.batch_size.child().observe(items)

    def timer_fired(self, key: str, late: float) -> None:
        # Keys are "<node id>:<purpose>[:<job>]"; purposes are few (due, timeout, max_run, retry).
        parts = key.split(":")
        purpose = next((p for p in reversed(parts) if p in _PURPOSES), "other")
        self.metrics.timer_lateness.child(purpose).observe(max(0.0, late))

    def consumer_lag(self, topic: str, lag: int) -> None:
        self.metrics.consumer_lag.child(topic).set(lag)

    def rebalanced(self, change: str, partitions: int) -> None:
        self.metrics.rebalances.child(change).inc()

    # After the commit -----------------------------------------------------------------

    def committed(self, changed: dict[str, Instance | None], deleted: dict[str, Instance],
                  before: dict[str, Instance | None], pending: list[Any]) -> None:  # fmt: skip
        now = self.now()
        links: dict[str, list[Any]] | None = None
        tracing = self.tracing
        if pending and tracing is not None:
            links = {}
            for entry in pending:
                if isinstance(entry, _Send):
                    tracing.sent(entry)
                else:
                    link = tracing.consumed(entry, now)
                    for inst in entry.matched:
                        links.setdefault(inst.id, []).append(link)
        for iid, inst in changed.items():
            gone = inst is None
            if inst is None:
                inst = deleted.get(iid)
                if inst is None:
                    continue
            self._instance(inst, before.get(iid), gone, now, links)

    def _stats(self, template: str) -> _TemplateStats:
        found = self._templates.get(template)
        if found is None:
            found = self._templates[template] = _TemplateStats(self.metrics, template)
        return found

    def _instance(self, inst: Instance, prev: Instance | None, gone: bool, now: float,
                  links: dict[str, list[Any]] | None) -> None:  # fmt: skip
        stats = self._stats(inst.template_name)
        root = inst.root
        tracing = self.tracing if inst.trace is not None else None
        prev_nodes = prev.nodes if prev is not None else _NO_NODES
        if (inst.correlations or (prev is not None and prev.correlations)) and self.metrics.enabled:
            self._listeners(inst, prev, gone, now)
        for node in inst.nodes.values():
            old = prev_nodes.get(node.id)
            status = node.status
            if old is None:
                if status == "NOT_STARTED":
                    continue  # (created by this batch, not reached yet)
            elif old.status == status and old.job_seq == node.job_seq and old.error == node.error:
                continue
            terminal = status in TERMINAL_STATUSES
            ended = terminal and (old is None or old.status not in TERMINAL_STATUSES)
            if node is root:
                if (old is None or old.status == "NOT_STARTED") and status != "NOT_STARTED":
                    stats.started.inc()
                if ended:
                    took = (node.time_completed or now) - root.time_created
                    stats.ended(status, took if took > 0.0 else 0.0)
                    if tracing is not None:
                        tracing.instance_span(inst, now)
                continue
            old_seq = old.job_seq if old is not None else 0
            if node.job_seq > old_seq:  # an attempt started in this batch
                if node.attempts == 1 and node.time_submitted:
                    delay = now - node.time_submitted
                    stats.node(node.name, node.topic).schedule_to_start.observe(delay if delay > 0.0 else 0.0)
                elif node.attempts > 1 and tracing is not None:
                    self._attempt_started[(inst.id, node.id)] = now
            if ended:
                if not node.time_submitted:
                    continue  # never ran (skipped, or halted before it started)
                start = self._attempt_started.pop((inst.id, node.id), node.time_submitted) if tracing else node.time_submitted
                end = node.time_completed or now
                if node.kind != "process":
                    node_stats = stats.node(node.name, node.topic)
                    took = end - start
                    node_stats.ended(status, took if took > 0.0 else 0.0)
                    if node.kind == "listener":
                        waited = end - node.time_submitted
                        node_stats.wait.observe(waited if waited > 0.0 else 0.0)
                if tracing is not None:
                    error = node.error if status == "FAILURE" else None
                    found = links.get(inst.id, ()) if links and node.kind == "listener" else ()
                    tracing.node_ended(inst, node, start, end, max(1, node.attempts), error, found)
            elif (
                not terminal and node.error is not None and node.job is None
                and (old is None or old.job is not None or old_seq != node.job_seq)
            ):  # fmt: skip
                stats.node(node.name, node.topic).retries.inc()
                if tracing is not None:
                    start = self._attempt_started.pop((inst.id, node.id), node.time_submitted or now)
                    tracing.node_ended(inst, node, start, now, max(1, node.attempts), node.error)

    def _listeners(self, inst: Instance, prev: Instance | None, gone: bool, now: float) -> None:
        """Keep ``Metrics.open_listeners`` in step with the instance's indexed listeners."""
        current = _NO_CORRELATIONS if gone else inst.correlations
        old = prev.correlations if prev is not None else _NO_CORRELATIONS
        waiting = self.metrics.open_listeners
        for nid in old:
            if nid not in current:
                waiting.pop((inst.id, nid), None)
        for nid, at in current.items():
            if nid not in old and (node := inst.nodes.get(nid)) is not None:
                waiting[(inst.id, nid)] = ((inst.template_name, node.name, at.topic), node.time_submitted or now)


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
    __slots__ = ("_durations", "_ended", "_metrics", "_nodes", "_template", "started")

    def __init__(self, metrics: Metrics, template: str) -> None:
        self._metrics, self._template = metrics, template
        self.started = metrics.workflows_started.child(template)
        self._ended: dict[str, Child] = {}
        self._durations: dict[str, Child] = {}
        self._nodes: dict[str, _NodeStats] = {}

    def ended(self, status: str, seconds: float) -> None:
        ended = self._ended.get(status)
        if ended is None:
            outcome = status.lower()
            ended = self._ended[status] = self._metrics.workflows_completed.child(self._template, outcome)
            self._durations[status] = self._metrics.workflow_duration.child(self._template, outcome)
        ended.inc()
        self._durations[status].observe(seconds)

    def node(self, name: str, topic: str | None) -> _NodeStats:
        found = self._nodes.get(name)
        if found is None:
            found = self._nodes[name] = _NodeStats(self._metrics, self._template, name, topic)
        return found
