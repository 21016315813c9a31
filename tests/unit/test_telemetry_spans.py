"""The spans of a commit depend only on what was committed: the worker that replays the
same transitions (a re-run after a crash, a new owner of a Kafka partition) emits the same
span ids, names, parents and times, so a backend keeps one of each."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from daggerflow.machine import Transition
from daggerflow.model.instance import Instance, Node, TraceContext, copy_instance
from daggerflow.telemetry import build, ids


def _instance(status: str) -> Instance:
    done = status == "COMPLETED"
    nodes = {
        "i": Node("i", "T", "root", status=status, children=("p",), time_created=100.0, time_submitted=100.0,
                  time_completed=160.0 if done else 0.0),
        "p": Node("p", "T.P", "process", parent="i", status=status, children=("t",), time_submitted=100.0,
                  time_completed=160.0 if done else 0.0),
        "t": Node("t", "T.P.wait", "listener", parent="p", status=status, topic="ready", attempts=1 if done else 0,
                  job_seq=1 if done else 0, time_submitted=101.0, time_completed=160.0 if done else 0.0),
    }  # fmt: skip
    inst = Instance("i", "T", "v1", nodes)
    inst.trace = TraceContext(ids.trace_id("i").to_bytes(16, "big"), ids.span_id("i", "instance"))
    return inst


def _emit() -> list[tuple[Any, ...]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = build(lambda: 170.0, system="daggerflow", tracing=None, tracer_provider=provider)
    before, after = _instance("EXECUTING"), copy_instance(_instance("COMPLETED"))
    # What the machine reports of the event that ended the listener (and so the workflow).
    ended = Transition(after, [], True, None, [("t", "EXECUTING", "COMPLETED"), ("p", "EXECUTING", "COMPLETED"),
                                                ("i", "EXECUTING", "COMPLETED")])  # fmt: skip
    telemetry.committed({"i": after}, {}, {"i": before}, [ended])
    return sorted(
        (s.name, s.context.trace_id, s.context.span_id, s.parent.span_id if s.parent else 0, s.start_time, s.end_time)
        for s in exporter.get_finished_spans()
        if s.context is not None
    )


def test_replaying_a_commit_emits_the_same_spans() -> None:
    first, again = _emit(), _emit()
    assert first == again
    names = [s[0] for s in first]
    assert names == ["instance T", "process T.P", "task T.P.wait"]
    by_name = {s[0]: s for s in first}
    assert by_name["task T.P.wait"][3] == by_name["process T.P"][2] == ids.span_id("i", "p")
    assert by_name["process T.P"][3] == by_name["instance T"][2] == ids.span_id("i", "instance")
    assert by_name["task T.P.wait"][2] == ids.span_id("i", "t", 1)
    assert by_name["task T.P.wait"][4] == int(101.0 * 1e9) and by_name["instance T"][4] == int(100.0 * 1e9)
