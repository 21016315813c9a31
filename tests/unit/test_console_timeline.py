"""The history timeline (pure): waiting told apart from executing, open spans reach now."""

from __future__ import annotations

from typing import Any

from daggerflow.console.timeline import build


def change(node: str, a: str, b: str) -> dict[str, str]:
    return {"node": node, "from": a, "to": b}


def snapshot(status: str, completed: float = 0.0) -> dict[str, Any]:
    tasks = {
        "cmd": {"id": "cmd", "task_name": "w.P.cmd", "kind": "command", "status": {"code": "COMPLETED"}},
        "lis": {"id": "lis", "task_name": "w.P.lis", "kind": "listener", "status": {"code": "COMPLETED"}},
        "job": {"id": "job", "task_name": "w.P.job", "kind": "executor", "status": {"code": status}},
        "later": {"id": "later", "task_name": "w.P.later", "kind": "executor", "status": {"code": "NOT_STARTED"}},
        "p": {"id": "p", "task_name": "w.P", "kind": "process", "status": {"code": status}},
    }
    return {"id": "w", "status": {"code": status}, "time_created": 100.0, "time_completed": completed,
            "lastupdated": 100.0, "tasks": tasks}  # fmt: skip


HISTORY = [
    {"seq": 0, "time": 100.0, "event": "create", "changes": [change("cmd", "NOT_STARTED", "EXECUTING")]},
    {"seq": 1, "time": 101.0, "event": "done", "node": "cmd",
     "changes": [change("cmd", "EXECUTING", "COMPLETED"), change("lis", "NOT_STARTED", "EXECUTING")]},
    {"seq": 2, "time": 150.0, "event": "deliver", "node": "lis", "topic": "k", "offset": 0},
    {"seq": 3, "time": 150.0, "event": "done", "node": "lis",
     "changes": [change("lis", "EXECUTING", "COMPLETED"), change("job", "NOT_STARTED", "EXECUTING")]},
    {"seq": 4, "time": 152.0, "event": "failed", "node": "job", "error": "boom", "attempt": 1},
    {"seq": 5, "time": 162.0, "event": "timer", "node": "job", "detail": "retry:execute"},
]  # fmt: skip


def states(row: Any) -> list[tuple[str, float, float]]:
    return [(s.state, s.start, s.end) for s in row.segments]


def test_a_listener_waits_a_job_executes_and_a_retry_wait_is_waiting() -> None:
    tl = build(snapshot("EXECUTING"), HISTORY, now=170.0)
    rows = {r.id: r for r in tl.rows}
    assert set(rows) == {"cmd", "lis", "job"}, "processes and tasks never started have no row"
    assert states(rows["cmd"]) == [("executing", 100.0, 101.0)]
    assert states(rows["lis"]) == [("waiting", 101.0, 150.0)]
    assert states(rows["job"]) == [("executing", 150.0, 152.0), ("waiting", 152.0, 162.0), ("executing", 162.0, 170.0)]
    assert rows["job"].end_x is None and rows["lis"].end_x is not None
    assert [r.id for r in tl.rows] == ["cmd", "lis", "job"], "in the order they started"


def test_bars_fit_the_plot_and_an_ended_instance_ends_the_axis() -> None:
    entries = [*HISTORY, {"seq": 6, "time": 200.0, "event": "done", "node": "job",
                          "changes": [change("job", "EXECUTING", "COMPLETED")]}]  # fmt: skip
    tl = build(snapshot("COMPLETED", completed=200.0), entries, now=999.0)
    assert tl.end == 200.0
    for row in tl.rows:
        for s in row.segments:
            assert tl.label_w <= s.x and s.x + s.w <= tl.width
    lis = next(r for r in tl.rows if r.id == "lis")
    assert lis.segments[0].w > 100, "49 of 100 seconds is about half the plot"
