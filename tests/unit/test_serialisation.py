"""Instance encoding (msgpack, for the store and the log) and the JSON snapshot (REST API,
update topic), without an engine."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from daggerflow.machine import (
    Context,
    Create,
    Deliver,
    Event,
    JobDone,
    JobFailed,
    Stop,
    Submit,
    TimerFired,
    apply,
)
from daggerflow.model.instance import (
    Correlation,
    Instance,
    RetryPolicy,
    copy_instance,
    decode_instance,
    encode_instance,
)
from daggerflow.model.snapshot import snapshot, summary
from daggerflow.model.status import TaskOperator

from .machine_helpers import (
    T0,
    Run,
    ex,
    listener,
    pproc,
    proc,
    ptask,
    spec,
    trigger,
)


def _busy_run() -> Run:
    """An instance mid-flight: jobs, timers, index entries, an inbox, an error, params."""
    r = Run(
        spec(
            proc(
                "P1",
                ex("a", retry=RetryPolicy(max_attempts=3, non_retryable=("ValueError",))),
                ptask(
                    "par",
                    listener("L", timeout=60, allow_skip_to=True),
                    trigger("t"),
                    op=TaskOperator.ATLEAST_ONE,
                ),
            ),
            pproc("PP", proc("A", ex("x")), proc("B", ex("y"))),
        ),
        {"order_id": 42, "run_at": T0 + 100, "nested": {"list": [1, 2.5, "three", None, True]}},
    )
    r.create()
    r.fail("a", "flaky")
    r.fire("a", "retry:execute", at=T0 + 1)
    r.done("a", params={"paid": True})
    r.deliver("L", {"m": 1})
    r.deliver("L", {"m": 2})
    return r


def test_instance_round_trips_through_msgpack() -> None:
    r = _busy_run()
    inst = r.inst
    assert inst.timers and inst.correlations and r.node("L").inbox == ({"m": 2},)
    data = encode_instance(inst)
    assert isinstance(data, bytes)
    back = decode_instance(data)
    assert back == inst
    assert back is not inst and back.nodes is not inst.nodes
    assert back.correlations[r.node("L").id] == Correlation("orders", "order_id", "42")
    assert back.nodes[r.node("a").id].retry == RetryPolicy(max_attempts=3, non_retryable=("ValueError",))
    assert back.runtime_parameters["nested"] == {"list": [1, 2.5, "three", None, True]}
    assert decode_instance(encode_instance(back)) == back


def test_a_fresh_instance_round_trips_and_copies_are_independent() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    assert decode_instance(encode_instance(r.inst)) == r.inst
    copy = copy_instance(r.inst)
    assert copy == r.inst
    copy.runtime_parameters["x"] = 1
    copy.nodes[r.node("a").id].status = "COMPLETED"
    assert "x" not in r.inst.runtime_parameters and r.status("a") == "NOT_STARTED"


def test_a_decoded_instance_behaves_exactly_like_the_original() -> None:
    r = _busy_run()
    twin = decode_instance(encode_instance(r.inst))
    L = r.node("L")
    event = JobDone(L.id, L.job_seq, "on_message", True, {"ready": 1})
    tr1 = apply(r.inst, event, Context(now=T0 + 5))
    tr2 = apply(twin, event, Context(now=T0 + 5))
    assert tr1.effects == tr2.effects and tr1.effects
    assert twin == r.inst


def test_the_encoding_omits_defaults() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    raw = msgspec.msgpack.decode(encode_instance(r.inst))
    node = raw["nodes"][r.node("a").id]
    assert "status" not in node and "inbox" not in node and "attempts" not in node
    assert "correlations" not in raw and "timers" not in raw


def test_decoding_garbage_raises() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_instance(b"\xc1 not msgpack")
    with pytest.raises(msgspec.ValidationError):
        decode_instance(msgspec.msgpack.encode({"id": 1}))


@pytest.mark.parametrize(
    "event",
    [
        Submit(),
        Stop(),
        Deliver("n1", {"order": 1, "items": ["a"]}, "orders"),
        JobDone("n1", 3, "execute", {"r": 1}, {"p": [1]}, ["gone"], "FAILURE"),
        JobFailed("n1", 2, "on_message", "boom", "tb", False, {"m": 1}),
        TimerFired("n1:due"),
    ],
)
def test_events_round_trip_as_tagged_msgpack(event: Event) -> None:
    data = msgspec.msgpack.encode(event)
    assert msgspec.msgpack.decode(data, type=Event) == event


def test_create_event_carries_the_whole_instance() -> None:
    r = Run(spec(proc("P1", ex("a"))), {"k": "v"})
    data = msgspec.msgpack.encode(Create(r.inst, submit=True))
    back = msgspec.msgpack.decode(data, type=Event)
    assert isinstance(back, Create) and back.submit and back.instance == r.inst


# Snapshot ------------------------------------------------------------------------------------


def _all_ids(value: Any) -> list[Any]:
    """Every value stored under an id-like key anywhere in the snapshot."""
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("id", "parent_id", "root_dag"):
                found.append(v)
            elif k in ("next_dags", "parallel_child_task_list"):
                found.extend(v)
            found.extend(_all_ids(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(_all_ids(v))
    return found


def test_snapshot_has_daggers_shape() -> None:
    r = _busy_run()
    r.inst.update_count = 7
    snap = snapshot(r.inst)
    assert snap["id"] == "wf-1" and snap["task_name"] == "wf" and snap["task_type"] == "ROOT"
    assert snap["status"] == {"code": "EXECUTING", "value": "EXECUTING"}
    assert snap["update_count"] == 7 and snap["template_name"] == "wf"
    assert snap["template_version"] == r.inst.template_version
    assert snap["runtime_parameters"] == r.inst.runtime_parameters
    assert snap["runtime_parameters"]["paid"] is True
    assert snap["root_dag"] == r.node("P1").id and snap["parent_id"] is None
    assert snap["time_created"] == T0 and snap["lastupdated"] == r.inst.lastupdated
    # Tasks keyed by id, the root excluded.
    assert set(snap["tasks"]) == set(r.inst.nodes) - {"wf-1"}
    for node_id, task in snap["tasks"].items():
        node = r.inst.nodes[node_id]
        assert task["id"] == node_id and task["task_name"] == node.name
        assert task["status"] == {"code": node.status, "value": node.status}
        assert task["parent_id"] == node.parent and task["next_dags"] == list(node.next)
    tasks = snap["tasks"]
    p1, a, par, L, t = (tasks[r.node(n).id] for n in ("P1", "a", "par", "L", "t"))
    assert p1["task_type"] == "SUB_DAG" and p1["process_name"] == "P1" and p1["root_dag"] == r.node("a").id
    assert a["task_type"] == "LEAF" and a["status"]["code"] == "COMPLETED" and a["attempts"] == 2
    assert par["task_type"] == "PARALLEL_COMPOSITE" and par["operator_type"] == "ATLEAST_ONE"
    assert par["parallel_child_task_list"] == [r.node("L").id, r.node("t").id]
    assert L["topic"] == "orders" and L["correlatable_key"] == "order_id" and L["kind"] == "listener"
    assert t["time_to_execute"] == T0 + 100 and t["type_name"] == "Trig"
    assert tasks[r.node("PP").id]["task_type"] == "PARALLEL_COMPOSITE"


def test_snapshot_is_plain_json_with_string_ids() -> None:
    r = _busy_run()
    snap = snapshot(r.inst)
    text = json.dumps(snap)  # no custom encoder needed
    assert json.loads(text) == snap
    assert msgspec.json.decode(msgspec.json.encode(snap)) == snap
    ids = [i for i in _all_ids(snap) if i is not None]
    assert ids and all(isinstance(i, str) for i in ids)
    assert "py/object" not in text and "__class__" not in text


def test_snapshot_records_errors_and_summary_is_short() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    r.create()
    r.fail("a", "ValueError: bad")
    snap = snapshot(r.inst)
    task = snap["tasks"][r.node("a").id]
    assert task["status"]["code"] == "FAILURE"
    assert task["error"] == "ValueError: bad" and task["traceback"] == "Traceback: boom"
    assert "error" not in snap["tasks"][r.node("P1").id]
    short = summary(r.inst)
    assert short == {
        "id": "wf-1",
        "template_name": "wf",
        "status": {"code": "FAILURE", "value": "FAILURE"},
        "time_created": T0,
        "time_completed": T0,
        "lastupdated": T0,
        "update_count": 0,
    }


def test_instance_partition_key() -> None:
    inst = Run(spec(proc("P1", ex("a"))), {"customer": 17}).inst
    assert inst.partition_key() == "wf-1"
    keyed = Instance(
        id="i",
        template_name="w",
        template_version="v",
        nodes=inst.nodes,
        runtime_parameters={"customer": 17},
        partition_key_lookup="customer",
    )
    assert keyed.partition_key() == "17"
    keyed.runtime_parameters.pop("customer")
    assert keyed.partition_key() == "i"
