"""Traces on the embedded runtime, through the SDK's in-memory exporter (docs/observability.md):
one trace per instance, across a restart; the ``traceparent`` of sent messages; the links
of a listener message's span; a REST caller's trace continued; Dagger's sensors refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind

from daggerflow import Dagger
from daggerflow.errors import ConfigurationError
from daggerflow.telemetry import ids

from ..telemetry_support import flaky, hex_trace, named, params, pizza, ready, tracer

EngineFactory = Callable[..., Dagger]
ORDERS, READY = "trace_orders", "trace_ready"


async def test_one_trace_per_instance_across_a_restart(make_engine: EngineFactory) -> None:
    """An instance waits on its listener, the engine stops; a new engine (another process,
    another provider) on the same store completes it: every span of it, from both, is in
    the trace the record keeps, the instance span starts when it was created, and no span id
    is emitted twice."""
    provider1, exporter1 = tracer()
    first = make_engine(tracer_provider=provider1)
    await first.start()
    try:
        template = pizza(first, ORDERS, READY)
        await first.create_instance(template, "p-1", params("p-1"), submit_task=True)
        waiting = await first.wait_for("p-1", lambda i: any(n.kind == "listener" and n.status == "EXECUTING"
                                                            for n in i.nodes.values()), 10)  # fmt: skip
        assert waiting.status.code == "EXECUTING"
        record = first.committed("p-1")
        assert record is not None
        created = record.root.time_created
        trace = record.trace
        assert trace is not None and trace.parent == 0
    finally:
        await first.stop()
    before = exporter1.get_finished_spans()
    assert [s.name for s in named(before, "instance")] == []  # not ended: not emitted yet
    assert named(before, "send trace_orders") and named(before, "task PizzaWorkflow.Order.Order_command_task")

    provider2, exporter2 = tracer()
    second = make_engine(tracer_provider=provider2)
    await second.start()
    try:
        pizza(second, ORDERS, READY)
        await second.append(READY, "p-1", ready("p-1"), None)
        done = await second.wait_for("p-1", None, 10)
        assert done.status.code == "COMPLETED"
    finally:
        await second.stop()
    after = exporter2.get_finished_spans()
    mine = [s for s in (*before, *after) if (s.attributes or {}).get("daggerflow.instance.id") == "p-1"]
    assert {hex_trace(s) for s in mine} == {trace.trace_id.hex()}
    (instance,) = named(after, "instance PizzaWorkflow")
    assert instance.parent is None and instance.start_time == int(created * 1e9)
    assert instance.context is not None and instance.context.span_id == trace.span == ids.span_id("p-1", "instance")
    names = sorted(s.name for s in mine)
    assert names == sorted([
        "instance PizzaWorkflow", "process PizzaWorkflow.Order", "process PizzaWorkflow.Delivery",
        "task PizzaWorkflow.Order.Order_command_task", "send trace_orders",
        "task PizzaWorkflow.Order.Order_listener_task", "task PizzaWorkflow.Delivery.Delivery_executor_task",
    ])  # fmt: skip
    span_ids = [s.context.span_id for s in mine if s.context is not None]
    assert len(span_ids) == len(set(span_ids))
    # Parents are the derived ids of the enclosing nodes: the tree is whole.
    by_id = {s.context.span_id: s for s in mine if s.context is not None}
    for span in mine:
        if span is not instance:
            assert span.parent is not None and span.parent.span_id in by_id, span.name


async def test_sent_messages_carry_the_traceparent_of_their_send_span(make_engine: EngineFactory) -> None:
    provider, exporter = tracer()
    engine = make_engine(tracer_provider=provider)
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "h-1", params("h-1"), submit_task=True)
        (message,) = engine.read_topic(ORDERS, 0, 10)
        parsed = ids.parse_traceparent(message.headers["traceparent"])
        assert parsed is not None
        (send,) = named(exporter.get_finished_spans(), f"send {ORDERS}")
        assert send.kind is SpanKind.PRODUCER and send.context is not None
        assert parsed == (send.context.trace_id, send.context.span_id, 1)
        attrs = send.attributes or {}
        assert attrs["messaging.destination.name"] == ORDERS and attrs["daggerflow.task.attempt"] == 1
        assert attrs["daggerflow.instance.id"] == "h-1" and attrs["messaging.operation.type"] == "send"
        assert not any("order" in str(v) and "h-1" in str(v) for k, v in attrs.items() if k != "daggerflow.instance.id")
    finally:
        await engine.stop()


async def test_a_listener_message_links_to_every_instance_it_matched(make_engine: EngineFactory) -> None:
    """Two instances wait for the same order id; one READY completes both: its ``process``
    span links to both instances' traces (links, not parents: it has none), and each
    listener's task span links back to it. The correlation value is in no attribute."""
    provider, exporter = tracer()
    engine = make_engine(tracer_provider=provider)
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        traces = []
        for iid in ("m-1", "m-2"):
            await engine.create_instance(template, iid, params("shared-42"), submit_task=True)
            record = engine.committed(iid)
            assert record is not None and record.trace is not None
            traces.append(record.trace.trace_id.hex())
        assert traces[0] != traces[1]
        await engine.append(READY, "shared-42", ready("shared-42"), {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
        for iid in ("m-1", "m-2"):
            await engine.wait_for(iid, None, 10)
        (process,) = named(exporter.get_finished_spans(), f"process {READY}")
        assert process.kind is SpanKind.CONSUMER and process.parent is None
        linked = {f"{link.context.trace_id:032x}" for link in process.links}
        assert linked == {*traces, "ab" * 16}  # both instances, and the message's creation context
        attrs = process.attributes or {}
        assert attrs["daggerflow.correlation.result"] == "matched" and attrs["daggerflow.correlation.matched"] == 2
        assert "shared-42" not in str(dict(attrs))
        assert process.context is not None
        for listener in named(exporter.get_finished_spans(), "task PizzaWorkflow.Order.Order_listener_task"):
            assert [link.context.span_id for link in listener.links] == [process.context.span_id]
    finally:
        await engine.stop()


async def test_a_rest_request_s_traceparent_is_the_instance_s_parent(make_engine: EngineFactory) -> None:
    provider, exporter = tracer()
    engine = make_engine(tracer_provider=provider, web_port=0)
    await engine.start()
    try:
        pizza(engine, ORDERS, READY)
        caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        async with httpx.AsyncClient(base_url=engine.web_url or "", timeout=10) as client:
            response = await client.post(
                "/api/v1/templates/PizzaWorkflow/instances",
                json={"id": "r-1", "runtime_parameters": params("r-1")},
                headers={"traceparent": f"00-{caller_trace}-{caller_span}-01", "tracestate": "vendor=x"},
            )
            assert response.status_code in (200, 201), response.text
            committed = engine.committed("r-1")
            assert committed is not None and committed.trace is not None
            assert committed.trace.trace_id.hex() == caller_trace
            assert committed.trace.parent == int(caller_span, 16) and committed.trace.state == "vendor=x"
            (message,) = engine.read_topic(ORDERS, 0, 10)
            assert message.headers["traceparent"].startswith(f"00-{caller_trace}-")
            assert message.headers["tracestate"] == "vendor=x"
            await engine.append(READY, "r-1", ready("r-1"), None)
            await engine.wait_for("r-1", None, 10)
            (instance,) = named(exporter.get_finished_spans(), "instance PizzaWorkflow")
            assert instance.parent is not None and f"{instance.parent.span_id:016x}" == caller_span
            metrics = (await client.get("/metrics")).text
        assert 'daggerflow_http_request_duration_seconds_count{method="POST",route="/api/v1/templates/{name}/instances"' in metrics
    finally:
        await engine.stop()


@pytest.fixture
def no_global_tracer_provider() -> Any:
    """The process as an application without an OpenTelemetry SDK sees it: the global tracer
    provider is the API's proxy. A telemetry capture earlier in the session (daggerflow.testing)
    installs an SDK provider once per process, so its globals are set aside here and put back
    after (the way OpenTelemetry's own test utilities reset them)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


@pytest.mark.usefixtures("no_global_tracer_provider")
async def test_without_a_tracer_provider_nothing_is_traced(make_engine: EngineFactory) -> None:
    """No SDK configured (the global provider is the API's proxy): no context in the record,
    no headers on messages: the hot path pays one test per point."""
    engine = make_engine()
    await engine.start()
    try:
        assert engine.telemetry is not None and engine.telemetry.tracing is None
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "n-1", params("n-1"), submit_task=True)
        record = engine.committed("n-1")
        assert record is not None and record.trace is None
        (message,) = engine.read_topic(ORDERS, 0, 10)
        assert "traceparent" not in message.headers
    finally:
        await engine.stop()


async def test_tracing_false_turns_a_provider_off(make_engine: EngineFactory) -> None:
    provider, exporter = tracer()
    engine = make_engine(tracer_provider=provider, tracing=False)
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "f-1", params("f-1"), submit_task=True)
        assert exporter.get_finished_spans() == ()
    finally:
        await engine.stop()


@pytest.mark.parametrize("option", ["tracing_sensor", "datadog_sensor"])
def test_dagger_s_sensors_are_refused_saying_what_to_do(option: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{option} is not supported.*OpenTelemetry.*observability.md"):
        Dagger(web_port=None, store="memory://", **{option: object()})
    Dagger(web_port=None, store="memory://", **{option: None})  # Dagger's default: accepted


async def test_an_agent_continues_the_trace_of_the_message_it_handles(make_engine: EngineFactory) -> None:
    """The order service is an agent: it handles the order in the instance's trace (its
    span's parent is the order's send span), and its READY answer carries that trace."""
    provider, exporter = tracer()
    engine = make_engine(tracer_provider=provider)
    answered = asyncio.Event()

    @engine.agent(ORDERS, name="kitchen")
    async def kitchen(value: Any) -> None:
        await engine.topics[READY].send(value=ready("a-1"))
        answered.set()

    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "a-1", params("a-1"), submit_task=True)
        await engine.wait_for("a-1", None, 10)
        record = engine.committed("a-1")
        assert record is not None and record.trace is not None
        spans = exporter.get_finished_spans()
        (send,) = named(spans, f"send {ORDERS}")
        (handled,) = named(spans, f"process {ORDERS}")
        assert handled.parent is not None and send.context is not None
        assert handled.parent.span_id == send.context.span_id
        (answer,) = engine.read_topic(READY, 0, 10)
        assert answer.headers["traceparent"].split("-")[1] == record.trace.trace_id.hex()
    finally:
        await engine.stop()


async def test_each_attempt_of_a_retried_task_is_a_span(make_engine: EngineFactory) -> None:
    from opentelemetry.trace import StatusCode

    provider, exporter = tracer()
    engine = make_engine(tracer_provider=provider)
    await engine.start()
    try:
        template = flaky(engine)
        await engine.create_instance(template, "t-1", {}, submit_task=True)
        await engine.wait_for("t-1", None, 10)
    finally:
        await engine.stop()
    attempts = sorted(named(exporter.get_finished_spans(), "task Flaky.P.flaky"),
                      key=lambda s: (s.attributes or {})["daggerflow.task.attempt"])  # fmt: skip
    assert [(s.attributes or {})["daggerflow.task.attempt"] for s in attempts] == [1, 2]
    assert attempts[0].status.status_code is StatusCode.ERROR and "not yet" in (attempts[0].status.description or "")
    assert attempts[1].status.status_code is StatusCode.UNSET
    assert attempts[0].context is not None and attempts[1].context is not None
    assert attempts[0].context.span_id != attempts[1].context.span_id  # (instance, node, attempt)
    assert attempts[1].start_time >= attempts[0].end_time


async def test_update_topic_snapshots_carry_the_instance_s_trace(make_engine: EngineFactory) -> None:
    provider, _ = tracer()
    engine = make_engine(tracer_provider=provider, task_update_topic="trace_updates")
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "u-1", params("u-1"), submit_task=True)
        record = engine.committed("u-1")
        assert record is not None and record.trace is not None
        updates = engine.read_topic("trace_updates", 0, 10)
        assert updates
        expected = ids.traceparent(int.from_bytes(record.trace.trace_id, "big"), record.trace.span, 1)
        assert {m.headers.get("traceparent") for m in updates} == {expected}
    finally:
        await engine.stop()


async def test_an_instance_is_sampled_whole_or_not_at_all(make_engine: EngineFactory) -> None:
    """The sampler decides once, for the instance's root; the flag kept in the record makes
    every later span (on any worker) follow it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = make_engine(tracer_provider=provider)
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "s-1", params("s-1"), submit_task=True)
        await engine.append(READY, "s-1", ready("s-1"), None)
        await engine.wait_for("s-1", None, 10)
        record = engine.committed("s-1")
        assert record is not None and record.trace is not None and record.trace.flags == 0
        assert [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("daggerflow.instance.id")] == []
        (message,) = engine.read_topic(ORDERS, 0, 10)
        assert message.headers["traceparent"].endswith("-00")  # the decision travels with it
    finally:
        await engine.stop()
