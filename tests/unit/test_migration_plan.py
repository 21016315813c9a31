"""Pure tests of migrations (``machine/migrate.py``) and version descriptions
(``model/versions.py``): state carried over by name or ``node_map``, new nodes NOT_STARTED,
the index and timers following the node, and each refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

from daggerflow.machine import Migrate, apply
from daggerflow.machine.migrate import plan
from daggerflow.model.instance import Correlation, Instance
from daggerflow.model.template import WorkflowSpec, instantiate
from daggerflow.model.versions import describe_instance, describe_spec, missing_in

from .machine_helpers import (
    T0,
    CancelTimer,
    IndexDel,
    IndexPut,
    Run,
    SetTimer,
    ex,
    listener,
    of,
    proc,
    ptask,
    runs,
    spec,
    trigger,
)

V1 = spec(proc("P", ex("a"), listener("wait"), ex("b")))
ORDERS_7 = Correlation("orders", "order_id", "7")


def waiting(workflow: WorkflowSpec = V1) -> Run:
    r = Run(workflow, {"order_id": "7"})
    r.create()
    r.done("a")
    assert r.status("wait") == "EXECUTING" and r.inst.correlations
    return r


def target(r: Run, workflow: WorkflowSpec) -> Instance:
    return instantiate(workflow, r.inst.id, dict(r.inst.runtime_parameters), now=r.now, seed=99)


def migrate(r: Run, workflow: WorkflowSpec, node_map: dict[str, str] | None = None, **kw: Any) -> Any:
    event = Migrate(target(r, workflow), kw.pop("from_version", r.inst.template_version), node_map or {})
    tr = apply(r.inst, event, r.ctx())
    if tr.error is None:
        r.inst = tr.instance
    r.last = tr
    return tr


def test_state_carries_over_by_name_and_new_nodes_run_when_reached() -> None:
    r = waiting()
    wait_id = r.node("wait").id
    v2 = spec(proc("P", ex("a"), listener("wait"), ex("c"), ex("b")))
    tr = migrate(r, v2)
    assert tr.error is None and tr.changed
    assert r.inst.template_version == v2.version()
    assert r.node("wait").id == wait_id and r.status("wait") == "EXECUTING"
    assert r.status("a") == "COMPLETED" and r.node("a").attempts == 1
    assert r.status("c") == "NOT_STARTED" and r.status("b") == "NOT_STARTED"
    # Same node id, same correlation: the index entry stays as it is.
    assert of(tr, IndexDel) == [] and of(tr, IndexPut) == []
    assert r.inst.correlations == {wait_id: ORDERS_7}
    r.deliver("wait", {"order_id": "7"})
    tr = r.done("wait", True)
    assert runs(r, tr) == [("c", "execute")]  # the new version's task runs
    r.done("c")
    r.done("b")
    assert r.root == "COMPLETED"


def test_node_map_names_the_counterpart_of_a_renamed_listener() -> None:
    r = waiting()
    wait_id = r.node("wait").id
    v2 = spec(proc("P", ex("a"), listener("await_order"), ex("b")))
    refused = migrate(r, v2)
    assert refused.error is not None and "listener 'wf.P.wait' is waiting" in refused.error
    assert r.inst.template_version == V1.version()  # nothing changed
    tr = migrate(r, v2, {"wf.P.wait": "wf.P.await_order"})
    assert tr.error is None
    assert r.node("await_order").id == wait_id and r.status("await_order") == "EXECUTING"
    assert r.inst.correlations == {wait_id: ORDERS_7}


def test_a_listener_moved_to_another_topic_is_indexed_there() -> None:
    r = waiting()
    wait_id = r.node("wait").id
    tr = migrate(r, spec(proc("P", ex("a"), listener("wait", topic="orders-v2"), ex("b"))))
    assert tr.error is None
    assert [e.at for e in of(tr, IndexDel)] == [ORDERS_7]
    assert [e.at for e in of(tr, IndexPut)] == [Correlation("orders-v2", "order_id", "7")]
    assert r.inst.correlations[wait_id].topic == "orders-v2"


def test_refused_while_user_code_runs() -> None:
    r = Run(V1, {"order_id": "7"})
    r.create()  # a's execute() is in flight
    tr = migrate(r, spec(proc("P", ex("a"), listener("wait"), ex("c"))))
    assert tr.error is not None and "'wf.P.a' is running its execute()" in tr.error


def test_refused_when_the_current_position_has_no_counterpart() -> None:
    v1 = spec(proc("P", trigger("t"), ex("b")))
    r = Run(v1, {"run_at": T0 + 60})
    r.create()
    assert r.status("t") == "EXECUTING" and r.node("t").job is None
    tr = migrate(r, spec(proc("P", ex("b"))))
    assert tr.error is not None and "the workflow is at 'wf.P.t'" in tr.error


def test_refused_when_the_counterpart_is_of_another_kind() -> None:
    r = waiting()
    tr = migrate(r, spec(proc("P", ex("a"), ex("wait"), ex("b"))))
    assert tr.error is not None and "is a listener and its counterpart" in tr.error


def test_refused_for_the_wrong_version_the_same_version_and_an_ended_workflow() -> None:
    r = waiting()
    v2 = spec(proc("P", ex("a"), listener("wait"), ex("c")))
    tr = migrate(r, v2, from_version="0000")
    assert tr.error is not None and "not 0000" in tr.error
    tr = migrate(r, V1)
    assert tr.error is not None and "already" in tr.error
    r.deliver("wait", {"order_id": "7"})
    r.done("wait", True)
    r.done("b")
    assert r.root == "COMPLETED"
    tr = migrate(r, v2)
    assert tr.error is not None and "only a running workflow" in tr.error


def test_node_map_names_must_exist_on_both_sides() -> None:
    r = waiting()
    v2 = spec(proc("P", ex("a"), listener("wait"), ex("c")))
    assert "has no node 'wf.P.nope'" in (migrate(r, v2, {"wf.P.nope": "wf.P.c"}).error or "")
    assert "has no node 'wf.P.zzz'" in (migrate(r, v2, {"wf.P.b": "wf.P.zzz"}).error or "")


def test_timers_follow_the_node() -> None:
    v1 = spec(proc("P", trigger("t"), ex("b")))
    r = Run(v1, {"run_at": T0 + 60})
    r.create()
    timers = dict(r.inst.timers)
    assert timers
    tr = migrate(r, spec(proc("P", trigger("t"), ex("c"), ex("b"))))
    assert tr.error is None
    assert r.inst.timers == timers and of(tr, CancelTimer) == [] and of(tr, SetTimer) == []
    tr = r.fire("t", "due", at=T0 + 60)
    assert runs(r, tr) == [("t", "execute")]
    tr = r.done("t")
    assert runs(r, tr) == [("c", "execute")]


def test_a_new_member_of_a_running_parallel_starts() -> None:
    v1 = spec(proc("P", ptask("par", listener("wait"), ex("x")), ex("b")))
    r = Run(v1, {"order_id": "7"})
    r.create()
    r.done("x")
    assert r.status("par") == "EXECUTING"
    tr = migrate(r, spec(proc("P", ptask("par", listener("wait"), ex("x"), ex("y")), ex("b"))))
    assert tr.error is None
    assert runs(r, tr) == [("y", "execute")]


def test_plan_leaves_both_instances_unchanged() -> None:
    r = waiting()
    before = describe_instance(r.inst)
    goal = target(r, spec(proc("P", ex("a"), listener("wait"), ex("c"))))
    result = plan(r.inst, goal, {}, None)
    assert result.instance is not None and result.refusal is None
    assert describe_instance(r.inst) == before and all(n.status == "NOT_STARTED" for n in goal.nodes.values())


def test_a_spec_is_described_with_the_names_its_instances_have() -> None:
    workflow = spec(proc("P", ex("a"), ptask("par", listener("wait"), ex("x")), ex("b")), proc("Q", ex("c")))
    from_spec = describe_spec(workflow)
    from_instance = describe_instance(instantiate(workflow, "i", {"order_id": "1"}, now=T0))
    assert sorted(from_spec.nodes, key=lambda n: n.name) == sorted(from_instance.nodes, key=lambda n: n.name)
    assert from_spec.version == workflow.version() and from_spec.listener_topics() == ["orders"]


def test_missing_task_types_and_topics_of_a_running_instance() -> None:
    r = waiting()
    types, topics = missing_in(r.inst, task_types=["Exec"], listener_topics=[])
    assert types == {"OrderListener"} and topics == {"orders"}  # a completed: its type is not needed


def test_refused_where_the_owner_does_not_register_the_target_version() -> None:
    r = waiting()
    v2 = spec(proc("P", ex("a"), listener("wait"), ex("c")))
    event = Migrate(target(r, v2), V1.version())
    ctx = dataclasses.replace(r.ctx(), registered_version=lambda name: V1.version())
    tr = apply(r.inst, event, ctx)
    assert tr.error is not None and f"version {v2.version()} of 'wf' is not registered on the worker" in tr.error
    ctx = dataclasses.replace(r.ctx(), registered_version=lambda name: v2.version())
    assert apply(r.inst, event, ctx).error is None
