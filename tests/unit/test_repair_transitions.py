"""Pure tests of the operators' actions (``machine/repair.py``): retry, skip, complete and
parameter patches, applied like any event."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daggerflow.machine import Complete, PatchParameters, Retry, Skip
from daggerflow.model.instance import Correlation
from daggerflow.model.status import TaskOperator

from .machine_helpers import (
    IndexDel,
    IndexPut,
    RetryPolicy,
    Run,
    SetTimer,
    decision,
    ex,
    listener,
    of,
    pproc,
    proc,
    ptask,
    runs,
    spec,
    trigger,
)

ORDERS_7 = Correlation("orders", "order_id", "7")


def failed_chain() -> Run:
    r = Run(spec(proc("P1", ex("a")), proc("P2", ex("b"), ex("c"), ex("d"))))
    r.create()
    r.done("a")
    r.done("b")
    r.fail("c", retryable=False)
    return r


def test_retry_reruns_the_failed_task_and_what_the_failure_left_unreached_only() -> None:
    r = failed_chain()
    assert r.root == "FAILURE" and r.status("d") == "SKIPPED" and r.status("P2") == "FAILURE"
    tr = r.send(Retry())
    assert tr.error is None and tr.changed
    assert runs(r, tr) == [("c", "execute")]  # a and b completed: not run again
    c = r.node("c")
    assert (c.status, c.attempts, c.error, c.traceback) == ("EXECUTING", 1, None, None)
    assert r.status("P2") == "EXECUTING" and r.root == "EXECUTING" and r.status("d") == "NOT_STARTED"
    assert r.status("a") == r.status("b") == r.status("P1") == "COMPLETED"
    r.done("c")
    tr = r.done("d")
    assert r.root == "COMPLETED"


def test_retry_resets_attempts_so_the_retry_policy_applies_again() -> None:
    r = Run(spec(proc("P", ex("a", retry=RetryPolicy(max_attempts=2, initial_interval=1.0)))))
    r.create()
    r.fail("a")
    r.fire("a", "retry:execute", at=r.now + 1)
    r.fail("a")
    assert r.root == "FAILURE" and r.node("a").attempts == 2
    r.send(Retry())
    assert r.node("a").attempts == 1
    tr = r.fail("a")
    assert r.root == "EXECUTING" and of(tr, SetTimer)  # a second try, as on the first run


def test_retry_merges_runtime_parameters_first() -> None:
    r = failed_chain()
    r.inst.runtime_parameters["keep"] = 1
    r.send(Retry({"fixed": True}))
    assert r.inst.runtime_parameters == {"keep": 1, "fixed": True}


def test_retry_is_refused_for_any_status_but_failure() -> None:
    r = Run(spec(proc("P", ex("a"))))
    r.create(submit=False)
    for _ in range(2):
        before = r.statuses()
        tr = r.send(Retry({"x": 1}))
        assert tr.error is not None and "only a FAILURE workflow" in tr.error
        assert not tr.changed and r.statuses() == before and "x" not in r.inst.runtime_parameters
        r.submit()
    r.done("a")
    assert r.root == "COMPLETED" and r.send(Retry()).error is not None


def test_retry_in_a_parallel_group_restarts_the_cancelled_sibling_and_keeps_the_completed_one() -> None:
    r = Run(spec(proc("P", ptask("G", ex("x"), ex("y"), ex("z")), ex("after"))))
    r.create()
    r.done("x")
    r.fail("y", retryable=False)
    assert r.root == "FAILURE" and r.status("z") == "STOPPED" and r.status("x") == "COMPLETED"
    tr = r.send(Retry())
    assert sorted(runs(r, tr)) == [("y", "execute"), ("z", "execute")]
    assert r.status("G") == "EXECUTING" and r.status("after") == "NOT_STARTED"
    r.done("y")
    tr = r.done("z")
    assert runs(r, tr) == [("after", "execute")]
    r.done("after")
    assert r.root == "COMPLETED"


def test_retry_of_parallel_processes_restarts_only_the_failed_branch() -> None:
    r = Run(spec(pproc("G", proc("A", ex("a1"), ex("a2")), proc("B", ex("b1")), op=TaskOperator.ATLEAST_ONE)))
    r.create()
    r.fail("a1", retryable=False)
    r.fail("b1", retryable=False)
    assert r.root == "FAILURE"
    tr = r.send(Retry())
    assert sorted(runs(r, tr)) == [("a1", "execute"), ("b1", "execute")]
    tr = r.done("b1")
    assert r.root == "COMPLETED"  # ATLEAST_ONE: the first branch that completes ends the group


def test_retry_keeps_the_decision_made_and_its_skipped_branch() -> None:
    r = Run(spec(proc("P", decision("d", ex("left"), ex("right")))))
    r.create()
    r.done("d", "left")
    r.fail("left", retryable=False)
    assert r.status("right") == "SKIPPED"
    tr = r.send(Retry())
    assert runs(r, tr) == [("left", "execute")] and r.status("right") == "SKIPPED"
    assert r.status("d") == "COMPLETED"
    r.done("left")
    assert r.root == "COMPLETED" and r.status("right") == "SKIPPED"


def test_retry_of_a_failed_decision_evaluates_again() -> None:
    r = Run(spec(proc("P", decision("d", ex("left"), ex("right")))))
    r.create()
    r.done("d", "nowhere")  # not a successor: the decision fails
    assert r.root == "FAILURE"
    tr = r.send(Retry())
    assert runs(r, tr) == [("d", "evaluate")]
    r.done("d", "right")
    r.done("right")
    assert r.root == "COMPLETED" and r.status("left") == "SKIPPED"


def test_retry_passes_over_a_failure_that_continued() -> None:
    r = Run(spec(proc("P", ex("soft", continue_on_failure=True), ex("hard"), ex("last"))))
    r.create()
    r.fail("soft", retryable=False)
    r.fail("hard", retryable=False)
    tr = r.send(Retry())
    assert runs(r, tr) == [("hard", "execute")] and r.status("soft") == "FAILURE"
    r.done("hard")
    r.done("last")
    assert r.root == "COMPLETED"


def test_a_retried_listener_is_indexed_again() -> None:
    r = Run(spec(proc("P", listener("L"), ex("b"))), {"order_id": 7})
    r.create()
    L = r.node("L").id
    r.deliver("L", {"n": 1})
    tr = r.fail("L", retryable=False)
    assert r.root == "FAILURE" and of(tr, IndexDel) == [IndexDel("wf-1", L, ORDERS_7)]
    assert r.inst.correlations == {}
    tr = r.send(Retry())
    assert r.status("L") == "EXECUTING" and of(tr, IndexPut) == [IndexPut("wf-1", L, ORDERS_7)]
    assert r.inst.correlations == {L: ORDERS_7}
    r.deliver("L", {"n": 2})
    r.done("L", True)
    r.done("b")
    assert r.root == "COMPLETED"


def test_skip_a_waiting_listener_unindexes_it_and_goes_on() -> None:
    r = Run(spec(proc("P", listener("L", timeout=60.0), ex("b"))), {"order_id": 7})
    r.create()
    L = r.node("L").id
    assert f"{L}:timeout" in r.inst.timers
    tr = r.send(Skip(L, "cli"))
    assert tr.error is None and r.status("L") == "SKIPPED"
    assert runs(r, tr) == [("b", "execute")]
    assert of(tr, IndexDel) == [IndexDel("wf-1", L, ORDERS_7)] and r.inst.timers == {}


def test_skip_in_a_parallel_atleast_one_group_completes_the_group() -> None:
    r = Run(spec(proc("P", ptask("G", listener("L"), listener("M"), op=TaskOperator.ATLEAST_ONE), ex("b"))),
            {"order_id": 7})  # fmt: skip
    r.create()
    tr = r.send(Skip(r.node("L").id))
    assert r.status("G") == "COMPLETED" and r.status("M") == "STOPPED" and ("b", "execute") in runs(r, tr)


def test_skip_is_refused_for_running_code_unreached_tasks_composites_and_unknown_nodes() -> None:
    r = Run(spec(proc("P", ex("a"), ex("b"))))
    r.create()
    for node, words in [
        (r.node("a").id, "running its execute()"),
        (r.node("b").id, "is NOT_STARTED"),
        (r.node("P").id, "only a task"),
        ("nope", "no node"),
    ]:
        tr = r.send(Skip(node))
        assert tr.error is not None and words in tr.error and not tr.changed
    assert r.status("a") == "EXECUTING" and r.status("b") == "NOT_STARTED"


def test_skip_of_a_task_waiting_for_its_retry_goes_on_without_it() -> None:
    r = Run(spec(proc("P", ex("a", retry=RetryPolicy(max_attempts=3)), ex("b"))))
    r.create()
    r.fail("a")
    a = r.node("a").id
    assert f"{a}:retry:execute" in r.inst.timers and r.node("a").job is None
    tr = r.send(Skip(a))
    assert runs(r, tr) == [("b", "execute")] and r.inst.timers == {}


def test_complete_a_waiting_listener_or_trigger() -> None:
    r = Run(spec(proc("P", listener("L"), trigger("T"), ex("b"))), {"order_id": 7, "run_at": 2e9})
    r.create()
    L = r.node("L").id
    tr = r.send(Complete(L, "api"))
    assert r.status("L") == "COMPLETED" and of(tr, IndexDel) == [IndexDel("wf-1", L, ORDERS_7)]
    T = r.node("T").id
    assert r.status("T") == "EXECUTING" and f"{T}:due" in r.inst.timers
    tr = r.send(Complete(T))
    assert r.status("T") == "COMPLETED" and runs(r, tr) == [("b", "execute")] and r.inst.timers == {}


def test_complete_is_refused_for_an_executor_and_a_terminal_workflow() -> None:
    r = Run(spec(proc("P", ex("a"))))
    r.create()
    tr = r.send(Complete(r.node("a").id))
    assert tr.error is not None and "only a listener, sensor or trigger" in tr.error
    r.stop()
    tr = r.send(Complete(r.node("a").id))
    assert tr.error is not None and "STOPPED" in tr.error


def test_patch_moves_a_waiting_listeners_index_entry() -> None:
    r = Run(spec(proc("P", listener("L"), ex("b"))), {"order_id": 7})
    r.create()
    L = r.node("L").id
    tr = r.send(PatchParameters({"order_id": 8, "note": "x"}, "api"))
    moved = Correlation("orders", "order_id", "8")
    assert tr.changed and of(tr, IndexDel) == [IndexDel("wf-1", L, ORDERS_7)]
    assert of(tr, IndexPut) == [IndexPut("wf-1", L, moved)]
    assert r.inst.correlations == {L: moved} and r.inst.runtime_parameters == {"order_id": 8, "note": "x"}


def test_patch_of_a_created_instance_is_accepted_and_of_an_ended_one_refused() -> None:
    r = Run(spec(proc("P", ex("a"))))
    r.create(submit=False)
    assert r.send(PatchParameters({"k": 1})).error is None and r.inst.runtime_parameters == {"k": 1}
    r.submit()
    r.done("a")
    tr = r.send(PatchParameters({"k": 2}))
    assert tr.error is not None and r.inst.runtime_parameters == {"k": 1}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["done", "fail"]), min_size=1, max_size=6), st.integers(0, 5))
def test_property_retry_ends_like_a_clean_run_and_never_reruns_a_completed_task(
    outcomes: list[str], fail_at: int
) -> None:
    """Whatever task failed, a retry followed by successes completes the workflow, and no
    task that had completed is run again."""
    names = [f"t{i}" for i in range(len(outcomes))]
    r = Run(spec(proc("P", *[ex(n) for n in names[: len(names) // 2 + 1]]),
                 proc("Q", *[ex(n) for n in names[len(names) // 2 + 1 :]] or [ex("last")])))  # fmt: skip
    r.create()
    completed: set[str] = set()
    step = 0
    while r.root == "EXECUTING":
        running = [n for n in r.inst.nodes.values() if n.job is not None]
        node = running[0]
        short = node.name.rsplit(".", 1)[-1]
        if step == fail_at % len(outcomes) and r.send(Retry()).error is not None:
            r.fail(short, retryable=False)
        else:
            r.done(short)
            completed.add(short)
        step += 1
    if r.root == "FAILURE":
        tr = r.send(Retry())
        rerun: list[Any] = [name for name, _ in runs(r, tr)]
        assert not completed & set(rerun)
        while r.root == "EXECUTING":
            node = next(n for n in r.inst.nodes.values() if n.job is not None)
            r.done(node.name.rsplit(".", 1)[-1])
    assert r.root == "COMPLETED"
