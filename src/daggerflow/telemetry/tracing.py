"""Spans of instances, their processes and tasks, and of the messages they send and receive,
through the OpenTelemetry API only (the application installs the SDK and its exporter).

No span stays open while an instance waits: each is emitted when what it describes has
ended and committed, with its real start time from the instance record, and with an id
derived from what it describes (``ids``). One trace per instance: ``context_for`` gives a
new instance the caller's trace (the current span: a REST request's ``traceparent``, an
agent's message), else a trace of its own, and the instance keeps it in its record
(``Instance.trace``), so every worker that ever holds it emits into the same trace.

==========================  ========  ==================================================
span                        kind      parent, links
==========================  ========  ==================================================
``instance {template}``     INTERNAL  the caller's span, or none
``process {process}``       INTERNAL  the instance (or the enclosing process) span
``task {task}``             INTERNAL  its process span; one per attempt; a listener's
                                      span links to the ``process {topic}`` spans of the
                                      messages it received in the commit that ended it
``send {topic}``            PRODUCER  the sending attempt's task span; its context is the
                                      message's ``traceparent`` header
``process {topic}``         CONSUMER  none; links to the message's ``traceparent`` and to
                                      the ``instance`` span of every instance it matched
                                      (one per correlation partition that matched it)
``process {topic}``         CONSUMER  a delivery forwarded to another partition's owner:
  (forwarded)                         the matching partition's span; links to the
                                      ``instance`` span of the instance it went to
==========================  ========  ==================================================
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from ..model.instance import Instance, Node, TraceContext
from ..model.records import Message, Outgoing
from . import ids

INSTANCE = "instance"  # the ``span_id`` part naming an instance's own span

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def tracer_provider() -> Any | None:
    """The application's tracer provider, or None if it installed none (tracing is off)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider


def _version() -> str:
    try:
        return version("daggerflow")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _state(text: str) -> TraceState | None:
    return TraceState.from_header([text]) if text else None


class Tracing:
    """Emits the engine's spans into ``provider``; ``system``: ``messaging.system``;
    ``group``: the consumer group of the messages the partitions read (Kafka's main group)."""

    def __init__(self, provider: Any, system: str, group: str = "") -> None:
        self.seeded = ids.install(provider)
        self.sampler = getattr(provider, "sampler", None)  # (the SDK's; for a new root's flag)
        self.tracer = provider.get_tracer("daggerflow", _version())
        self.system = system
        self.group = group

    # Contexts -------------------------------------------------------------------------

    def context_for(self, instance_id: str, template: str = "") -> TraceContext:
        """The trace context of a new instance: the current span's trace, else its own, sampled
        as the provider's sampler decides for a root (the flag every later span follows)."""
        span = ids.span_id(instance_id, INSTANCE)
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            return TraceContext(current.trace_id.to_bytes(16, "big"), span, current.span_id,
                                int(current.trace_flags), current.trace_state.to_header())  # fmt: skip
        trace_id = ids.trace_id(instance_id)
        return TraceContext(trace_id.to_bytes(16, "big"), span, 0, self._root_flags(trace_id, template))

    def _root_flags(self, trace_id: int, template: str) -> int:
        if self.sampler is None:
            return 1
        try:
            result = self.sampler.should_sample(None, trace_id, f"instance {template}", SpanKind.INTERNAL)
            return 1 if result.decision.is_sampled() else 0
        except Exception:  # a sampler of another shape: sample, as the API's default does
            return 1

    @staticmethod
    def link_to(tc: TraceContext, span: int, attributes: Mapping[str, Any] | None = None) -> Link:
        ctx = SpanContext(int.from_bytes(tc.trace_id, "big"), span, True, TraceFlags(tc.flags), _state(tc.state))
        return Link(ctx, attributes)

    @staticmethod
    def message_link(headers: Mapping[str, str]) -> Link | None:
        """A link to the context a message was created in (its ``traceparent``), if any."""
        parsed = ids.parse_traceparent(headers.get("traceparent"))
        if parsed is None:
            return None
        ctx = SpanContext(parsed[0], parsed[1], True, TraceFlags(parsed[2]), _state(headers.get("tracestate", "")))
        return Link(ctx)

    # Emitting -------------------------------------------------------------------------

    def emit(
        self,
        name: str,
        trace_id: int,
        span: int,
        parent: int,
        flags: int,
        state: str,
        start: float,
        end: float,
        attributes: Mapping[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] = (),
        error: str | None = None,
    ) -> None:
        """One finished span with the given ids and times (``parent`` 0: a root)."""
        if parent:
            ctx = trace.set_span_in_context(
                NonRecordingSpan(SpanContext(trace_id, parent, True, TraceFlags(flags), _state(state)))
            )
        else:
            ctx = Context()
        seeded = self.seeded
        if seeded is not None:
            seeded.next_span = span
            seeded.next_trace = 0 if parent else trace_id
        try:
            out = self.tracer.start_span(name, ctx, kind, attributes, links, _ns(start), False, False)
        finally:
            if seeded is not None:
                seeded.next_span = seeded.next_trace = 0
        if error is not None:
            out.set_status(Status(StatusCode.ERROR, error[:500]))
        out.end(_ns(max(end, start)))

    def node_span(self, inst: Instance, node: Node, attempt: int | None = None) -> int:
        """The id of ``node``'s span (a task's: of ``attempt``, default its current one)."""
        if node.parent is None:
            assert inst.trace is not None
            return inst.trace.span
        if node.kind == "process":
            return ids.span_id(inst.id, node.id)
        return ids.span_id(inst.id, node.id, max(1, node.attempts if attempt is None else attempt))

    def parent_span(self, inst: Instance, node: Node) -> int:
        parent = inst.nodes.get(node.parent) if node.parent is not None else None
        if parent is None:
            assert inst.trace is not None
            return inst.trace.span
        return self.node_span(inst, parent)

    def instance_span(self, inst: Instance, now: float) -> None:
        tc = inst.trace
        assert tc is not None
        root = inst.root
        attrs = {"daggerflow.instance.id": inst.id, "daggerflow.template": inst.template_name,
                 "daggerflow.instance.status": root.status}  # fmt: skip
        error = (root.error or "FAILURE") if root.status == "FAILURE" else None
        self.emit(f"instance {inst.template_name}", int.from_bytes(tc.trace_id, "big"), tc.span, tc.parent,
                  tc.flags, tc.state, root.time_created or now, root.time_completed or now, attrs,
                  error=error)  # fmt: skip

    def node_ended(
        self, inst: Instance, node: Node, start: float, end: float, attempt: int, error: str | None,
        links: Sequence[Link] = (),
    ) -> None:  # fmt: skip
        """The span of a process, or of one attempt of a task."""
        tc = inst.trace
        assert tc is not None
        attrs: dict[str, Any] = {"daggerflow.instance.id": inst.id, "daggerflow.template": inst.template_name}
        if node.kind == "process":
            name = f"process {node.name}"
            attrs["daggerflow.process.name"] = node.name
        else:
            name = f"task {node.name}"
            attrs["daggerflow.task.name"] = node.name
            attrs["daggerflow.task.kind"] = node.kind
            attrs["daggerflow.task.attempt"] = attempt
            if node.topic:
                attrs["messaging.destination.name"] = node.topic
        attrs["daggerflow.task.status"] = node.status
        self.emit(name, int.from_bytes(tc.trace_id, "big"), self.node_span(inst, node, attempt),
                  self.parent_span(inst, node), tc.flags, tc.state, start, end, attrs, links=links,
                  error=error)  # fmt: skip

    # Messages -------------------------------------------------------------------------

    def stamp(self, inst: Instance, node: Node, box: list[Outgoing], now: float) -> list[Any]:
        """Give each message of ``box`` a ``traceparent`` (and ``tracestate``) header naming
        its ``send`` span; the spans to emit once the batch commits."""
        tc = inst.trace
        assert tc is not None
        attempt = max(1, node.attempts)
        trace_id = int.from_bytes(tc.trace_id, "big")
        parent = ids.span_id(inst.id, node.id, attempt)
        pending = []
        for i, out in enumerate(box):
            span = ids.span_id(inst.id, node.id, attempt, "send", i)
            out.headers["traceparent"] = ids.traceparent(trace_id, span, tc.flags)
            if tc.state:
                out.headers["tracestate"] = tc.state
            pending.append(_Send(out.topic, inst.id, inst.template_name, node.name, attempt, trace_id,
                                 span, parent, tc.flags, tc.state, now))  # fmt: skip
        return pending

    def sent(self, s: _Send) -> None:
        attrs = {"messaging.system": self.system, "messaging.operation.name": "send",
                 "messaging.operation.type": "send", "messaging.destination.name": s.topic,
                 "daggerflow.instance.id": s.instance, "daggerflow.template": s.template,
                 "daggerflow.task.name": s.task, "daggerflow.task.attempt": s.attempt}  # fmt: skip
        self.emit(f"send {s.topic}", s.trace_id, s.span, s.parent, s.flags, s.state, s.at, s.at, attrs,
                  kind=SpanKind.PRODUCER)  # fmt: skip

    @staticmethod
    def consumer_ids(msg: Message, partition: int | None) -> tuple[int, int]:
        """The (trace, span) ids of the ``process {topic}`` span of ``msg`` matched by the
        task of ``partition``: one trace per message; one span per correlation partition
        that matched it (a message routed to several has a span on each), replay-stable."""
        where = (msg.topic, msg.partition if msg.partition is not None else "", msg.offset)
        if partition is None:
            return ids.trace_id(*where, "process"), ids.span_id(*where, "process")
        return ids.trace_id(*where, "process"), ids.span_id(*where, "process", partition)

    def consumed(self, c: _Consumed, end: float) -> Link:
        """The ``process {topic}`` span of a listener message; a link to it, for the
        listener tasks it completed."""
        msg = c.message
        trace_id, span = self.consumer_ids(msg, c.partition)
        attrs: dict[str, Any] = {"messaging.system": self.system, "messaging.operation.name": "process",
                                 "messaging.operation.type": "process", "messaging.destination.name": msg.topic,
                                 "daggerflow.correlation.result": c.result,
                                 "daggerflow.correlation.matched": len(c.matched) + c.forwarded}  # fmt: skip
        if msg.partition is not None:
            attrs["messaging.destination.partition.id"] = str(msg.partition)
            attrs["messaging.kafka.offset"] = msg.offset
        else:
            attrs["messaging.message.id"] = str(msg.offset)
        if c.consumer or self.group:
            attrs["messaging.consumer.group.name"] = c.consumer or self.group
        links = []
        origin = self.message_link(msg.headers)
        if origin is not None:
            links.append(origin)
        seen: set[str] = set()
        for inst in c.matched:
            if inst.trace is not None and inst.id not in seen:
                seen.add(inst.id)
                links.append(self.link_to(inst.trace, inst.trace.span, {"daggerflow.instance.id": inst.id}))
        self.emit(f"process {msg.topic}", trace_id, span, 0, 1, "", c.at, end, attrs, kind=SpanKind.CONSUMER,
                  links=links)  # fmt: skip
        return Link(SpanContext(trace_id, span, True, _SAMPLED))

    def delivered(self, d: _Delivered, inst: Instance | None, end: float) -> Link | None:
        """The ``process {topic}`` span of a delivery forwarded to this instance's owner: a
        child of the matching partition's consumer span (``d.trace``, so in the message's
        trace), linked to the instance's span; a link to it, for the listener's task span."""
        parsed = ids.parse_traceparent(d.trace)
        if parsed is None:
            return None
        trace_id, parent, flags = parsed
        event = d.event
        span = ids.span_id(event.topic, event.partition if event.partition >= 0 else "", event.offset, "deliver",
                           d.instance, event.node)  # fmt: skip
        attrs: dict[str, Any] = {"messaging.system": self.system, "messaging.operation.name": "process",
                                 "messaging.operation.type": "process", "messaging.destination.name": event.topic,
                                 "daggerflow.correlation.result": "matched", "daggerflow.correlation.matched": 1,
                                 "daggerflow.instance.id": d.instance}  # fmt: skip
        if event.partition >= 0:
            attrs["messaging.destination.partition.id"] = str(event.partition)
            attrs["messaging.kafka.offset"] = event.offset
        if self.group:
            attrs["messaging.consumer.group.name"] = self.group
        links = []
        if inst is not None and inst.trace is not None:
            attrs["daggerflow.template"] = inst.template_name
            links.append(self.link_to(inst.trace, inst.trace.span, {"daggerflow.instance.id": inst.id}))
        self.emit(f"process {event.topic}", trace_id, span, parent, flags, "", d.at, end, attrs,
                  kind=SpanKind.CONSUMER, links=links)  # fmt: skip
        return Link(SpanContext(trace_id, span, True, TraceFlags(flags)))


class _Delivered:
    __slots__ = ("at", "event", "instance", "trace")

    def __init__(self, instance: str, event: Any, trace: str, at: float) -> None:
        self.instance, self.event, self.trace, self.at = instance, event, trace, at


class _Send:
    __slots__ = (
        "at",
        "attempt",
        "flags",
        "instance",
        "parent",
        "span",
        "state",
        "task",
        "template",
        "topic",
        "trace_id",
    )  # fmt: skip

    def __init__(self, topic: str, instance: str, template: str, task: str, attempt: int, trace_id: int,
                 span: int, parent: int, flags: int, state: str, at: float) -> None:  # fmt: skip
        self.topic, self.instance, self.template, self.task, self.attempt = topic, instance, template, task, attempt
        self.trace_id, self.span, self.parent, self.flags, self.state, self.at = trace_id, span, parent, flags, state, at


class _Consumed:
    __slots__ = ("at", "consumer", "forwarded", "matched", "message", "partition", "result")

    def __init__(self, message: Message, consumer: str, result: str, matched: list[Instance], forwarded: int,
                 at: float, partition: int | None = None) -> None:  # fmt: skip
        self.message, self.consumer, self.result, self.matched = message, consumer, result, matched
        self.forwarded, self.at, self.partition = forwarded, at, partition


class AgentScope:
    """An agent handling one message: a ``process {topic}`` span, live while the handler
    runs and current, so that an instance the handler creates continues its trace. Its
    parent is the message's ``traceparent`` when there is one (one message, one handler:
    the messaging conventions' parent option), so a request and its reply through an agent
    stay in the requester's trace. ``sent`` stamps what the handler sent."""

    def __init__(self, tracing: Tracing, msg: Message, name: str) -> None:
        self.tracing = tracing
        where = (msg.topic, msg.partition if msg.partition is not None else "", msg.offset, name)
        self.ids = where
        parsed = ids.parse_traceparent(msg.headers.get("traceparent"))
        if parsed is not None:
            trace_id, parent, flags = parsed
            state = msg.headers.get("tracestate", "")
        else:
            trace_id, parent, flags, state = ids.trace_id(*where), 0, 1, ""
        self.trace_id, self.flags, self.state = trace_id, flags, state
        self.span_id = ids.span_id(*where, "agent")
        attrs: dict[str, Any] = {"messaging.system": tracing.system, "messaging.operation.name": "process",
                                 "messaging.operation.type": "process", "messaging.destination.name": msg.topic,
                                 "messaging.consumer.group.name": name, "daggerflow.agent.name": name}  # fmt: skip
        if msg.partition is not None:
            attrs["messaging.destination.partition.id"] = str(msg.partition)
            attrs["messaging.kafka.offset"] = msg.offset
        if parent:
            ctx = trace.set_span_in_context(
                NonRecordingSpan(SpanContext(trace_id, parent, True, TraceFlags(flags), _state(state)))
            )
        else:
            ctx = Context()
        seeded = tracing.seeded
        if seeded is not None:
            seeded.next_span, seeded.next_trace = self.span_id, 0 if parent else trace_id
        try:
            self.span = tracing.tracer.start_span(f"process {msg.topic}", ctx, SpanKind.CONSUMER, attrs)
        finally:
            if seeded is not None:
                seeded.next_span = seeded.next_trace = 0
        self._token: Any = None

    def __enter__(self) -> AgentScope:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)

    def sent(self, box: list[Outgoing], error: str | None) -> None:
        """End the span; give each message ``box`` holds its ``send`` span and headers."""
        now = time.time()
        for i, out in enumerate(box):
            span = ids.span_id(*self.ids, "send", i)
            out.headers["traceparent"] = ids.traceparent(self.trace_id, span, self.flags)
            if self.state:
                out.headers["tracestate"] = self.state
            attrs = {"messaging.system": self.tracing.system, "messaging.operation.name": "send",
                     "messaging.operation.type": "send", "messaging.destination.name": out.topic}  # fmt: skip
            self.tracing.emit(f"send {out.topic}", self.trace_id, span, self.span_id, self.flags, self.state,
                              now, now, attrs, kind=SpanKind.PRODUCER)  # fmt: skip
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error[:500]))
        self.span.end()
