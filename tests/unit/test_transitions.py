"""Pure tests of the state machine (``daggerflow.machine.apply``): no engine, no I/O.

Each test builds an instance with ``instantiate`` and feeds it events, then checks the
statuses, the effects (jobs, timers, index changes) and the instance bookkeeping.
"""

from __future__ import annotations

import random

import pytest

from daggerflow.builders import DAGBuilderHelper
from daggerflow.errors import InvalidTriggerTimeForTask, TaskInvalidState
from daggerflow.machine import (
    CancelJob,
    CancelTimer,
    Context,
    Create,
    Deliver,
    IndexDel,
    IndexPut,
    InstanceDeleted,
    JobDone,
    RunJob,
    SetTimer,
    Submit,
    TimerFired,
    apply,
    desired_correlations,
)
from daggerflow.model.instance import Correlation, RetryPolicy
from daggerflow.model.status import COMPLETE_BY_KEY, TaskOperator
from daggerflow.model.template import Overrides, WorkflowSpec, instantiate
from daggerflow.pipeline.jobs import is_retryable
from daggerflow.tasks import MonitoredProcessTemplateDAGInstance

from .machine_helpers import (
    T0,
    KitchenListener,
    OrderListener,
    OrderSensor,
    Run,
    cmd,
    decision,
    dyn,
    ex,
    interval,
    leaf,
    listener,
    of,
    pproc,
    proc,
    ptask,
    runs,
    spec,
    trigger,
)

ATLEAST_ONE = TaskOperator.ATLEAST_ONE


def test_instantiate_materialises_every_node_not_started_with_dagger_names() -> None:
    r = Run(spec(proc("P1", cmd("P1_command_task"), listener("P1_listener_task")), proc("P2", ex("e"))))
    names = {n.name for n in r.inst.nodes.values()}
    assert names == {"wf", "wf.P1", "wf.P1.P1_command_task", "wf.P1.P1_listener_task", "wf.P2", "wf.P2.e"}
    assert set(r.statuses().values()) == {"NOT_STARTED"}
    root = r.inst.root
    assert root.kind == "root" and root.children == (r.node("P1").id,)
    assert r.node("P1").next == (r.node("P2").id,)
    assert r.node("P1_command_task").parent == r.node("P1").id
    assert r.node("P1_command_task").next == (r.node("P1_listener_task").id,)
    assert r.node("P1_listener_task").correlatable_key == "order_id"
    assert all(n.time_created == T0 for n in r.inst.nodes.values())


# Create and submit -------------------------------------------------------------------------


def test_create_without_submit_stores_a_not_started_instance_and_runs_nothing() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    tr = r.create(submit=False)
    assert tr.changed and tr.error is None
    assert tr.effects == []
    assert r.root == "NOT_STARTED"


def test_create_with_submit_starts_root_first_process_and_first_task_only() -> None:
    r = Run(spec(proc("P1", ex("a"), ex("b")), proc("P2", ex("c"))))
    tr = r.create(submit=True)
    assert r.root == "EXECUTING"
    assert r.status("P1") == "EXECUTING"
    assert r.status("a") == "EXECUTING"
    assert r.status("b") == r.status("P2") == r.status("c") == "NOT_STARTED"
    assert runs(r, tr) == [("a", "execute")]
    job = of(tr, RunJob)[0]
    assert job.instance == "wf-1" and job.seq == 1 and job.payload is None
    assert r.node("a").attempts == 1 and r.node("a").job == "execute"
    assert r.inst.root.time_submitted == T0 and r.inst.lastupdated == T0


def test_create_of_an_existing_id_is_a_no_op() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    r.create(submit=True)
    other = Run(spec(proc("P9", ex("z")))).inst
    tr = apply(r.inst, Create(other, submit=True), Context(now=T0 + 5))
    assert tr.instance is r.inst
    assert not tr.changed and tr.effects == [] and tr.error is None
    assert r.status("a") == "EXECUTING" and r.node("a").job_seq == 1
    assert other.status == "NOT_STARTED"


def test_submit_starts_a_created_instance_and_a_second_submit_does_nothing() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    r.create(submit=False)
    tr = r.submit()
    assert runs(r, tr) == [("a", "execute")] and r.root == "EXECUTING"
    again = r.submit()
    assert not again.changed and again.effects == [] and again.error is None
    assert r.node("a").job_seq == 1


def test_events_for_a_missing_instance_report_an_error() -> None:
    tr = apply(None, Submit(), Context(now=T0))
    assert tr.instance is None and tr.error is not None


def test_submit_of_a_terminal_workflow_returns_an_error_and_changes_nothing() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    r.create()
    r.done("a")
    assert r.root == "COMPLETED"
    tr = r.submit()
    assert tr.error is not None and "COMPLETED" in tr.error
    assert not tr.changed and tr.effects == [] and r.root == "COMPLETED"

    s = Run(spec(proc("P1", ex("a"))))
    s.create()
    s.stop()
    tr = s.submit()
    assert tr.error is not None and s.root == "STOPPED" and tr.effects == []


# Chains ------------------------------------------------------------------------------------


def test_command_and_executor_chain_runs_in_order_then_next_process_then_root_completes() -> None:
    r = Run(spec(proc("P1", cmd("c1"), ex("e1"), ex("e2")), proc("P2", ex("e3"))))
    tr = r.create()
    assert runs(r, tr) == [("c1", "execute")]
    tr = r.done("c1", at=T0 + 1)
    assert r.status("c1") == "COMPLETED" and r.node("c1").time_completed == T0 + 1
    assert runs(r, tr) == [("e1", "execute")]
    tr = r.done("e1", at=T0 + 2)
    assert runs(r, tr) == [("e2", "execute")]
    assert r.status("P1") == "EXECUTING" and r.status("P2") == "NOT_STARTED"
    tr = r.done("e2", at=T0 + 3)
    assert r.status("P1") == "COMPLETED" and r.node("P1").time_completed == T0 + 3
    assert r.status("P2") == "EXECUTING"
    assert runs(r, tr) == [("e3", "execute")]
    assert r.root == "EXECUTING"
    tr = r.done("e3", at=T0 + 4)
    assert r.status("P2") == "COMPLETED" and r.root == "COMPLETED"
    assert r.inst.root.time_completed == T0 + 4
    assert runs(r, tr) == [] and not of(tr, InstanceDeleted)
    assert r.inst.timers == {} and r.inst.correlations == {}


def test_root_completion_with_delete_on_complete_emits_instance_deleted() -> None:
    r = Run(spec(proc("P1", ex("a"))), delete_on_complete=True)
    r.create()
    tr = r.done("a")
    assert r.root == "COMPLETED"
    assert of(tr, InstanceDeleted) == [InstanceDeleted("wf-1")]


def test_delete_on_complete_keeps_failed_workflows() -> None:
    r = Run(spec(proc("P1", ex("a"))), delete_on_complete=True)
    r.create()
    tr = r.fail("a")
    assert r.root == "FAILURE" and not of(tr, InstanceDeleted)


def test_job_done_applies_parameter_changes_and_removals() -> None:
    r = Run(spec(proc("P1", ex("a"), ex("b"))), {"keep": 1, "drop": 2})
    r.create()
    r.done("a", params={"keep": 10, "new": [1, 2]}, removed=["drop"])
    assert r.inst.runtime_parameters == {"keep": 10, "new": [1, 2]}


def test_executor_reporting_failure_or_skipped_status() -> None:
    r = Run(spec(proc("P1", ex("a"), ex("b"))))
    r.create()
    tr = r.done("a", status="SKIPPED")
    assert r.status("a") == "SKIPPED" and runs(r, tr) == [("b", "execute")]
    tr = r.done("b", status="FAILURE")
    assert r.status("b") == "FAILURE" and r.status("P1") == "FAILURE" and r.root == "FAILURE"


def test_stale_or_mismatched_job_results_are_ignored() -> None:
    r = Run(spec(proc("P1", ex("a"), ex("b"))))
    r.create()
    a = r.node("a")
    for event in (
        JobDone(a.id, a.job_seq + 1, "execute"),
        JobDone(a.id, a.job_seq - 1, "execute"),
        JobDone(a.id, a.job_seq, "on_message"),
        JobDone("no-such-node", 1, "execute"),
    ):
        tr = r.send(event)
        assert not tr.changed and tr.effects == []
        assert r.status("a") == "EXECUTING" and r.status("b") == "NOT_STARTED"
    assert runs(r, r.done("a")) == [("b", "execute")]


def test_a_task_template_may_stand_in_the_process_chain() -> None:
    r = Run(WorkflowSpec("wf", ex("solo")))
    assert r.node("solo").parent == "wf-1"
    r.create()
    r.done("solo")
    assert r.root == "COMPLETED"


def test_empty_parallel_process_completes_at_once() -> None:
    r = Run(spec(pproc("PP"), proc("P2", ex("a"))))
    tr = r.create()
    assert r.status("PP") == "COMPLETED" and runs(r, tr) == [("a", "execute")]


# Listeners ----------------------------------------------------------------------------------


def test_listener_waits_indexed_on_its_correlation_value() -> None:
    r = Run(spec(proc("P1", ex("a"), listener("L"), ex("b"))), {"order_id": 42})
    r.create()
    assert r.inst.correlations == {}  # NOT_STARTED without allow_skip_to: not indexed
    tr = r.done("a")
    L = r.node("L")
    at = Correlation("orders", "order_id", "42")
    assert L.status == "EXECUTING" and runs(r, tr) == []
    assert of(tr, IndexPut) == [IndexPut("wf-1", L.id, at)]
    assert r.inst.correlations == {L.id: at}
    assert desired_correlations(r.inst) == {L.id: at}


def test_on_message_false_keeps_waiting_true_completes_and_unindexes() -> None:
    r = Run(spec(proc("P1", listener("L"), ex("b"))), {"order_id": 7})
    r.create()
    tr = r.deliver("L", {"n": 1})
    assert runs(r, tr) == [("L", "on_message")] and r.last_payload[r.node("L").id] == {"n": 1}
    tr = r.done("L", False)
    assert r.status("L") == "EXECUTING" and runs(r, tr) == [] and r.node("L").id in r.inst.correlations
    r.deliver("L", {"n": 2})
    tr = r.done("L", True)
    assert r.status("L") == "COMPLETED"
    assert runs(r, tr) == [("b", "execute")]
    assert of(tr, IndexDel) == [IndexDel("wf-1", r.node("L").id, Correlation("orders", "order_id", "7"))]
    assert r.inst.correlations == {}


def test_messages_arriving_while_on_message_runs_are_queued_in_order() -> None:
    r = Run(spec(proc("P1", listener("L"), ex("b"))), {"order_id": 7})
    r.create()
    L = r.node("L")
    assert runs(r, r.deliver("L", "m1")) == [("L", "on_message")]
    for m in ("m2", "m3"):
        tr = r.deliver("L", m)
        assert tr.changed and runs(r, tr) == []
    assert L.inbox == ("m2", "m3")
    tr = r.done("L", False)
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m2")]
    tr = r.done("L", False)
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m3")]
    assert L.inbox == ()
    tr = r.done("L", False)
    assert runs(r, tr) == [] and L.job is None and L.status == "EXECUTING"


def test_queued_messages_are_dropped_once_the_listener_completes() -> None:
    r = Run(spec(proc("P1", listener("L"), ex("b"))), {"order_id": 7})
    r.create()
    r.deliver("L", "m1")
    r.deliver("L", "m2")
    tr = r.done("L", True)
    assert r.status("L") == "COMPLETED" and r.node("L").inbox == ()
    assert runs(r, tr) == [("b", "execute")]


def test_sensor_tasks_wait_and_index_like_listeners() -> None:
    r = Run(spec(proc("P1", listener("S", cls=OrderSensor))), {"order_id": "x"})
    tr = r.create()
    assert r.node("S").kind == "sensor" and r.status("S") == "EXECUTING"
    assert of(tr, IndexPut)[0].at == Correlation("orders", "order_id", "x")
    r.deliver("S", {})
    r.done("S", True)
    assert r.root == "COMPLETED"


def test_messages_for_listeners_that_do_not_accept_them_are_ignored() -> None:
    r = Run(
        spec(proc("P1", ex("a"), listener("L1"), listener("L2", reprocess_on_message=False))), {"order_id": 1}
    )
    r.create()
    # NOT_STARTED without allow_skip_to, a non-listener node, an unknown node.
    for event in (
        Deliver(r.node("L1").id, "x"),
        Deliver(r.node("a").id, "x"),
        Deliver("nope", "x"),
    ):
        tr = r.send(event)
        assert not tr.changed and tr.effects == []
    r.done("a")
    r.deliver("L1", "x")
    r.done("L1", True)
    # COMPLETED without reprocess_on_message: ignored.
    tr = r.deliver("L1", "again")
    assert not tr.changed and tr.effects == [] and r.status("L1") == "COMPLETED"


def test_plain_skipped_listener_ignores_messages() -> None:
    r = Run(
        spec(proc("P1", listener("L1", timeout=5, timeout_status="SKIPPED"), listener("L2"))), {"order_id": 1}
    )
    r.create()
    r.fire("L1", "timeout", at=T0 + 5)
    assert r.status("L1") == "SKIPPED" and r.status("L2") == "EXECUTING"
    tr = r.deliver("L1", "late")
    assert not tr.changed and tr.effects == [] and r.status("L1") == "SKIPPED"


def test_reprocess_on_message_reruns_on_message_on_a_completed_listener() -> None:
    r = Run(
        spec(proc("P1", listener("L", reprocess_on_message=True), listener("W", topic="other"))),
        {"order_id": 3},
    )
    r.create()
    L = r.node("L")
    r.deliver("L", "first")
    r.done("L", True)
    assert L.status == "COMPLETED" and r.status("W") == "EXECUTING"
    # A completed reprocessing listener stays indexed while the workflow runs.
    assert r.inst.correlations[L.id] == Correlation("orders", "order_id", "3")
    tr = r.deliver("L", "second")
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "second")]
    tr = r.done("L", True, params={"seen": 2})
    assert L.status == "COMPLETED" and runs(r, tr) == []
    assert r.inst.runtime_parameters["seen"] == 2
    assert r.status("W") == "EXECUTING"  # the walk was not re-run


def _reprocessing_run(policy: RetryPolicy | None = None) -> Run:
    r = Run(
        spec(
            proc("P1", listener("L", reprocess_on_message=True, retry=policy), listener("W", topic="other"))
        ),
        {"order_id": 3},
    )
    r.create()
    r.deliver("L", "first")
    r.done("L", True)
    assert r.status("L") == "COMPLETED" and r.status("W") == "EXECUTING"
    return r


def test_reprocessing_listener_runs_queued_messages_one_after_another() -> None:
    r = _reprocessing_run()
    L = r.node("L")
    r.deliver("L", "m1")
    assert runs(r, r.deliver("L", "m2")) == [] and L.inbox == ("m2",)
    tr = r.done("L", True)
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m2")]
    r.done("L", False)
    assert L.status == "COMPLETED" and L.inbox == () and L.job is None


def test_reprocessing_listener_retries_a_failed_message_and_keeps_completed() -> None:
    r = _reprocessing_run(RetryPolicy(max_attempts=2, initial_interval=5))
    L = r.node("L")
    r.deliver("L", "m1")
    tr = r.fail("L")
    assert L.status == "COMPLETED" and of(tr, SetTimer) == [
        SetTimer("wf-1", f"{L.id}:retry:on_message", T0 + 5)
    ]
    r.deliver("L", "m2")
    tr = r.fire("L", "retry:on_message", at=T0 + 5)
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m1")]
    tr = r.fail("L")  # retries exhausted: the listener stays COMPLETED, m2 goes next
    assert L.status == "COMPLETED" and r.root == "EXECUTING"
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m2")]


def test_skipped_to_listener_runs_its_queued_messages() -> None:
    r = Run(
        spec(
            proc(
                "P1",
                listener("L1", allow_skip_to=True),
                listener("L2", topic="k", cls=KitchenListener, allow_skip_to=True),
            )
        ),
        {"order_id": 1, "kitchen_id": "k"},
    )
    r.create()
    r.deliver("L2", "jump")
    L1 = r.node("L1")
    r.deliver("L1", "a")
    r.deliver("L1", "b")
    tr = r.done("L1", False)
    assert L1.status == "SKIPPED" and [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "b")]
    r.deliver("L1", "c")
    tr = r.done("L1", True)
    # Completed and not reprocessing: it takes no more messages, the queue is dropped.
    assert L1.status == "COMPLETED" and L1.inbox == () and runs(r, tr) == []
    assert L1.id not in r.inst.correlations


# allow_skip_to -----------------------------------------------------------------------------------


def test_allow_skip_to_listener_is_indexed_at_creation_and_jumps_the_walk() -> None:
    r = Run(
        spec(
            proc("P1", ex("a"), listener("L1"), ex("a2")),
            proc("P2", listener("L2", allow_skip_to=True), ex("b")),
            proc("P3", ex("c")),
        ),
        {"order_id": 9},
    )
    tr = r.create(submit=False)
    L2 = r.node("L2")
    assert r.inst.correlations == {L2.id: Correlation("orders", "order_id", "9")}
    assert of(tr, IndexPut) == [IndexPut("wf-1", L2.id, Correlation("orders", "order_id", "9"))]
    r.submit()
    a = r.node("a")
    a_seq = a.job_seq
    tr = r.deliver("L2", "out of order")
    # Earlier unfinished nodes are SKIPPED (their successors are not started).
    assert r.status("a") == r.status("L1") == r.status("a2") == r.status("P1") == "SKIPPED"
    assert CancelJob("wf-1", a.id) in tr.effects
    # Ancestors are EXECUTING; the target runs on_message; later nodes untouched.
    assert r.status("P2") == "EXECUTING" and r.root == "EXECUTING"
    assert r.status("L2") == "EXECUTING" and runs(r, tr) == [("L2", "on_message")]
    assert r.status("P3") == "NOT_STARTED" and r.status("b") == "NOT_STARTED"
    # The skipped executor's late result is stale.
    late = r.send(JobDone(a.id, a_seq, "execute"))
    assert not late.changed and r.status("a") == "SKIPPED"
    tr = r.done("L2", True)
    assert runs(r, tr) == [("b", "execute")]
    r.done("b")
    r.done("c")
    assert r.status("P2") == r.status("P3") == "COMPLETED" and r.root == "COMPLETED"
    assert r.status("P1") == "SKIPPED"


def test_message_for_a_skip_to_listener_before_submit_starts_the_workflow_there() -> None:
    r = Run(
        spec(proc("P1", ex("a")), proc("P2", listener("L", allow_skip_to=True), ex("b"))), {"order_id": 1}
    )
    r.create(submit=False)
    tr = r.deliver("L", "early")
    assert r.root == "EXECUTING" and r.inst.root.time_submitted == T0
    assert r.status("P1") == r.status("a") == "SKIPPED" and runs(r, tr) == [("L", "on_message")]
    again = r.submit()  # already running: nothing to do
    assert not again.changed and again.effects == []
    r.done("L", True)
    r.done("b")
    assert r.root == "COMPLETED"


def test_skip_to_within_the_same_process() -> None:
    r = Run(spec(proc("P1", ex("a"), listener("L", allow_skip_to=True), ex("b"))), {"order_id": 1})
    r.create()
    tr = r.deliver("L", "m")
    assert r.status("a") == "SKIPPED" and r.status("P1") == "EXECUTING"
    assert runs(r, tr) == [("L", "on_message")]
    assert runs(r, r.done("L", True)) == [("b", "execute")]


def test_skipped_listener_with_allow_skip_to_still_completes_on_a_later_message() -> None:
    r = Run(
        spec(
            proc(
                "P1",
                listener("L1", allow_skip_to=True),
                listener("L2", topic="kitchen", cls=KitchenListener, allow_skip_to=True),
                ex("b"),
            )
        ),
        {"order_id": 1, "kitchen_id": "k"},
    )
    r.create()
    r.deliver("L2", "ready")
    L1 = r.node("L1")
    assert L1.status == "SKIPPED"
    # Still indexed while SKIPPED with allow_skip_to.
    assert r.inst.correlations[L1.id] == Correlation("orders", "order_id", "1")
    tr = r.deliver("L1", "late")
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "late")]
    tr = r.done("L1", True)
    assert L1.status == "COMPLETED" and runs(r, tr) == []
    assert r.status("L2") == "EXECUTING"  # the walk stays where it was
    assert runs(r, r.done("L2", True)) == [("b", "execute")]
    r.done("b")
    assert r.root == "COMPLETED" and r.inst.correlations == {}


def test_skip_to_into_a_parallel_group_starts_the_sibling_branches() -> None:
    r = Run(
        spec(
            proc(
                "P1", ex("a"), ptask("par", ex("x"), listener("L", allow_skip_to=True), ex("y")), ex("after")
            )
        ),
        {"order_id": 1},
    )
    r.create()
    tr = r.deliver("L", "m")
    assert r.status("a") == "SKIPPED" and r.status("par") == "EXECUTING"
    # The jump reaches the group: the other branches run, they are not "earlier" nodes.
    assert runs(r, tr) == [("x", "execute"), ("y", "execute"), ("L", "on_message")]
    r.done("L", True)
    r.done("x")
    assert r.status("par") == "EXECUTING"
    tr = r.done("y")
    assert r.status("par") == "COMPLETED" and runs(r, tr) == [("after", "execute")]


def test_skip_to_inside_a_running_parallel_branch_leaves_sibling_branches_alone() -> None:
    r = Run(
        spec(
            proc("P1", ptask("par", ex("y"), ex("x", next=[listener("L", allow_skip_to=True)])), ex("after"))
        ),
        {"order_id": 1},
    )
    r.create()
    y, x = r.node("y"), r.node("x")
    tr = r.deliver("L", "m")
    assert x.status == "SKIPPED" and CancelJob("wf-1", x.id) in tr.effects
    assert y.status == "EXECUTING" and CancelJob("wf-1", y.id) not in tr.effects
    r.done("L", True)
    tr = r.done("y")
    assert r.status("par") == "COMPLETED" and runs(r, tr) == [("after", "execute")]


def test_skip_to_into_a_later_process_arms_its_max_run_duration() -> None:
    r = Run(
        spec(
            proc("P1", ex("a"), max_run_duration=100),
            proc("P2", listener("L", allow_skip_to=True), max_run_duration=30),
        ),
        {"order_id": 1},
    )
    r.create()
    p1, p2 = r.node("P1"), r.node("P2")
    tr = r.deliver("L", "m", at=T0 + 10)
    assert CancelTimer("wf-1", f"{p1.id}:max_run") in tr.effects
    assert SetTimer("wf-1", f"{p2.id}:max_run", T0 + 40) in tr.effects


# Correlation index ---------------------------------------------------------------------------


def test_missing_or_empty_correlation_value_is_not_indexed_until_set() -> None:
    r = Run(spec(proc("P1", ex("a"), ptask("par", listener("L"), ex("setter")))), {"order_id": ""})
    r.create()
    tr = r.done("a")
    assert r.status("L") == "EXECUTING"
    assert r.inst.correlations == {} and not of(tr, IndexPut)
    tr = r.done("setter", params={"order_id": 55})
    L = r.node("L")
    assert of(tr, IndexPut) == [IndexPut("wf-1", L.id, Correlation("orders", "order_id", "55"))]
    assert not of(tr, IndexDel)


def test_executor_changing_the_parameter_rekeys_a_waiting_listener() -> None:
    r = Run(spec(proc("P1", ptask("par", listener("L"), ex("setter")))), {"order_id": 1})
    r.create()
    L = r.node("L")
    old, new = Correlation("orders", "order_id", "1"), Correlation("orders", "order_id", "2")
    assert r.inst.correlations == {L.id: old}
    tr = r.done("setter", params={"order_id": 2})
    assert of(tr, IndexDel) == [IndexDel("wf-1", L.id, old)]
    assert of(tr, IndexPut) == [IndexPut("wf-1", L.id, new)]
    assert r.inst.correlations == {L.id: new}


def test_on_message_changing_the_parameter_rekeys_a_later_listener() -> None:
    r = Run(
        spec(
            proc(
                "P1", listener("L1", topic="kitchen", cls=KitchenListener), listener("L2", allow_skip_to=True)
            )
        ),
        {"order_id": "old", "kitchen_id": "k"},
    )
    r.create()
    L2 = r.node("L2")
    assert r.inst.correlations[L2.id].value == "old"
    r.deliver("L1", "m")
    tr = r.done("L1", False, params={"order_id": "new"})
    assert IndexDel("wf-1", L2.id, Correlation("orders", "order_id", "old")) in tr.effects
    assert IndexPut("wf-1", L2.id, Correlation("orders", "order_id", "new")) in tr.effects
    assert r.inst.correlations[L2.id].value == "new"


def test_removing_or_nulling_the_parameter_unindexes_the_listener() -> None:
    r = Run(spec(proc("P1", ptask("par", listener("L"), ex("s1"), ex("s2")))), {"order_id": 1})
    r.create()
    L = r.node("L")
    tr = r.done("s1", removed=["order_id"])
    assert of(tr, IndexDel) == [IndexDel("wf-1", L.id, Correlation("orders", "order_id", "1"))]
    assert not of(tr, IndexPut) and r.inst.correlations == {}
    tr = r.done("s2", params={"order_id": None})
    assert tr.effects == [] and r.inst.correlations == {}


# Triggers and intervals ----------------------------------------------------------------------


def test_trigger_in_the_past_runs_at_once() -> None:
    r = Run(spec(proc("P1", trigger("t"))), {"run_at": T0 - 10})
    tr = r.create()
    assert runs(r, tr) == [("t", "execute")] and r.inst.timers == {}
    assert r.node("t").time_to_execute == T0 - 10
    r.done("t")
    assert r.root == "COMPLETED"


def test_trigger_in_the_future_arms_a_timer_and_runs_when_it_fires() -> None:
    r = Run(spec(proc("P1", trigger("t"), ex("b"))), {"run_at": T0 + 60})
    tr = r.create()
    t = r.node("t")
    key = f"{t.id}:due"
    assert t.status == "EXECUTING" and runs(r, tr) == []
    assert of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 60)] and r.inst.timers == {key: T0 + 60}
    tr = r.send(TimerFired(key), at=T0 + 60)
    assert runs(r, tr) == [("t", "execute")] and r.inst.timers == {}
    # The fired timer's durable row is removed through the same CancelTimer effect.
    assert of(tr, CancelTimer) == [CancelTimer("wf-1", key)]
    tr = r.done("t")
    assert t.status == "COMPLETED" and runs(r, tr) == [("b", "execute")]


def test_unknown_or_already_fired_timer_is_ignored() -> None:
    r = Run(spec(proc("P1", trigger("t"))), {"run_at": T0 + 60})
    r.create()
    for key in ("nope:due", f"{r.node('t').id}:timeout"):
        tr = r.send(TimerFired(key))
        assert not tr.changed and tr.effects == []
    r.fire("t", "due", at=T0 + 60)
    tr = r.fire("t", "due")
    assert not tr.changed and tr.effects == []


def test_trigger_reporting_failure_fails() -> None:
    r = Run(spec(proc("P1", trigger("t"))), {"run_at": T0})
    r.create()
    r.done("t", status="FAILURE")
    assert r.status("t") == "FAILURE" and r.root == "FAILURE"


@pytest.mark.parametrize("value", [None, "tomorrow", True])
def test_trigger_without_a_numeric_time_parameter_is_rejected(value: object) -> None:
    params = {} if value is None else {"run_at": value}
    with pytest.raises(InvalidTriggerTimeForTask):
        Run(spec(proc("P1", trigger("t"))), params)


def test_trigger_without_a_lookup_key_is_rejected() -> None:
    with pytest.raises(InvalidTriggerTimeForTask):
        Run(spec(proc("P1", leaf(trigger("t").task_class, "t"))), {"run_at": T0})


@pytest.mark.parametrize("missing", ["force_at", "period"])
def test_interval_without_deadline_or_period_is_rejected(missing: str) -> None:
    params = {"force_at": T0 + 100, "period": 10}
    del params[missing]
    with pytest.raises(InvalidTriggerTimeForTask):
        Run(spec(proc("P1", interval("i"))), params)


def test_interval_polls_until_true_then_executes_once() -> None:
    r = Run(spec(proc("P1", interval("i"), ex("b"))), {"force_at": T0 + 1000, "period": 10})
    i = r.node("i")
    assert i.time_to_execute is None and i.interval_execute_period == 10
    tr = r.create()
    assert runs(r, tr) == [("i", "interval_execute")]
    tr = r.done("i", False, at=T0 + 1)
    key = f"{i.id}:due"
    assert runs(r, tr) == [] and of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 11)]
    assert i.status == "EXECUTING" and i.time_to_execute == T0 + 11
    tr = r.send(TimerFired(key), at=T0 + 11)
    assert runs(r, tr) == [("i", "interval_execute")]
    tr = r.done("i", True)
    assert runs(r, tr) == [("i", "execute")] and i.status == "EXECUTING"
    tr = r.done("i")
    assert i.status == "COMPLETED" and runs(r, tr) == [("b", "execute")] and r.inst.timers == {}


def test_interval_rearm_is_capped_at_the_deadline_which_forces_execute() -> None:
    r = Run(spec(proc("P1", interval("i"))), {"force_at": T0 + 30, "period": 100})
    r.create()
    i = r.node("i")
    tr = r.done("i", False, at=T0 + 5)
    assert of(tr, SetTimer) == [SetTimer("wf-1", f"{i.id}:due", T0 + 30)]
    tr = r.fire("i", "due", at=T0 + 30)
    assert runs(r, tr) == [("i", "execute")]
    r.done("i")
    assert i.status == "COMPLETED" and r.root == "COMPLETED"


def test_interval_false_after_the_deadline_executes_and_completes() -> None:
    r = Run(spec(proc("P1", interval("i"))), {"force_at": T0 + 30, "period": 10})
    r.create()
    tr = r.done("i", False, at=T0 + 31)
    assert runs(r, tr) == [("i", "execute")] and r.inst.timers == {}
    r.done("i")
    assert r.root == "COMPLETED"


def test_interval_reached_after_its_deadline_executes_directly() -> None:
    r = Run(spec(proc("P1", interval("i"))), {"force_at": T0 - 1, "period": 10})
    assert runs(r, r.create()) == [("i", "execute")]


def test_interval_with_a_future_start_time_waits_first() -> None:
    r = Run(
        spec(proc("P1", interval("i", time_to_execute_key="start"))),
        {"start": T0 + 50, "force_at": T0 + 500, "period": 10},
    )
    tr = r.create()
    i = r.node("i")
    assert runs(r, tr) == [] and r.inst.timers == {f"{i.id}:due": T0 + 50}
    assert runs(r, r.fire("i", "due", at=T0 + 50)) == [("i", "interval_execute")]


# Decisions -----------------------------------------------------------------------------------


def _decision_run() -> Run:
    branch_a = ex("A", next=[ex("A2")])
    return Run(
        spec(proc("P1", decision("d", branch_a, ex("B", next=[ex("B2")]), ex("C"))), proc("P2", ex("z")))
    )


@pytest.mark.parametrize("choice", ["B", "full", "id"])
def test_decision_runs_the_chosen_successor_and_skips_the_other_chains(choice: str) -> None:
    r = _decision_run()
    tr = r.create()
    assert runs(r, tr) == [("d", "evaluate")]
    chosen = {"B": "B", "full": "wf.P1.B", "id": r.node("B").id}[choice]
    tr = r.done("d", chosen)
    assert r.status("d") == "COMPLETED"
    assert r.status("A") == r.status("A2") == r.status("C") == "SKIPPED"
    assert r.status("B") == "EXECUTING" and runs(r, tr) == [("B", "execute")]
    assert runs(r, r.done("B")) == [("B2", "execute")]
    assert runs(r, r.done("B2")) == [("z", "execute")]
    assert r.status("P1") == "COMPLETED"
    r.done("z")
    assert r.root == "COMPLETED"


def test_decision_returning_none_skips_everything_and_the_process_still_completes() -> None:
    r = _decision_run()
    r.create()
    tr = r.done("d", None)
    assert {r.status(n) for n in ("A", "A2", "B", "B2", "C")} == {"SKIPPED"}
    assert r.status("P1") == "COMPLETED" and runs(r, tr) == [("z", "execute")]


def test_decision_returning_an_unknown_successor_fails_the_decision() -> None:
    r = _decision_run()
    r.create()
    tr = r.done("d", "no-such-branch")
    assert r.status("d") == "FAILURE" and "no-such-branch" in (r.node("d").error or "")
    assert r.status("P1") == "FAILURE" and r.root == "FAILURE" and runs(r, tr) == []


def test_decision_as_the_last_task_of_the_workflow() -> None:
    r = Run(spec(proc("P1", decision("d", ex("A"), ex("B")))))
    r.create()
    r.done("d", "A")
    r.done("A")
    assert r.status("B") == "SKIPPED" and r.root == "COMPLETED"


# Parallel tasks and processes ------------------------------------------------------------------


def test_parallel_join_all_starts_every_child_and_waits_for_all() -> None:
    r = Run(spec(proc("P1", ptask("par", ex("x"), ex("y"), listener("L")), ex("after"))), {"order_id": 1})
    tr = r.create()
    assert sorted(runs(r, tr)) == [("x", "execute"), ("y", "execute")]
    assert r.status("L") == "EXECUTING" and r.status("par") == "EXECUTING"
    assert r.node("x").parent == r.node("par").id and r.node("after").parent == r.node("P1").id
    r.done("x")
    r.deliver("L", "m")
    r.done("L", True)
    assert r.status("par") == "EXECUTING" and r.status("after") == "NOT_STARTED"
    tr = r.done("y")
    assert r.status("par") == "COMPLETED" and runs(r, tr) == [("after", "execute")]


def test_parallel_atleast_one_completes_on_first_child_and_ends_the_others() -> None:
    r = Run(
        spec(proc("P1", ptask("par", ex("x"), ex("y"), listener("L"), op=ATLEAST_ONE), ex("after"))),
        {"order_id": 1},
    )
    r.create()
    y, L = r.node("y"), r.node("L")
    tr = r.done("x")
    assert r.status("par") == "COMPLETED"
    assert y.status == "STOPPED" and L.status == "STOPPED"
    assert CancelJob("wf-1", y.id) in tr.effects
    assert of(tr, IndexDel) == [IndexDel("wf-1", L.id, Correlation("orders", "order_id", "1"))]
    assert runs(r, tr)[-1] == ("after", "execute")
    late = r.deliver("L", "m")
    assert not late.changed and L.status == "STOPPED"


def test_parallel_join_all_child_failure_fails_the_group_and_the_workflow() -> None:
    r = Run(spec(proc("P1", ptask("par", ex("x"), ex("y")), ex("after")), proc("P2", ex("z"))))
    r.create()
    tr = r.fail("x")
    assert r.status("x") == "FAILURE" and r.status("y") == "STOPPED"
    assert CancelJob("wf-1", r.node("y").id) in tr.effects
    assert r.status("par") == r.status("P1") == r.root == "FAILURE"
    assert r.status("after") == r.status("P2") == r.status("z") == "SKIPPED"
    # The cancelled sibling gets its stop() hook, and nothing else runs.
    assert runs(r, tr) == [("y", "stop")]


def test_parallel_atleast_one_tolerates_failures_until_all_children_fail() -> None:
    r = Run(spec(proc("P1", ptask("par", ex("x"), ex("y"), op=ATLEAST_ONE), ex("after"))))
    r.create()
    r.fail("x")
    assert r.status("par") == "EXECUTING" and r.status("y") == "EXECUTING"
    tr = r.done("y")
    assert r.status("par") == "COMPLETED" and runs(r, tr) == [("after", "execute")]

    s = Run(spec(proc("P1", ptask("par", ex("x"), ex("y"), op=ATLEAST_ONE), ex("after"))))
    s.create()
    s.fail("x")
    s.fail("y")
    assert s.status("par") == "FAILURE" and s.status("P1") == "FAILURE" and s.root == "FAILURE"
    assert s.status("after") == "SKIPPED"


def test_parallel_join_all_waits_for_the_whole_chain_of_each_child() -> None:
    r = Run(spec(proc("P1", ptask("par", ex("x", next=[ex("x2")]), ex("y")), ex("after"))))
    r.create()
    assert runs(r, r.done("x")) == [("x2", "execute")]
    tr = r.done("y")
    assert r.status("x2") == "EXECUTING"
    assert r.status("par") == "EXECUTING" and runs(r, tr) == []
    tr = r.done("x2")
    assert r.status("par") == "COMPLETED" and runs(r, tr) == [("after", "execute")]


def test_parallel_atleast_one_failure_ends_only_that_branch() -> None:
    r = Run(spec(proc("P1", ptask("par", ex("x", next=[ex("x2")]), ex("y"), op=ATLEAST_ONE), ex("after"))))
    r.create()
    tr = r.fail("x")
    assert runs(r, tr) == [] and r.status("x2") == "NOT_STARTED"  # the failed branch stops
    assert r.status("par") == "EXECUTING"
    tr = r.done("y")
    assert r.status("par") == "COMPLETED" and r.status("x2") == "SKIPPED"
    assert runs(r, tr) == [("after", "execute")]


def test_parallel_atleast_one_completes_when_a_whole_chain_completes() -> None:
    r = Run(spec(proc("P1", ptask("par", ex("x", next=[ex("x2")]), ex("y"), op=ATLEAST_ONE), ex("after"))))
    r.create()
    tr = r.done("x")
    assert r.status("par") == "EXECUTING" and runs(r, tr) == [("x2", "execute")]
    tr = r.done("x2")
    assert r.status("par") == "COMPLETED" and r.status("y") == "STOPPED"
    assert runs(r, tr) == [("y", "stop"), ("after", "execute")]


def test_parallel_processes_join_all_and_their_chains() -> None:
    r = Run(
        spec(
            pproc("PP", proc("A", ex("a1"), next=[proc("A2", ex("a2"))]), proc("B", ex("b1"), ex("b2"))),
            proc("Next", ex("n")),
        )
    )
    tr = r.create()
    assert sorted(runs(r, tr)) == [("a1", "execute"), ("b1", "execute")]
    assert r.node("A").parent == r.node("PP").id and r.node("A2").parent == r.node("PP").id
    assert runs(r, r.done("a1")) == [("a2", "execute")]
    assert r.status("A") == "COMPLETED" and r.status("PP") == "EXECUTING"
    r.done("b1")
    tr = r.done("b2")
    assert r.status("B") == "COMPLETED" and r.status("PP") == "EXECUTING" and runs(r, tr) == []
    tr = r.done("a2")
    assert r.status("A2") == r.status("PP") == "COMPLETED"
    assert runs(r, tr) == [("n", "execute")]
    r.done("n")
    assert r.root == "COMPLETED"


def test_parallel_processes_atleast_one_is_honoured() -> None:
    r = Run(
        spec(
            pproc("PP", proc("A", ex("a1")), proc("B", ex("b1"), ex("b2")), op=ATLEAST_ONE),
            proc("N", ex("n")),
        )
    )
    r.create()
    tr = r.done("a1")
    assert r.status("PP") == "COMPLETED"
    assert r.status("B") == "STOPPED" and r.status("b1") == "STOPPED" and r.status("b2") == "SKIPPED"
    assert CancelJob("wf-1", r.node("b1").id) in tr.effects
    assert runs(r, tr)[-1] == ("n", "execute")


def test_parallel_process_children_can_be_overridden_per_instance() -> None:
    template = pproc("PP", proc("A", ex("a1")))
    overrides = Overrides(parallel={"PP": [proc("X", ex("x1")), proc("Y", ex("y1"))]})
    r = Run(spec(template), overrides=overrides)
    assert sorted(n.name for n in r.inst.nodes.values()) == [
        "wf",
        "wf.PP",
        "wf.X",
        "wf.X.x1",
        "wf.Y",
        "wf.Y.y1",
    ]
    assert [p.name for p in template.children] == ["A"]


# Dynamic processes -------------------------------------------------------------------------


def test_dynamic_processes_expand_in_order_then_the_static_next() -> None:
    x, y = proc("X", ex("x1")), proc("Y", ex("y1"), next=[proc("Y2", ex("y2"))])
    template = spec(proc("First", ex("f")), dyn("D", next=[proc("Static", ex("s"))]))
    r = Run(template, overrides=Overrides(dynamic={"D": [x, y]}))
    order = []
    tr = r.create()
    while runs(r, tr):
        ((name, _job),) = runs(r, tr)
        order.append(name)
        tr = r.done(name)
    assert order == ["f", "x1", "y1", "y2", "s"]
    assert r.root == "COMPLETED"
    assert not any("D" == n.name.rsplit(".", 1)[-1] for n in r.inst.nodes.values())
    # The templates passed as overrides are untouched.
    assert x.next == [] and [p.name for p in y.next] == ["Y2"]


def test_repeated_instantiation_does_not_duplicate_nodes_or_mutate_templates() -> None:
    x, y = proc("X", ex("x1")), proc("Y", ex("y1"))
    template = spec(dyn("D", next=[proc("Static", ex("s"))]))
    overrides = Overrides(dynamic={"D": [x, y]})
    sizes = [len(Run(template, overrides=overrides, seed=None).inst.nodes) for _ in range(3)]
    assert sizes == [7, 7, 7]
    assert x.next == [] and y.next == []
    dynamic = template.root_process
    assert [p.name for p in dynamic.next] == ["Static"]  # type: ignore[union-attr]


def test_dynamic_defaults_and_empty_dynamic_process() -> None:
    r = Run(spec(dyn("D", default=[proc("Def", ex("d1"))])))
    assert r.node("Def").parent == "wf-1"
    r2 = Run(spec(dyn("D", next=[proc("S", ex("s"))])))  # nothing configured: just the next
    assert {n.name for n in r2.inst.nodes.values()} == {"wf", "wf.S", "wf.S.s"}
    with pytest.raises(TaskInvalidState):
        Run(spec(dyn("D")))


# Monitored processes and max_run_duration -----------------------------------------------------


class _Monitored(MonitoredProcessTemplateDAGInstance[object, object]):
    pass


def _monitored_run(params: dict[str, object]) -> Run:
    helper = DAGBuilderHelper(None)
    builder = helper.generic_process_builder(process_name="M", root_task=ex("work"), process_type=_Monitored)
    return Run(spec(proc("First", ex("f")), builder.build()), params)


def test_monitor_fires_at_complete_by_time_when_the_process_is_unfinished() -> None:
    r = _monitored_run({COMPLETE_BY_KEY: T0 + 100})
    r.create()
    monitor = r.node("M.monitor")
    assert monitor.kind == "monitor" and monitor.parent is None and monitor.status == "NOT_STARTED"
    assert r.node("M").monitor == monitor.id and monitor.monitored == r.node("M").id
    tr = r.done("f")
    key = f"{monitor.id}:due"
    assert monitor.status == "EXECUTING" and of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 100)]
    tr = r.send(TimerFired(key), at=T0 + 100)
    assert runs(r, tr) == [("monitor", "execute")]
    r.done("monitor")
    assert monitor.status == "COMPLETED" and r.status("M") == "EXECUTING"
    r.done("work")
    assert r.status("M") == "COMPLETED" and r.root == "COMPLETED"


def test_monitor_is_completed_and_its_timer_cancelled_when_the_process_finishes() -> None:
    r = _monitored_run({COMPLETE_BY_KEY: T0 + 100})
    r.create()
    r.done("f")
    monitor = r.node("M.monitor")
    tr = r.done("work")
    assert monitor.status == "COMPLETED" and runs(r, tr) == []
    assert CancelTimer("wf-1", f"{monitor.id}:due") in tr.effects and r.inst.timers == {}


def test_monitor_due_in_the_past_fires_at_once_and_no_time_means_no_monitor() -> None:
    r = _monitored_run({COMPLETE_BY_KEY: T0 - 5})
    r.create()
    tr = r.done("f")
    monitor = r.node("M.monitor")
    assert r.inst.timers == {f"{monitor.id}:due": T0}
    assert runs(r, r.fire("M.monitor", "due")) == [("monitor", "execute")]

    s = _monitored_run({})
    s.create()
    tr = s.done("f")
    assert s.node("M.monitor").status == "NOT_STARTED" and not of(tr, SetTimer)
    s.done("work")
    assert s.node("M.monitor").status == "SKIPPED" and s.root == "COMPLETED"


def test_max_run_duration_skips_the_process_and_the_workflow_moves_on() -> None:
    r = Run(spec(proc("Slow", ex("s1"), ex("s2"), max_run_duration=30), proc("Next", ex("n"))))
    tr = r.create()
    slow = r.node("Slow")
    key = f"{slow.id}:max_run"
    assert of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 30)]
    s1 = r.node("s1")
    tr = r.send(TimerFired(key), at=T0 + 30)
    assert slow.status == "SKIPPED" and "max_run_duration" in (slow.error or "")
    assert s1.status == "SKIPPED" and r.status("s2") == "SKIPPED"
    assert CancelJob("wf-1", s1.id) in tr.effects
    assert runs(r, tr) == [("n", "execute")]
    r.done("n")
    assert r.root == "COMPLETED"


def test_process_finishing_in_time_cancels_its_max_run_timer() -> None:
    r = Run(spec(proc("Fast", ex("f"), max_run_duration=30), proc("Next", ex("n"))))
    r.create()
    fast = r.node("Fast")
    tr = r.done("f")
    assert CancelTimer("wf-1", f"{fast.id}:max_run") in tr.effects
    assert fast.status == "COMPLETED" and runs(r, tr) == [("n", "execute")]


# Retries and failure -----------------------------------------------------------------------------


def test_retry_policy_delays_and_final_failure_propagates() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval=1.0, backoff_coefficient=2.0)
    r = Run(spec(proc("P1", ex("a", retry=policy), ex("b")), proc("P2", ex("c"))))
    r.create()
    a = r.node("a")
    key = f"{a.id}:retry:execute"
    tr = r.fail("a", "first")
    assert a.status == "EXECUTING" and a.error == "first" and a.attempts == 1
    assert runs(r, tr) == [] and of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 1)]
    tr = r.send(TimerFired(key), at=T0 + 1)
    assert [(e.job, e.seq) for e in of(tr, RunJob)] == [("execute", 2)] and a.attempts == 2
    tr = r.fail("a", "second")
    assert of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 1 + 2)]
    r.send(TimerFired(key), at=T0 + 3)
    tr = r.fail("a", "third")
    assert a.status == "FAILURE" and a.error == "third" and a.traceback == "Traceback: boom"
    assert a.attempts == 3 and runs(r, tr) == []
    assert r.status("P1") == "FAILURE" and r.root == "FAILURE"
    assert r.status("b") == r.status("P2") == r.status("c") == "SKIPPED"
    assert r.inst.timers == {}


def test_retry_succeeding_clears_the_error() -> None:
    r = Run(spec(proc("P1", ex("a", retry=RetryPolicy(max_attempts=2)), ex("b"))))
    r.create()
    r.fail("a")
    r.fire("a", "retry:execute", at=T0 + 1)
    tr = r.done("a")
    assert r.status("a") == "COMPLETED" and r.node("a").error is None
    assert runs(r, tr) == [("b", "execute")]


def test_retry_backoff_is_capped_at_the_maximum_interval() -> None:
    policy = RetryPolicy(max_attempts=4, initial_interval=10, backoff_coefficient=10, maximum_interval=50)
    assert [policy.delay(n) for n in (1, 2, 3)] == [10.0, 50.0, 50.0]
    r = Run(spec(proc("P1", ex("a", retry=policy))))
    r.create()
    dues = []
    for _ in range(3):
        tr = r.fail("a")
        (timer,) = of(tr, SetTimer)
        dues.append(timer.due - r.now)
        r.send(TimerFired(timer.key), at=timer.due)
    assert dues == [10.0, 50.0, 50.0]
    r.fail("a")
    assert r.status("a") == "FAILURE"


def test_non_retryable_failure_fails_at_once() -> None:
    r = Run(spec(proc("P1", ex("a", retry=RetryPolicy(max_attempts=5)))))
    r.create()
    tr = r.fail("a", retryable=False)
    assert r.status("a") == "FAILURE" and r.root == "FAILURE" and not of(tr, SetTimer)


def test_is_retryable_honours_non_retryable_names() -> None:
    class PaymentDeclined(ValueError):
        pass

    policy = RetryPolicy(max_attempts=3, non_retryable=("ValueError",))
    assert not is_retryable(PaymentDeclined(), policy)
    assert is_retryable(KeyError(), policy)
    assert not is_retryable(KeyError(), None)
    assert not is_retryable(KeyError(), RetryPolicy(max_attempts=3, non_retryable=("builtins.KeyError",)))


def test_failure_without_a_policy_fails_the_task_process_and_workflow() -> None:
    r = Run(spec(proc("P1", listener("L"), ex("b")), proc("P2", ex("c"))), {"order_id": 1})
    r.create()
    r.deliver("L", "m")
    tr = r.fail("L", "bad message")
    assert r.status("L") == "FAILURE" and r.node("L").error == "bad message"
    assert r.status("P1") == r.root == "FAILURE"
    assert runs(r, tr) == [] and r.inst.correlations == {} and of(tr, IndexDel)


def test_on_message_retry_redelivers_the_same_payload_first() -> None:
    r = Run(spec(proc("P1", listener("L", retry=RetryPolicy(max_attempts=3)), ex("b"))), {"order_id": 1})
    r.create()
    L = r.node("L")
    r.deliver("L", "m1")
    r.fail("L")
    assert L.inbox == ("m1",) and L.status == "EXECUTING"
    tr = r.deliver("L", "m2")  # arrives during the backoff: queued behind m1
    assert runs(r, tr) == [] and L.inbox == ("m1", "m2")
    tr = r.fire("L", "retry:on_message", at=T0 + 1)
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m1")]
    tr = r.done("L", False)
    assert [(e.job, e.payload) for e in of(tr, RunJob)] == [("on_message", "m2")]
    r.done("L", True)
    assert L.status == "COMPLETED"


def test_continue_on_failure_task_lets_the_chain_go_on() -> None:
    r = Run(spec(proc("P1", ex("a", continue_on_failure=True), ex("b")), proc("P2", ex("c"))))
    r.create()
    tr = r.fail("a")
    assert r.status("a") == "FAILURE" and runs(r, tr) == [("b", "execute")]
    r.done("b")
    r.done("c")
    assert r.status("P1") == "COMPLETED" and r.root == "COMPLETED"


def test_continue_on_failure_process_lets_the_workflow_go_on() -> None:
    r = Run(spec(proc("P1", ex("a"), ex("b"), continue_on_failure=True), proc("P2", ex("c"))))
    r.create()
    tr = r.fail("a")
    assert r.status("a") == "FAILURE" and r.status("b") == "SKIPPED"
    assert r.status("P1") == "FAILURE" and runs(r, tr) == [("c", "execute")]
    r.done("c")
    assert r.root == "COMPLETED"


def test_interval_poll_failure_is_retried_per_policy() -> None:
    r = Run(
        spec(proc("P1", interval("i", retry=RetryPolicy(max_attempts=2, initial_interval=3)))),
        {"force_at": T0 + 1000, "period": 10},
    )
    r.create()
    i = r.node("i")
    tr = r.fail("i")
    assert of(tr, SetTimer) == [SetTimer("wf-1", f"{i.id}:retry:interval_execute", T0 + 3)]
    tr = r.fire("i", "retry:interval_execute", at=T0 + 3)
    assert runs(r, tr) == [("i", "interval_execute")]
    r.done("i", False)
    assert i.attempts == 0 and i.status == "EXECUTING"  # a successful poll resets the count


def test_failed_decision_fails_the_process_and_skips_its_branches() -> None:
    r = Run(spec(proc("P1", decision("d", ex("A"), ex("B")))))
    r.create()
    r.fail("d", "evaluate raised")
    assert r.status("d") == "FAILURE" and r.status("A") == r.status("B") == "SKIPPED"
    assert r.status("P1") == r.root == "FAILURE"


def test_parallel_group_with_continue_on_failure_lets_the_chain_go_on() -> None:
    group = ptask("par", ex("x"), ex("y"))
    group.continue_on_failure = True
    r = Run(spec(proc("P1", group, ex("after"))))
    r.create()
    tr = r.fail("x")
    assert r.status("par") == "FAILURE" and r.status("y") == "STOPPED"
    assert ("after", "execute") in runs(r, tr)
    r.done("after")
    assert r.root == "COMPLETED"


def test_max_run_duration_of_a_process_inside_a_parallel_group() -> None:
    r = Run(spec(pproc("PP", proc("A", ex("a"), max_run_duration=5), proc("B", ex("b"))), proc("N", ex("n"))))
    r.create()
    r.done("b")
    tr = r.fire("A", "max_run", at=T0 + 5)
    assert r.status("A") == r.status("a") == "SKIPPED"
    assert r.status("PP") == "COMPLETED" and runs(r, tr) == [("n", "execute")]


# Timeouts -----------------------------------------------------------------------------------------


def test_listener_timeout_fails_the_workflow() -> None:
    r = Run(spec(proc("P1", listener("L", timeout=60), ex("b"))), {"order_id": 1})
    tr = r.create()
    L = r.node("L")
    key = f"{L.id}:timeout"
    assert of(tr, SetTimer) == [SetTimer("wf-1", key, T0 + 60)]
    tr = r.send(TimerFired(key), at=T0 + 60)
    assert L.status == "FAILURE" and "timed out" in (L.error or "")
    assert r.root == "FAILURE" and r.status("b") == "SKIPPED"
    assert of(tr, IndexDel) and r.inst.correlations == {}


def test_listener_timeout_with_skipped_status_moves_on() -> None:
    r = Run(spec(proc("P1", listener("L", timeout=60, timeout_status="SKIPPED"), ex("b"))), {"order_id": 1})
    r.create()
    tr = r.fire("L", "timeout", at=T0 + 60)
    assert r.status("L") == "SKIPPED" and runs(r, tr) == [("b", "execute")]
    assert r.inst.correlations == {}


def test_timeout_while_a_job_runs_cancels_it_and_its_late_result_is_ignored() -> None:
    r = Run(spec(proc("P1", ex("a", timeout=5))))
    r.create()
    a = r.node("a")
    seq = a.job_seq
    tr = r.fire("a", "timeout", at=T0 + 5)
    assert CancelJob("wf-1", a.id) in tr.effects and a.status == "FAILURE"
    assert r.root == "FAILURE"
    late = r.send(JobDone(a.id, seq, "execute"))
    assert not late.changed and a.status == "FAILURE"


def test_finishing_before_the_timeout_cancels_the_timer() -> None:
    r = Run(spec(proc("P1", listener("L", timeout=60), ex("b"))), {"order_id": 1})
    r.create()
    r.deliver("L", "m")
    tr = r.done("L", True)
    assert CancelTimer("wf-1", f"{r.node('L').id}:timeout") in tr.effects
    assert r.inst.timers == {}


# Stop -----------------------------------------------------------------------------------------------


def test_stop_ends_every_unfinished_node_and_clears_timers_and_index() -> None:
    r = Run(
        spec(
            proc("P1", ex("done_first"), ptask("par", ex("x"), listener("L"), trigger("t")), ex("after")),
            proc("P2", ex("z")),
        ),
        {"order_id": 5, "run_at": T0 + 1000},
    )
    r.create()
    r.done("done_first")
    x, L, t = r.node("x"), r.node("L"), r.node("t")
    assert r.inst.timers and r.inst.correlations
    tr = r.stop()
    assert r.status("done_first") == "COMPLETED"
    for name in ("x", "L", "t", "par", "P1", "after", "P2", "z"):
        assert r.status(name) == "STOPPED", name
    assert r.root == "STOPPED"
    stops = sorted(r.short(e.node) for e in of(tr, RunJob) if e.job == "stop")
    assert stops == ["L", "t", "x"]
    assert all(e.job == "stop" for e in of(tr, RunJob))
    assert of(tr, CancelJob) == [CancelJob("wf-1", x.id)]
    assert of(tr, CancelTimer) == [CancelTimer("wf-1", f"{t.id}:due")] and r.inst.timers == {}
    assert of(tr, IndexDel) == [IndexDel("wf-1", L.id, Correlation("orders", "order_id", "5"))]
    assert r.inst.correlations == {}
    # Nothing revives it.
    for event in (
        Deliver(L.id, "m"),
        JobDone(x.id, x.job_seq, "execute"),
        JobDone(x.id, x.job_seq, "stop"),
        TimerFired(f"{t.id}:due"),
    ):
        later = r.send(event)
        assert not later.changed and later.effects == []
    again = r.stop()
    assert not again.changed and again.effects == [] and r.root == "STOPPED"
    assert r.status("x") == "STOPPED"


def test_stop_ends_an_armed_monitor_and_never_deletes() -> None:
    r = _monitored_run({COMPLETE_BY_KEY: T0 + 100})
    r.delete_on_complete = True
    r.create()
    r.done("f")
    monitor = r.node("M.monitor")
    tr = r.stop()
    assert monitor.status == "STOPPED" and CancelTimer("wf-1", f"{monitor.id}:due") in tr.effects
    assert not of(tr, InstanceDeleted) and r.inst.timers == {}


def test_stop_of_a_not_submitted_instance() -> None:
    r = Run(spec(proc("P1", ex("a"))))
    r.create(submit=False)
    tr = r.stop()
    assert set(r.statuses().values()) == {"STOPPED"} and not of(tr, RunJob)


def test_terminal_workflow_never_changes() -> None:
    r = Run(spec(proc("P1", listener("L", reprocess_on_message=True))), {"order_id": 1})
    r.create()
    L = r.node("L")
    r.deliver("L", "m")
    r.done("L", True)
    assert r.root == "COMPLETED" and r.inst.correlations == {}
    snapshot = r.statuses()
    for event in (Deliver(L.id, "again"), TimerFired(f"{L.id}:due")):
        tr = r.send(event)
        assert not tr.changed and tr.effects == []
    tr = r.stop()
    assert not tr.changed and tr.effects == []
    assert r.statuses() == snapshot


# Ids ----------------------------------------------------------------------------------------------


def test_seeded_instantiation_gives_identical_ids_unseeded_differs() -> None:
    template = spec(proc("P1", ex("a"), listener("L")), proc("P2", ex("b")))
    ids = [sorted(Run(template, seed=42).inst.nodes) for _ in range(2)]
    assert ids[0] == ids[1]
    assert sorted(Run(template, seed=random.Random(42)).inst.nodes) == ids[0]
    assert sorted(Run(template, seed=43).inst.nodes) != ids[0]
    a, b = (set(Run(template, seed=None).inst.nodes) - {"wf-1"} for _ in range(2))
    assert a.isdisjoint(b)


def test_unknown_template_kind_is_rejected() -> None:
    with pytest.raises(TypeError):
        instantiate(WorkflowSpec("wf", "not a template"), "i", {}, now=T0)  # type: ignore[arg-type]


def test_listener_without_correlatable_key_is_never_indexed() -> None:
    class Plain(OrderListener):
        correlatable_key = None

    r = Run(spec(proc("P1", listener("L", cls=Plain))), {"order_id": 1})
    tr = r.create()
    assert r.status("L") == "EXECUTING" and r.inst.correlations == {} and not of(tr, IndexPut)
