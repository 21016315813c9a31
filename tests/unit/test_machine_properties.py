"""Property test of the pure machine: random event sequences over a few templates, with the
machine's invariants checked after every step.

- a terminal workflow never changes again (whatever arrives);
- index entries (the IndexPut/IndexDel effects, replayed) are exactly the instance's
  ``correlations``, and exist only for listeners that can still match;
- timers (SetTimer/CancelTimer, replayed) are exactly the instance's ``timers``;
- attempts never decrease, except where a fresh retry budget starts by design: a listener's
  attempts count the tries of its current message, an interval task's those of its current
  poll, so the outcome of an ``on_message``/``interval_execute`` sets them back to 0;
- every effect names this instance and an existing node.

Bounded for CI (a fixed seed, a few seconds); ``DAGGERFLOW_PROPERTY_EXAMPLES=5000`` runs more,
with random seeds, by hand.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daggerflow.machine import (
    CancelJob,
    CancelTimer,
    Deliver,
    IndexDel,
    IndexPut,
    InstanceDeleted,
    JobDone,
    JobFailed,
    RunJob,
    SetTimer,
    Stop,
    Submit,
    TimerFired,
    Transition,
)
from daggerflow.model.instance import Correlation, RetryPolicy, copy_instance, encode_instance
from daggerflow.model.status import TaskOperator

from .machine_helpers import (
    T0,
    Run,
    cmd,
    decision,
    dyn,
    ex,
    interval,
    listener,
    pproc,
    proc,
    ptask,
    spec,
    trigger,
)

EXAMPLES = int(os.environ.get("DAGGERFLOW_PROPERTY_EXAMPLES", "0"))
RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0)

TEMPLATES: dict[str, Any] = {
    "sequential": lambda: spec(proc("P1", ex("a", retry=RETRY), cmd("b")), proc("P2", ex("c"))),
    "parallel": lambda: spec(
        proc("P1", ptask("par", ex("x", retry=RETRY), ex("y"), op=TaskOperator.ATLEAST_ONE), ex("z")),
        pproc("PP", proc("Q1", ex("q1")), proc("Q2", ex("q2"))),
    ),
    "dynamic": lambda: spec(dyn("D", default=[proc("d1", ex("e1")), proc("d2", ex("e2", retry=RETRY))])),
    "decision": lambda: spec(proc("P1", decision("choose", ex("left"), ex("right")), ex("after"))),
    "listener": lambda: spec(
        proc("P1", cmd("send"), listener("wait", retry=RETRY), ex("rekey")),
        proc("P2", listener("second")),
    ),
    "timers": lambda: spec(proc("P1", trigger("t"), interval("poll"), ex("end", timeout=30.0))),
}
PARAMS: dict[str, dict[str, Any]] = {
    "listener": {"order_id": "o-1"},
    "timers": {"run_at": T0 + 10, "force_at": T0 + 100, "period": 7},
}

# One step: what to do (an index into the events that make sense now, or junk), a result,
# a time step, and a parameter change.
step = st.tuples(
    st.integers(0, 1000),
    st.sampled_from([None, True, False, "left", "right", "nope"]),
    st.sampled_from([0.0, 0.5, 5.0, 50.0, 500.0]),
    st.sampled_from([None, "o-1", "o-2", ""]),
)


class Model:
    """The index and timers as the effects describe them, and the checks."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.index: dict[str, Correlation] = {}
        self.timers: set[str] = set()
        self.deleted = False

    def effects(self, tr: Transition) -> None:
        inst = self.run.inst
        for e in tr.effects:
            assert getattr(e, "instance", inst.id) == inst.id, e
            if isinstance(e, InstanceDeleted):
                self.deleted = True
                continue
            node = e.node if isinstance(e, (RunJob, CancelJob, IndexPut, IndexDel)) else e.key.split(":")[0]
            assert node in inst.nodes, f"{e} names no node of the instance"
            if isinstance(e, IndexPut):
                self.index[e.node] = e.at
            elif isinstance(e, IndexDel):
                assert self.index.get(e.node) == e.at, f"{e} removes an entry that is not there"
                del self.index[e.node]
            elif isinstance(e, SetTimer):
                self.timers.add(e.key)
            elif isinstance(e, CancelTimer):
                self.timers.discard(e.key)

    def check(self) -> None:
        inst = self.run.inst
        assert self.index == dict(inst.correlations)
        assert self.timers == set(inst.timers)
        for node_id in self.index:
            node = inst.nodes[node_id]
            assert node.kind in ("listener", "sensor"), node
            # A plain listener (no reprocess, no skip-to) can match only while it waits.
            assert not node.is_terminal() and not inst.is_terminal(), f"{node.name} {node.status} is indexed"
        if inst.is_terminal():
            assert not self.index and not any(n.job for n in inst.nodes.values() if n.job != "stop")


def events_now(run: Run, result: Any, param: str | None) -> tuple[list[Any], list[Any]]:
    """Events that could arrive now: outcomes of the jobs in flight (current and stale),
    messages for listeners, the timers; and the rarer ones: stop, submit, junk."""
    inst = run.inst
    out: list[Any] = []
    for node in inst.nodes.values():
        if node.job is not None:
            changes = {} if param is None else {"order_id": param}
            done = JobDone(node.id, node.job_seq, node.job, result, changes)
            out.extend([done, done, done])  # (the usual outcome: more likely than a failure)
            out.append(JobFailed(node.id, node.job_seq, node.job, "boom", "", result is True))
            out.append(JobDone(node.id, node.job_seq - 1, node.job, result))  # stale
        if node.kind in ("listener", "sensor"):
            out.append(Deliver(node.id, {"order_id": param}, node.topic or ""))
    out.extend(TimerFired(key) for key in inst.timers)
    return out, [TimerFired("nobody:due"), Stop(), Submit(), JobDone("no-such-node", 1, "execute")]


def drive(template: str, create_submit: bool, steps: list[tuple[int, Any, float, str | None]]) -> None:
    run = Run(TEMPLATES[template](), dict(PARAMS.get(template, {})))
    model = Model(run)
    tr = run.create(submit=create_submit)
    model.effects(tr)
    model.check()
    for choice, result, dt, param in steps:
        if model.deleted:
            return
        usual, rare = events_now(run, result, param)
        options = usual if usual and choice % 10 else rare
        event = options[choice // 10 % len(options)]
        before = copy_instance(run.inst)
        before_bytes = encode_instance(before)
        tr = run.send(event, at=run.now + dt)
        inst = run.inst
        if before.is_terminal():
            assert encode_instance(inst) == before_bytes, f"terminal workflow changed by {event}"
            assert not tr.changed and not [
                e for e in tr.effects if not isinstance(e, (CancelJob, CancelTimer))
            ]
        fresh_budget = isinstance(event, JobDone) and event.job in ("on_message", "interval_execute")
        for node_id, node in before.nodes.items():
            if fresh_budget and node_id == event.node and node.job == event.job and node.job_seq == event.seq:
                continue
            assert inst.nodes[node_id].attempts >= node.attempts, (
                f"attempts of {node.name} decreased on {event}"
            )
        model.effects(tr)
        model.check()


@settings(
    max_examples=EXAMPLES or 150,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.sampled_from(sorted(TEMPLATES)), st.booleans(), st.lists(step, max_size=40))
def test_random_event_sequences_keep_the_invariants(
    template: str, create_submit: bool, steps: list[tuple[int, Any, float, str | None]]
) -> None:
    drive(template, create_submit, steps)
