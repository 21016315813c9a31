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
from daggerflow.kafka import codec
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


async def test_a_message_s_spans_link_every_instance_it_matched_on_two_workers(broker: str, tmp_path: Path) -> None:
    """One listener message naming two correlation values, each indexed on one partition,
    each waited on by an instance that the *other* partition owns, with each partition on
    its own worker: the message has a consumer span on each correlation partition (distinct
    ids), each forwards its delivery with its context, and the owner's span of the delivery
    (a child of it, so in the message's trace) links the instance: between them, the
    message's spans link every instance it matched."""
    from . import corr_app
    from .cluster import wait_until

    app = f"trfwd-{uuid.uuid4().hex[:8]}"
    n = 2

    def on(part: int, prefix: str) -> str:  # a key Kafka's partitioner puts on partition ``part``
        return next(k for i in range(1000) if codec.partition_for(k := f"{prefix}{i}", n) == part)

    # Instance a (partition 0) waits on value x (index partition 1); b the other way round.
    a, b, x, y = on(0, "ia-"), on(1, "ib-"), on(1, "vx-"), on(0, "vy-")
    providers = [tracer(), tracer()]
    options: dict[str, Any] = dict(broker=f"kafka://{broker}", application_name=app, kafka_partitions=n, web_port=0)
    workers = [Dagger(**options, datadir=str(tmp_path / f"w{i}"), tracer_provider=providers[i][0]) for i in range(2)]
    for w in workers:
        corr_app._register(w, app)
    try:
        for w in workers:
            await w.start()

        def split() -> bool:
            return all(w.runtime is not None and len(w.runtime.active.tasks) == 1 for w in workers)  # type: ignore[union-attr]

        await wait_until(split, 60, message="each worker owns one partition")
        box = workers[0].template_dags["BoxWait"]
        await box.create_instance(a, submit_task=True, box_id=x)
        await box.create_instance(b, submit_task=True, box_id=y)

        async def waiting(iid: str) -> bool:
            inst = await workers[0].get_instance_state(iid)
            return inst is not None and any(nd.kind == "listener" and nd.status == "EXECUTING"
                                            for nd in inst.nodes.values())  # fmt: skip

        for iid in (a, b):
            await wait_until(lambda iid=iid: waiting(iid), 60, message=f"{iid} waiting")
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(f"{app}.boxes", json.dumps({"box_id": [x, y]}).encode(), key=b"k")
        finally:
            await producer.stop()

        async def done(iid: str) -> bool:
            inst = await workers[0].get_instance_state(iid)
            return inst is not None and inst.status == "COMPLETED"

        for iid in (a, b):
            await wait_until(lambda iid=iid: done(iid), 60, message=f"{iid} completed")
        traces = {}
        for iid in (a, b):
            inst = await workers[0].get_instance_state(iid)
            assert inst is not None and inst.trace is not None
            traces[iid] = inst.trace.trace_id.hex()
    finally:
        for w in workers:
            await w.stop()
        await delete_app_topics(broker, app)
    spans = [s for _, exporter in providers for s in exporter.get_finished_spans()]
    consumed = named(spans, f"process {app}.boxes")
    # Two per message: the matching partition's (a root) and the owner's (its child).
    assert len(consumed) == 4
    assert len({s.context.span_id for s in consumed if s.context is not None}) == 4
    assert len({hex_trace(s) for s in consumed}) == 1  # one trace: the message's
    roots = [s for s in consumed if s.parent is None]
    children = [s for s in consumed if s.parent is not None]
    assert len(roots) == 2 and {s.parent.span_id for s in children if s.parent} == {
        s.context.span_id for s in roots if s.context is not None
    }
    linked = {f"{link.context.trace_id:032x}" for s in consumed for link in s.links}
    assert set(traces.values()) <= linked
    assert {(s.attributes or {}).get("daggerflow.instance.id") for s in children} == {a, b}
    # The listeners' task spans link back to the delivery spans.
    for iid in (a, b):
        (task,) = [s for s in named(spans, "task ") if (s.attributes or {}).get("daggerflow.instance.id") == iid]
        assert {link.context.span_id for link in task.links} & {s.context.span_id for s in children if s.context}
