"""The console's graph layout (pure): every node drawn once, nothing overlapping, parallel
members and decision branches side by side, the chosen branch marked, groups around their parts."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from daggerflow.console.graph import (
    CHAR_EM,
    FACTS_CHARS,
    GAP_Y,
    Box,
    Graph,
    Group,
    compact,
    counts_line,
    facts_chars,
    from_snapshot,
    from_template,
    layout,
    short_label,
)


def node(nid: str, name: str, kind: str, status: str, parent: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": nid, "task_name": f"order_flow.{name}", "kind": kind, "status": {"code": status, "value": status},
        "parent_id": parent, "time_created": 100.0, "time_submitted": 0.0, "time_completed": 0.0,
        "next_dags": [], "root_dag": None, "attempts": 0, **extra,
    }  # fmt: skip


def order_flow(decided: bool = True) -> dict[str, Any]:
    """The browser tests' workflow, as its snapshot looks once the charge failed."""
    done = {"time_submitted": 101.0, "time_completed": 103.5, "attempts": 1}
    tasks = [
        node("p1", "Order", "process", "COMPLETED", "root", root_dag="cmd", next_dags=["p2"]),
        node("cmd", "Order.Order_command_task", "command", "COMPLETED", "p1", next_dags=["lis"], **done),
        node("lis", "Order.Order_listener_task", "listener", "COMPLETED", "p1", **done),
        node("p2", "Route", "process", "COMPLETED", "root", root_dag="dec", next_dags=["p3"]),
        node("dec", "Route.route", "decision", "COMPLETED" if decided else "NOT_STARTED", "p2",
             next_dags=["exp", "std"]),
        node("exp", "Route.express_executor_task", "executor", "SKIPPED" if decided else "NOT_STARTED", "p2"),
        node("std", "Route.standard_executor_task", "executor", "COMPLETED" if decided else "NOT_STARTED", "p2",
             next_dags=["after"]),
        node("after", "Route.after_executor_task", "executor", "COMPLETED", "p2"),
        node("p3", "Fulfil", "process", "FAILURE", "root", root_dag="par"),
        node("par", "Fulfil.pack_and_invoice", "parallel", "COMPLETED", "p3", root_dag="pack", next_dags=["charge"],
             parallel_child_task_list=["pack", "invoice"], operator_type="JOIN_ALL"),
        node("pack", "Fulfil.pack_executor_task", "executor", "COMPLETED", "par", **done),
        node("invoice", "Fulfil.invoice_executor_task", "executor", "COMPLETED", "par", **done),
        node("charge", "Fulfil.charge_executor_task", "executor", "FAILURE", "p3", **done),
        node("mon", "Fulfil.monitor", "monitor", "EXECUTING", None, time_submitted=102.0),
    ]  # fmt: skip
    return {"id": "root", "root_dag": "p1", "tasks": {t["id"]: t for t in tasks}}


def rect(r: Box | Group) -> tuple[int, int, int, int]:
    return r.x, r.y, r.x + r.w, r.y + r.h


def overlap(a: Box | Group, b: Box | Group) -> bool:
    ax0, ay0, ax1, ay1 = rect(a)
    bx0, by0, bx1, by1 = rect(b)
    return ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1


def inside(inner: Box | Group, outer: Group) -> bool:
    ix0, iy0, ix1, iy1 = rect(inner)
    ox0, oy0, ox1, oy1 = rect(outer)
    return ox0 < ix0 and oy0 < iy0 and ix1 < ox1 and iy1 < oy1


def boxes(g: Graph) -> dict[str, Box]:
    return {b.item.id: b for b in g.boxes}


def groups(g: Graph) -> dict[str, Group]:
    return {x.item.id: x for x in g.groups}


def test_every_node_is_drawn_once_and_the_workflow_itself_is_not() -> None:
    snap = order_flow()
    g = layout(from_snapshot(snap))
    drawn = [b.item.id for b in g.boxes] + [x.item.id for x in g.groups]
    assert sorted(drawn) == sorted(snap["tasks"])
    assert set(groups(g)) == {"p1", "p2", "p3", "par"}
    assert "mon" in boxes(g), "a parentless monitor is drawn after the flow"


def test_no_two_boxes_overlap_and_each_sits_inside_its_groups() -> None:
    snap = order_flow()
    g = layout(from_snapshot(snap))
    for a, b in combinations(g.boxes, 2):
        assert not overlap(a, b), (a.label, b.label)
    gs = groups(g)
    for b in g.boxes:
        parent = snap["tasks"][b.item.id]["parent_id"]
        if parent in gs:
            assert inside(b, gs[parent]), (b.label, parent)
    assert inside(gs["par"], gs["p3"])
    for a, b in combinations([gs["p1"], gs["p2"], gs["p3"]], 2):
        assert not overlap(a, b)
    assert 0 <= min(r.x for r in g.groups) and max(r.x + r.w for r in g.groups) <= g.width
    assert max(r.y + r.h for r in [*g.boxes, *g.groups]) <= g.height


def test_processes_run_top_to_bottom_in_order_and_tasks_of_a_chain_follow_each_other() -> None:
    g = layout(from_snapshot(order_flow()))
    gs, bs = groups(g), boxes(g)
    assert gs["p1"].y + gs["p1"].h < gs["p2"].y < gs["p2"].y + gs["p2"].h < gs["p3"].y
    assert bs["cmd"].y + bs["cmd"].h + GAP_Y == bs["lis"].y
    assert bs["cmd"].x == bs["lis"].x, "a chain is one column"
    assert gs["par"].y + gs["par"].h < bs["charge"].y
    edges = {(e.source, e.target) for e in g.edges}
    assert {("cmd", "lis"), ("p1", "p2"), ("p2", "p3"), ("par", "charge"), ("std", "after")} <= edges


def test_parallel_members_sit_side_by_side() -> None:
    bs = boxes(layout(from_snapshot(order_flow())))
    pack, invoice = bs["pack"], bs["invoice"]
    assert pack.y == invoice.y
    assert pack.x + pack.w < invoice.x


def test_the_chosen_branch_is_marked_and_the_other_shown_skipped() -> None:
    g = layout(from_snapshot(order_flow()))
    bs = boxes(g)
    assert bs["std"].branch == "chosen" and bs["exp"].branch == "skipped"
    assert bs["after"].branch is None, "only a branch's first node carries the mark"
    assert bs["exp"].y == bs["std"].y and bs["exp"].x + bs["exp"].w < bs["std"].x
    kinds = {e.target: e.kind for e in g.edges if e.source == "dec"}
    assert kinds == {"exp": "skipped", "std": "chosen"}

    undecided = boxes(layout(from_snapshot(order_flow(decided=False))))
    assert undecided["std"].branch == "open" and undecided["exp"].branch == "open"


def test_durations_of_ended_nodes_and_the_start_of_running_ones() -> None:
    bs = boxes(layout(from_snapshot(order_flow())))
    assert bs["cmd"].item.seconds == 2.5 and bs["cmd"].item.since is None
    assert bs["cmd"].item.attempts == 1
    assert bs["mon"].item.seconds is None and bs["mon"].item.since == 102.0
    assert bs["exp"].item.seconds is None


def test_a_template_is_laid_out_from_its_dotted_names() -> None:
    t = "order_flow"
    nodes = [
        {"name": f"{t}.Order", "kind": "process", "parent": None, "next": [f"{t}.Fulfil"],
         "children": [f"{t}.Order.send"]},
        {"name": f"{t}.Order.send", "kind": "command", "parent": f"{t}.Order", "next": [f"{t}.Order.wait"],
         "children": []},
        {"name": f"{t}.Order.wait", "kind": "listener", "parent": f"{t}.Order", "next": [], "children": []},
        {"name": f"{t}.Fulfil", "kind": "process", "parent": None, "next": [], "children": [f"{t}.Fulfil.both"]},
        {"name": f"{t}.Fulfil.both", "kind": "parallel", "parent": f"{t}.Fulfil", "next": [], "operator": "JOIN_ALL",
         "children": [f"{t}.Fulfil.a", f"{t}.Fulfil.b"]},
        {"name": f"{t}.Fulfil.a", "kind": "executor", "parent": f"{t}.Fulfil.both", "next": [], "children": []},
        {"name": f"{t}.Fulfil.b", "kind": "executor", "parent": f"{t}.Fulfil.both", "next": [], "children": []},
    ]  # fmt: skip
    g = layout(from_template(nodes, {f"{t}.Fulfil.a": {"COMPLETED": 3, "FAILURE": 1}}))
    assert g.ids() == {n["name"] for n in nodes}
    bs, gs = boxes(g), groups(g)
    assert bs[f"{t}.Fulfil.a"].item.counts == {"COMPLETED": 3, "FAILURE": 1}
    assert bs[f"{t}.Fulfil.a"].y == bs[f"{t}.Fulfil.b"].y
    assert gs[f"{t}.Order"].y + gs[f"{t}.Order"].h < gs[f"{t}.Fulfil"].y
    assert gs[f"{t}.Fulfil.both"].label == "both \u00b7 parallel (JOIN_ALL)"
    assert all(b.item.status is None for b in g.boxes)


def test_a_cycle_or_a_dangling_link_does_not_hang_or_drop_a_node() -> None:
    snap = order_flow()
    snap["tasks"]["after"]["next_dags"] = ["std", "gone"]  # back to its predecessor, and to nothing
    g = layout(from_snapshot(snap))
    assert sorted(g.ids()) == sorted(snap["tasks"])


def test_an_empty_structure_is_an_empty_graph() -> None:
    g = layout(from_snapshot({"id": "x", "root_dag": None, "tasks": {}}))
    assert g.boxes == () and g.groups == () and g.edges == ()


def test_labels_are_the_last_part_of_the_name_cut_to_fit() -> None:
    assert short_label("order_flow.Fulfil.charge_executor_task") == "charge_executor_task"
    assert short_label("a." + "x" * 40) == "x" * 23 + "\u2026"


def test_a_counts_line_of_five_statuses_fits_its_box() -> None:
    counts = {"COMPLETED": 91_234, "FAILURE": 1_200, "EXECUTING": 15, "NOT_STARTED": 3, "STOPPED": 3}
    g = layout(from_template([{"name": "t.a", "kind": "executor", "parent": None, "next": [], "children": []}],
                             {"t.a": counts}))  # fmt: skip
    [box] = g.boxes
    # The largest first, then "+N more" for the rest, in the characters the box has for it.
    assert box.facts[0] == ("COMPLETED", "91k completed")
    assert box.more == f"+{len(counts) - len(box.facts)} more" and box.more
    assert facts_chars(box.facts, box.more) <= FACTS_CHARS
    # That budget is the box's width at the template's 11.5 px text (10 px in from each edge).
    assert FACTS_CHARS * 11.5 * CHAR_EM <= box.w - 2 * 10


def test_a_counts_line_shows_every_status_that_fits_and_never_more_than_fit() -> None:
    assert counts_line({"FAILURE": 1, "NOT_STARTED": 1}) == (
        (("FAILURE", "1 failure"), ("NOT_STARTED", "1 not started")), ""
    )  # (equal counts: by status)
    assert counts_line({}) == ((), "")
    statuses = ["COMPLETED", "EXECUTING", "FAILURE", "NOT_STARTED", "PENDING", "SKIPPED", "STOPPED"]
    for k in range(1, len(statuses) + 1):
        for n in (1, 999, 99_999, 999_999, 12_345_678):
            counts = {s: n + i for i, s in enumerate(statuses[:k])}
            facts, more = counts_line(counts)
            assert facts_chars(facts, more) <= FACTS_CHARS, (k, n, facts, more)
            assert len(facts) + (int(more.split()[0]) if more else 0) == k  # every status is told of
            assert [s for s, _ in facts] == sorted(counts, key=lambda s: -counts[s])[: len(facts)]


def test_counts_are_written_in_four_characters() -> None:
    assert [compact(n) for n in (0, 999, 1000, 1234, 12_345, 999_499, 999_500, 1_234_567)] == [
        "0", "999", "1k", "1.2k", "12k", "999k", "1M", "1.2M"
    ]  # fmt: skip
