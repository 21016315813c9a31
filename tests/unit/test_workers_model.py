"""The Workers view's pure parts: each partition's state from the owners topic and the
workers' own answers, the workers' order, and partition lists shown as ranges."""

from __future__ import annotations

from daggerflow.console.views.workers import behind, ranges
from daggerflow.model.workers import OwnerEntry, WorkerPart, ordered_workers, partition_rows


def worker(name: str, partitions: list[int]) -> WorkerPart:
    return WorkerPart(worker=name, url=f"http://{name}", runtime="kafka", version="1", started=1.0,
                      partitions=partitions, queued=0, jobs_running=0, timers=0, transitions=0, lag={})  # fmt: skip


def owner(p: int, name: str | None) -> OwnerEntry:
    return OwnerEntry(partition=p, worker=name, url=None if name is None else f"http://{name}",
                      since=None if name is None else 5.0)  # fmt: skip


def test_a_partition_is_active_moving_without_an_answer_or_unowned() -> None:
    owners = [owner(3, None), owner(0, "a"), owner(1, "a"), owner(2, "gone")]
    rows = partition_rows(owners, [worker("a", [0])])
    assert [(r.partition, r.worker, r.state) for r in rows] == [
        (0, "a", "active"),  # its owner answered and lists it
        (1, "a", "moving"),  # its owner answered but does not process it now
        (2, "gone", "no_answer"),  # its owner did not answer
        (3, None, "unowned"),
    ]
    assert rows[0].url == "http://a" and rows[0].since == 5.0


def test_the_worker_asked_comes_first_then_the_others_by_id_once_each() -> None:
    found = ordered_workers([worker("c", []), worker("b", []), worker("m", [1]), worker("b", [2])], this="m")
    assert [w.worker for w in found] == ["m", "b", "c"]
    assert found[1].partitions == [2]  # (the last answer of a worker counts)


def test_partitions_shown_as_ranges() -> None:
    assert ranges([]) == "none"
    assert ranges([4]) == "4"
    assert ranges([8, 0, 1, 2, 5, 7]) == "0\u20132, 5, 7\u20138"


def test_only_topics_with_messages_left_are_shown_behind() -> None:
    assert behind({"b": 3, "a": 0, "c": 1}) == [("b", 3), ("c", 1)]
    assert behind({}) == []
