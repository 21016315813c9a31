"""Pure tests of the history (``model/history.py``) and of the status changes the machine
reports for it (``Transition.statuses``)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from daggerflow.machine import Deliver, JobFailed, PatchParameters, Retry, Skip, Stop, Submit, TimerFired
from daggerflow.model import history
from daggerflow.model.history import DROPPED, FLUSH_ENTRIES, Entry, Row, as_entry, fold, read, summary
from daggerflow.model.instance import Instance, copy_instance

from .machine_helpers import Run, ex, listener, proc, spec

T = 1_000_000.0


def entry(seq: int, now: float, event: Any, inst: Instance, changes: list[tuple[str, str, str]]) -> Entry:
    return as_entry(history.entry(seq, now, event, inst, changes))


def chain() -> Run:
    return Run(spec(proc("P", ex("a"), ex("b"))))


def test_the_machine_reports_every_status_change_in_order() -> None:
    r = chain()
    tr = r.create()
    root, p, a = r.inst.id, r.node("P").id, r.node("a").id
    assert tr.statuses == [
        (root, "NOT_STARTED", "SUBMITTED"), (root, "SUBMITTED", "EXECUTING"),
        (p, "NOT_STARTED", "EXECUTING"), (a, "NOT_STARTED", "EXECUTING"),
    ]  # fmt: skip
    tr = r.done("a")
    b = r.node("b").id
    assert tr.statuses == [(a, "EXECUTING", "COMPLETED"), (b, "NOT_STARTED", "EXECUTING")]
    tr = r.fail("b", "ValueError: no\ntraceback...")
    assert [s[2] for s in tr.statuses] == ["FAILURE", "FAILURE", "FAILURE"]
    tr = r.send(Retry(actor="ops"))
    assert (b, "FAILURE", "NOT_STARTED") in tr.statuses and tr.statuses[-1] == (b, "NOT_STARTED", "EXECUTING")
    assert (a, "COMPLETED", "NOT_STARTED") not in tr.statuses  # a completed task is not run again


def test_entries_say_what_each_event_was() -> None:
    r = chain()
    tr = r.create()
    e = entry(0, T, _create(r), r.inst, tr.statuses)
    assert e.event == "create" and e.node is None and len(e.changes) == 4
    a = r.node("a")
    tr = r.fail("a", "RuntimeError: " + "x" * 500 + "\nline 2")
    failed = entry(1, T, JobFailed(a.id, a.job_seq, "execute", "RuntimeError: " + "x" * 500), r.inst, tr.statuses)
    assert failed.event == "failed" and failed.job == "execute" and failed.attempt == 1
    assert failed.error is not None and len(failed.error) == history.ERROR_CHARS and "\n" not in failed.error
    retry = entry(2, T, Retry({"fixed": True, "a": 1}, actor="ops"), r.inst, [])
    assert retry.actor == "ops" and retry.detail == "a,fixed"
    patch = entry(3, T, PatchParameters({"z": 1}, actor="cli"), r.inst, [])
    assert patch.event == "patch" and patch.detail == "z" and patch.actor == "cli"
    assert entry(4, T, Skip(a.id, actor="x"), r.inst, []).node == a.id
    assert entry(5, T, Stop(actor="api"), r.inst, []).actor == "api"
    assert entry(6, T, Submit(), r.inst, []).actor is None
    timer = entry(7, T, TimerFired(f"{a.id}:retry:execute"), r.inst, [])
    assert timer.node == a.id and timer.detail == "retry:execute"
    deliver = entry(8, T, Deliver(a.id, "{}", "orders", 41, 3), r.inst, [])
    assert (deliver.topic, deliver.offset, deliver.partition) == ("orders", 41, 3)
    embedded = entry(9, T, Deliver(a.id, "{}", "orders", 41), r.inst, [])
    assert embedded.partition is None and embedded.offset == 41


def _create(r: Run) -> Any:
    from daggerflow.machine import Create

    return Create(r.inst, True)


def test_no_op_status_changes_are_left_out() -> None:
    e = as_entry((0, T, "done", "n", [("n", "EXECUTING", "EXECUTING"), ("n", "EXECUTING", "COMPLETED")]))
    assert e.changes == [("n", "EXECUTING", "COMPLETED")]


def test_an_error_summary_comes_from_the_node_a_change_failed() -> None:
    r = Run(spec(proc("P", listener("l", timeout=5.0))))
    r.create()
    tr = r.fire("l", "timeout", at=T + 10)
    e = entry(1, T, TimerFired(f"{r.node('l').id}:timeout"), r.inst, tr.statuses)
    assert e.error == "timed out after 5 s"
    assert summary(None) is None and summary("") is None and summary("a\nb") == "a"


def _entries(start: int, n: int, size: int = 0) -> list[Row]:
    return [(seq, T + seq, "done", "n", [("n", "EXECUTING", "COMPLETED")], None, None, None, None, None, None, None,
             "x" * size or None) for seq in range(start, start + n)]  # fmt: skip


def _blank() -> Instance:
    return chain().inst


def _record(inst: Instance, rows: dict[int, bytes], entries: list[Row], limit: int) -> None:
    """What a batch and a store do with a batch's entries."""
    flush = fold(inst, entries, limit)
    if flush is not None:
        for first in flush.delete:
            del rows[first]
        rows[flush.put[0]] = flush.put[1]


def test_the_tail_rides_in_the_record_until_it_is_full() -> None:
    inst, rows = _blank(), {}
    _record(inst, rows, _entries(0, 5), 100)
    assert rows == {} and inst.history_seq == 5 and inst.history_rows == ()
    again = copy_instance(inst)  # the tail survives the record's encoding
    assert [e.seq for e in read(again, [], 100).items] == [0, 1, 2, 3, 4]
    _record(inst, rows, _entries(5, FLUSH_ENTRIES - 5), 100)
    assert list(rows) == [0] and inst.history_tail == b"" and inst.history_flushed == FLUSH_ENTRIES
    assert msgspec.msgpack.decode(rows[0], type=list[Entry]) == [as_entry(e) for e in _entries(0, FLUSH_ENTRIES)]
    _record(inst, rows, _entries(FLUSH_ENTRIES, 1, size=history.FLUSH_BYTES), 100)  # a big entry flushes
    assert list(rows) == [0, FLUSH_ENTRIES]


def test_the_oldest_rows_go_and_a_marker_counts_what_was_dropped() -> None:
    inst, rows = _blank(), {}
    seq = 0
    for n in (7, 30, 3, 40, 1, 50, 9, 33):
        _record(inst, rows, _entries(seq, n), 60)
        seq += n
        assert set(rows) == set(inst.history_rows)
        page = read(inst, rows.items(), 60, size=1000)
        shown = [e.seq for e in page.items if e.event != DROPPED]
        assert shown == list(range(max(0, seq - 60), seq))
        if seq > 60:
            marker = page.items[0]
            assert marker.event == DROPPED and marker.dropped == seq - 60 and marker.seq == seq - 61
        # Rows whose entries are all beyond the limit are deleted; at most one row straddles it.
        assert all(first >= seq - 60 - 2 * FLUSH_ENTRIES for first in rows)


def test_pages_follow_next() -> None:
    inst, rows = _blank(), {}
    _record(inst, rows, _entries(0, 150), 100)
    seen: list[int] = []
    after = -1
    while True:
        page = read(inst, rows.items(), 100, after=after, size=7)
        seen.extend(e.seq for e in page.items)
        if page.next is None:
            break
        after = page.next
    assert seen == [49, *range(50, 150)]  # the marker first (seq 49: 50 dropped)
    assert read(inst, rows.items(), 100, after=149).items == []


def test_rows_a_newer_commit_wrote_are_ignored() -> None:
    inst, rows = _blank(), {}
    _record(inst, rows, _entries(0, 40), 100)
    older = copy_instance(inst)
    _record(inst, rows, _entries(40, 40), 100)
    assert [e.seq for e in read(older, rows.items(), 100, size=1000).items] == list(range(40))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=30), st.integers(1, 120))
def test_any_batches_show_exactly_the_newest_limit(batches: list[int], limit: int) -> None:
    inst, rows = _blank(), {}
    seq = 0
    for n in batches:
        _record(inst, rows, _entries(seq, n), limit)
        seq += n
        inst = copy_instance(inst)
    page = read(inst, rows.items(), limit, size=1000)
    shown = [e.seq for e in page.items if e.event != DROPPED]
    assert shown == list(range(max(0, seq - limit), seq))
    assert bool(page.items and page.items[0].event == DROPPED) == (seq > limit)
    assert len(rows) <= (limit + FLUSH_ENTRIES - 1) // FLUSH_ENTRIES + 1


def test_a_jobs_entry_keeps_what_it_sent_cut_to_size() -> None:
    from daggerflow.model.history import SENT_CHARS, SENT_MESSAGES, Entry, as_entry, with_sent
    from daggerflow.model.records import Outgoing

    row = (3, 10.0, "done", "n1", [("n1", "EXECUTING", "COMPLETED")], "execute", 1)
    box = [Outgoing("orders", "o1", '{"order_id": "o1"}'), Outgoing("big", None, b"x" * (SENT_CHARS + 50))]
    e = as_entry(with_sent(row, box))
    assert isinstance(e, Entry) and e.event == "done" and e.attempt == 1 and e.dropped == 0
    assert e.sent == [("orders", "o1", 18, '{"order_id": "o1"}'), ("big", None, SENT_CHARS + 50, "x" * SENT_CHARS)]
    many = [Outgoing("t", str(i), "v") for i in range(SENT_MESSAGES + 3)]
    assert len(as_entry(with_sent(row, many)).sent) == SENT_MESSAGES
    # An entry without messages is unchanged, and old entries (without the field) still decode.
    assert as_entry(row).sent == []
