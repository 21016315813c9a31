"""Traces on the Kafka runtime, against the real broker: an instance's trace survives a
failover (its partition moves to a worker that restores it from the changelog, with another
tracer provider: another process, as far as tracing knows), the command record carries
the ``traceparent`` header, and the listener record's consumer span carries the Kafka
messaging attributes and links to the instance it matched and to the record's producer."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from aiokafka import AIOKafkaProducer
from opentelemetry.trace import SpanKind
from prometheus_client import generate_latest

from daggerflow import Dagger
from daggerflow.telemetry import ids

from ..telemetry_support import hex_trace, named, params, pizza, ready, tracer
from .cluster import delete_app_topics, read_topic

pytestmark = pytest.mark.timeout(240)


def worker(broker: str, app: str, datadir: Path, provider: Any) -> Dagger:
    return Dagger(broker=f"kafka://{broker}", application_name=app, kafka_partitions=1, datadir=str(datadir),
                  web_port=None, tracer_provider=provider)  # fmt: skip


async def test_one_trace_across_a_failover(broker: str, tmp_path: Path) -> None:
    app = f"trace-{uuid.uuid4().hex[:8]}"
    orders, ready_topic = f"{app}.orders", f"{app}.ready"
    provider1, exporter1 = tracer()
    first = worker(broker, app, tmp_path / "w1", provider1)
    pizza(first, orders, ready_topic)
    try:
        await first.start()
        await first.template_dags["PizzaWorkflow"].create_instance("k-1", submit_task=True, **params("k-1"))
        await first.wait_for("k-1", lambda i: any(n.kind == "listener" and n.status == "EXECUTING"
                                                  for n in i.nodes.values()), timeout=60)  # fmt: skip
        record = await first.get_instance_state("k-1")
        assert record is not None and record.trace is not None
        trace = record.trace
        (command,) = await read_topic(broker, orders)
        headers = {k: v.decode() for k, v in command.headers}
        assert ids.parse_traceparent(headers["traceparent"]) is not None
        assert headers["traceparent"].split("-")[1] == trace.trace_id.hex()
    finally:
        await first.stop()
    before = exporter1.get_finished_spans()
    (send,) = named(before, f"send {orders}")
    assert (send.attributes or {})["messaging.system"] == "kafka"
    assert send.context is not None and headers["traceparent"].split("-")[2] == f"{send.context.span_id:016x}"

    provider2, exporter2 = tracer()
    second = worker(broker, app, tmp_path / "w2", provider2)  # an empty datadir: restored from the changelog
    pizza(second, orders, ready_topic)
    upstream = f"00-{'12' * 16}-{'34' * 8}-01"
    try:
        await second.start()
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(ready_topic, ready("k-1").encode(), key=b"k-1",
                                         headers=[("traceparent", upstream.encode())])  # fmt: skip
        finally:
            await producer.stop()
        done = await second.wait_for("k-1", timeout=60)
        assert done.status.code == "COMPLETED"
    finally:
        await second.stop()
        await delete_app_topics(broker, app)
    after = exporter2.get_finished_spans()
    mine = [s for s in (*before, *after) if (s.attributes or {}).get("daggerflow.instance.id") == "k-1"]
    assert {hex_trace(s) for s in mine} == {trace.trace_id.hex()}
    (instance,) = named(after, "instance PizzaWorkflow")
    assert instance.context is not None and instance.context.span_id == trace.span
    assert instance.start_time == int(record.root.time_created * 1e9)
    span_ids = [s.context.span_id for s in mine if s.context is not None]
    assert len(span_ids) == len(set(span_ids))
    (consumed,) = named(after, f"process {ready_topic}")
    attrs = consumed.attributes or {}
    assert consumed.kind is SpanKind.CONSUMER
    assert attrs["messaging.system"] == "kafka" and attrs["messaging.destination.name"] == ready_topic
    assert attrs["messaging.destination.partition.id"] == "0" and attrs["messaging.kafka.offset"] == 0
    assert attrs["daggerflow.correlation.result"] == "matched" and attrs["messaging.consumer.group.name"]
    assert {f"{link.context.trace_id:032x}" for link in consumed.links} == {trace.trace_id.hex(), "12" * 16}
    assert json.loads(ready("k-1"))["order_id"] not in str(dict(attrs))
    assert second.telemetry is not None
    text = generate_latest(second.telemetry.metrics.registry).decode()
    assert 'daggerflow_kafka_rebalances_total{change="assigned"} 1.0' in text
    assert f'daggerflow_kafka_consumer_lag{{topic="{app}-events"}}' in text
    assert 'daggerflow_task_duration_seconds_count{outcome="completed",task="PizzaWorkflow.Delivery.Delivery_executor_task",template="PizzaWorkflow"} 1.0' in text


async def test_a_rerouted_listener_topic_keeps_the_producer_s_link(broker: str, tmp_path: Path) -> None:
    """A listener topic with another partition count than the application's is re-routed
    through ``{app}-correlation`` by its own group: the routed copy keeps the record's trace
    headers, so the consumer span still links to the producer."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    app = f"trroute-{uuid.uuid4().hex[:8]}"
    orders, ready_topic = f"{app}.orders", f"{app}.ready"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ready_topic, 2, 1)])
    finally:
        await admin.close()
    provider, exporter = tracer()
    engine = worker(broker, app, tmp_path / "w", provider)
    pizza(engine, orders, ready_topic)
    upstream = f"00-{'56' * 16}-{'78' * 8}-01"
    try:
        await engine.start()
        await engine.template_dags["PizzaWorkflow"].create_instance("r-1", submit_task=True, **params("r-1"))
        await engine.wait_for("r-1", lambda i: any(n.kind == "listener" and n.status == "EXECUTING"
                                                   for n in i.nodes.values()), timeout=60)  # fmt: skip
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(ready_topic, ready("r-1").encode(), key=b"any",
                                         headers=[("traceparent", upstream.encode())])  # fmt: skip
        finally:
            await producer.stop()
        assert (await engine.wait_for("r-1", timeout=60)).status.code == "COMPLETED"
        record = await engine.get_instance_state("r-1")
        assert record is not None and record.trace is not None
    finally:
        await engine.stop()
        await delete_app_topics(broker, app)
    (consumed,) = named(exporter.get_finished_spans(), f"process {ready_topic}")
    assert {f"{link.context.trace_id:032x}" for link in consumed.links} == {record.trace.trace_id.hex(), "56" * 16}
    assert (consumed.attributes or {})["messaging.destination.partition.id"] in ("0", "1")
