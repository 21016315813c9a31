"""The console's pure reads (``model.console``): timer keys whose node id or purpose holds a
colon, overdue timers at a given time, and merging parts of several holders as one holder of
everything would answer (order, paging, totals, a listener listed twice)."""

from __future__ import annotations

from daggerflow.model.console import (
    ListenerItem,
    ListenerPart,
    OverviewPart,
    StatusCount,
    Throughput,
    TopicCount,
    merge_listener_parts,
    merge_overviews,
    timer_node,
    timer_part,
)
from daggerflow.model.instance import Instance, Node


def inst(iid: str, timers: dict[str, float]) -> Instance:
    nodes = {iid: Node(id=iid, name="t", kind="root"), "n1": Node(id="n1", name="t.P.A", kind="trigger")}
    return Instance(id=iid, template_name="t", template_version="v", nodes=nodes, timers=timers)


def item(iid: str, since: float, topic: str = "a") -> ListenerItem:
    return ListenerItem(instance=iid, template_name="t", node="n", task_name="t.P.L", topic=topic, key="k",
                        value=iid, since=since)  # fmt: skip


def test_timer_keys_with_colons() -> None:
    i = inst("x:1", {"x:1:max_run": 5.0, "n1:retry:job-2": 7.0, "gone:due": 1.0})
    assert timer_node(i, "x:1:max_run") == ("x:1", "max_run")
    assert timer_node(i, "n1:retry:job-2") == ("n1", "retry:job-2")
    assert timer_node(i, "gone:due") is None


def test_overdue_timers_at_a_time() -> None:
    i = inst("a", {"n1:due": 10.0, "a:max_run": 30.0})
    part = timer_part([i], now=20.0, overdue=True, first=10)
    assert [(t.purpose, t.overdue_by) for t in part.items] == [("due", 10.0)] and part.total == 1
    every = timer_part([i], now=20.0, overdue=False, first=1)
    assert [t.due for t in every.items] == [10.0] and every.total == 2


def test_merged_listener_pages() -> None:
    one = ListenerPart(items=[item("a", 1.0), item("c", 3.0)], total=2, topics=[TopicCount("a", 2)])
    two = ListenerPart(items=[item("b", 2.0, "b"), item("c", 3.0)], total=2, topics=[TopicCount("b", 1), TopicCount("a", 1)])
    merged = merge_listener_parts([one, two], offset=1, limit=5)
    assert [i.instance for i in merged.items] == ["b", "c"]  # c, listed by both, once
    assert merged.total == 4 and merged.topics == [TopicCount("a", 3), TopicCount("b", 1)]


def test_merged_overviews_add_up() -> None:
    def part(n: int, since: float) -> OverviewPart:
        return OverviewPart(at=0.0, counts=[StatusCount("t", "COMPLETED", n)], failed_last_hour=n, listeners_open=1,
                            oldest_listeners=[item(f"i{n}", since)], timers_overdue=0, oldest_overdue=[],
                            throughput=Throughput(created=n, transitions=2 * n), workers=1)  # fmt: skip

    merged = merge_overviews([part(1, 5.0), part(2, 4.0)], at=9.0)
    assert merged.counts == [StatusCount("t", "COMPLETED", 3)] and merged.failed_last_hour == 3
    assert [i.instance for i in merged.oldest_listeners] == ["i2", "i1"] and merged.listeners_open == 2
    assert merged.throughput == Throughput(created=3, transitions=6) and merged.workers == 2 and merged.at == 9.0
