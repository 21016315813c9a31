"""Metrics on the embedded runtime: the Prometheus text at ``/metrics`` (served by the real
HTTP server) and the same instruments through an OpenTelemetry ``MeterProvider``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daggerflow import Dagger

from ..telemetry_support import flaky, params, pizza, ready

EngineFactory = Callable[..., Dagger]
ORDERS, READY = "metric_orders", "metric_ready"
TEMPLATE = "PizzaWorkflow"
LISTENER = "PizzaWorkflow.Order.Order_listener_task"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_answer_what_happened(make_engine: EngineFactory) -> None:
    reader = InMemoryMetricReader()
    engine = make_engine(web_port=0, meter_provider=MeterProvider(metric_readers=[reader]))
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        for iid in ("q-1", "q-2"):
            await engine.create_instance(template, iid, params(iid), submit_task=True)
        async with httpx.AsyncClient(base_url=engine.web_url or "", timeout=10) as client:
            waiting = samples((await client.get("/metrics")).text)
            await engine.append(READY, None, ready("q-1"), None)
            await engine.wait_for("q-1", None, 10)
            await engine.append(READY, None, ready("nobody"), None)
            text = (await client.get("/metrics")).text
        found = samples(text)
    finally:
        await engine.stop()
    assert value(waiting, "daggerflow_listeners_open", template=TEMPLATE, task=LISTENER, topic=READY) == 2
    assert value(waiting, "daggerflow_listener_oldest_wait_seconds", template=TEMPLATE, task=LISTENER,
                 topic=READY) >= 0  # fmt: skip
    assert value(found, "daggerflow_listeners_open", template=TEMPLATE, task=LISTENER, topic=READY) == 1
    assert value(found, "daggerflow_workflows_started_total", template=TEMPLATE) == 2
    assert value(found, "daggerflow_workflows_completed_total", template=TEMPLATE, outcome="completed") == 1
    assert value(found, "daggerflow_workflow_duration_seconds_count", template=TEMPLATE, outcome="completed") == 1
    # The histogram the issue names, with its buckets, by template and task only.
    executor = "PizzaWorkflow.Delivery.Delivery_executor_task"
    assert value(found, "daggerflow_task_duration_seconds_count", template=TEMPLATE, task=executor,
                 outcome="completed") == 1  # fmt: skip
    assert value(found, "daggerflow_task_duration_seconds_bucket", template=TEMPLATE, task=executor,
                 outcome="completed", le="+Inf") == 1  # fmt: skip
    assert value(found, "daggerflow_listener_wait_duration_seconds_count", template=TEMPLATE, task=LISTENER,
                 topic=READY) == 1  # fmt: skip
    command = "PizzaWorkflow.Order.Order_command_task"
    assert value(found, "daggerflow_commands_sent_total", template=TEMPLATE, task=command, topic=ORDERS) == 2
    assert value(found, "daggerflow_task_schedule_to_start_seconds_count", template=TEMPLATE, task=command) == 2
    assert value(found, "daggerflow_correlation_messages_total", topic=READY, result="matched") == 1
    assert value(found, "daggerflow_correlation_messages_total", topic=READY, result="unmatched") == 1
    assert value(found, "daggerflow_commit_duration_seconds_count") >= 3
    assert value(found, "daggerflow_commit_batch_size_sum") >= 3
    # Never an instance id or a correlation value in a label.
    for (_, labels) in found:
        assert not any(v.startswith(("q-", "nobody")) for _, v in labels), labels
    otel = _otel_points(reader)
    assert otel["daggerflow.task.duration"] >= 2 and otel["daggerflow.workflows.started"] == 2
    assert otel["daggerflow.correlation.messages"] == 2


def _otel_points(reader: InMemoryMetricReader) -> dict[str, float]:
    """Each OpenTelemetry metric's total: the sum of counters, the count of histograms."""
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                total: Any = 0
                for point in metric.data.data_points:
                    total += getattr(point, "count", None) or getattr(point, "value", 0)
                out[metric.name] = total
    return out


async def test_retries_and_timer_lateness_are_counted(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.start()
    try:
        template = flaky(engine)
        await engine.create_instance(template, "r-1", {}, submit_task=True)
        done = await engine.wait_for("r-1", None, 10)
        assert done.status.code == "COMPLETED"
        assert engine.telemetry is not None
        from prometheus_client import generate_latest

        found = samples(generate_latest(engine.telemetry.metrics.registry).decode())
    finally:
        await engine.stop()
    assert value(found, "daggerflow_task_retries_total", template="Flaky", task="Flaky.P.flaky_executor_task") == 1
    assert value(found, "daggerflow_timer_lateness_seconds_count", purpose="retry") == 1


async def test_metrics_false_records_none_even_with_tracing_on(make_engine: EngineFactory) -> None:
    from prometheus_client import generate_latest

    from ..telemetry_support import tracer

    provider, exporter = tracer()
    engine = make_engine(metrics=False, tracer_provider=provider)
    await engine.start()
    try:
        template = pizza(engine, ORDERS, READY)
        await engine.create_instance(template, "x-1", params("x-1"), submit_task=True)
        assert engine.telemetry is not None
        text = generate_latest(engine.telemetry.metrics.registry).decode()
    finally:
        await engine.stop()
    assert exporter.get_finished_spans()  # traced
    assert "daggerflow_commands_sent_total{" not in text and "daggerflow_listeners_open{" not in text


async def test_open_listeners_follow_the_partition_not_the_worker_s_history(make_engine: EngineFactory) -> None:
    """The open listeners gauge counts what the partition's store holds when its task opens
    (a restart, or on Kafka a partition that moved here), and forgets a partition whose
    task closed (revoked: its new owner counts it), not only what this worker committed."""
    first = make_engine()
    template = pizza(first, ORDERS, READY)
    await first.start()
    try:
        for iid in ("o-1", "o-2"):
            await first.create_instance(template, iid, params(iid), submit_task=True)
    finally:
        await first.stop()
    second = make_engine()
    pizza(second, ORDERS, READY)
    await second.start()
    try:
        assert second.telemetry is not None
        text = generate_latest(second.telemetry.metrics.registry).decode()
        assert value(samples(text), "daggerflow_listeners_open", template=TEMPLATE, task=LISTENER, topic=READY) == 2
        await second.append(READY, None, ready("o-1"), None)
        await second.wait_for("o-1", None, 10)
        text = generate_latest(second.telemetry.metrics.registry).decode()
        assert value(samples(text), "daggerflow_listeners_open", template=TEMPLATE, task=LISTENER, topic=READY) == 1
        # A partition's task closing: the instances it owns are no longer counted here.
        second.telemetry.partition_closed(lambda iid: iid == "o-2")
        assert second.telemetry.metrics.waiting() == {}
    finally:
        await second.stop()
