"""What the tracing and metrics tests share: an SDK tracer provider per engine with an
in-memory exporter, and the pizza workflow whose order service is left to the test."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, RetryPolicy
from daggerflow.demo.pizza import register_pizza_workflow
from daggerflow.templates import ITemplateDAG


def tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def nothing(payload: dict[str, Any]) -> None:
    return None


def pizza(engine: Dagger, orders: str, ready: str) -> ITemplateDAG:
    return register_pizza_workflow(engine, deliver=nothing, order_topic=orders, ready_topic=ready)


def flaky(engine: Dagger) -> ITemplateDAG:
    """Register ``Flaky``: one executor task ``Flaky.P.flaky_executor_task`` whose first
    attempt fails ("not yet") and whose retry, 0.01 s later, succeeds."""
    calls: list[int] = []

    class Flaky(ExecutorTask[str, str]):
        retry_policy = RetryPolicy(max_attempts=3, initial_interval=0.01)

        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            calls.append(1)
            if len(calls) < 2:
                raise RuntimeError("not yet")

    helper = DAGBuilderHelper(engine)
    task = helper.generic_executor_task_builder(task_type=Flaky, name="flaky")
    process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks([task]))
    template = helper.generic_template(template_name="Flaky", root_process=helper.build_and_link_processes([process]))
    engine.add_template("Flaky", template)
    return template


def params(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": "c-1", "pizza_type": "margherita"}


def ready(order_id: str) -> str:
    return json.dumps({"order_id": order_id, "status": "READY"})


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"
