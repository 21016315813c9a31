"""Listener messages read directly by a partition task (Kafka runtime, co-partitioned topic):
the processor side. Pairs that match nothing here go the routed way (an index entry may still
be on its way in the correlation topic), without recording anything; pairs that match are
applied, and their dedupe id recorded, in the batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daggerflow import DAGBuilderHelper, Dagger, ManualClock
from daggerflow.model.instance import Correlation
from daggerflow.pipeline.items import ForwardEvent, ForwardRouted, Incoming, IndexChange, Item, Settings
from daggerflow.pipeline.processor import Processor
from daggerflow.store.base import Message
from daggerflow.store.sqlite import SQLiteStore

from ..behaviour.support_29_56 import JsonKeyListener


def _message(offset: int) -> Message:
    return Message("boxes", offset, "k", '{"box": "b1"}', {}, 0.0)


async def test_unmatched_pairs_are_routed_and_nothing_is_recorded(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "p.db"))
    try:
        processor = Processor(store, ManualClock(), Settings(unmatched_ttl=lambda topic: 600.0))
        routed = object()  # what the runtime would send: opaque to the processor
        route = ForwardRouted(3, routed)
        batch, _ = processor._prepare(
            [Incoming("", _message(7), [("box", "b1")], "m1", unmatched_route=route)]
        )
        assert batch.forwards == [ForwardRouted(3, routed)]
        assert batch.seen == [] and batch.buffer_put == []  # the routed copy does that
    finally:
        store.close()


async def test_matched_pairs_are_applied_with_their_dedupe_id(make_engine: Callable[..., Dagger]) -> None:
    engine = make_engine()
    helper = DAGBuilderHelper(engine)
    wait = helper.generic_listener_task_builder(topic="boxes", task_type=JsonKeyListener, process_name="P")
    process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks([wait]))
    engine.add_template("Box", helper.generic_template(template_name="Box", root_process=process))
    async with engine:
        await engine.template_dags["Box"].create_instance("i1", submit_task=True, order_id="b1")
        processor = engine.runtime.processor
        assert processor is not None
        message = Message("boxes", 7, "k", '{"order_id": "b1"}', {}, 0.0)
        route = ForwardRouted(3, object())
        batch, _ = processor._prepare(
            [Incoming("", message, [("order_id", "b1")], "m1", unmatched_route=route)]
        )
        assert batch.forwards == []  # matched here: nothing routed
        assert batch.seen == [("boxes", "m1")]
        assert "i1" in batch.instances  # the delivery was applied in this batch


async def test_a_routed_message_that_matches_nothing_leaves_no_dedupe_id(tmp_path: Path) -> None:
    """The routed copy (no ``unmatched_route``): unmatched and not buffered, its id is not
    remembered, so a retry after a listener starts waiting is delivered; buffered (a TTL),
    it is remembered with the buffered message."""
    store = SQLiteStore(str(tmp_path / "p.db"))
    try:
        dropped = Processor(store, ManualClock(), Settings())
        batch, _ = dropped._prepare([Incoming("", _message(7), [("box", "b1")], "m1")])
        assert batch.seen == [] and batch.buffer_put == []

        kept = Processor(store, ManualClock(), Settings(unmatched_ttl=lambda topic: 600.0))
        batch, _ = kept._prepare([Incoming("", _message(8), [("box", "b1")], "m2")])
        assert batch.seen == [("boxes", "m2")] and len(batch.buffer_put) == 1
    finally:
        store.close()


async def test_an_index_owner_forwards_to_every_normal_waiter_and_one_match_only_one(tmp_path: Path) -> None:
    """The index owner holds none of the instances (Kafka: another partition owns them): the
    flag that came with each index entry decides, per listener, who gets the message."""
    store = SQLiteStore(str(tmp_path / "p.db"))
    try:
        settings = Settings(owns_instance=lambda iid: False, owns_correlation=lambda at: True)
        processor = Processor(store, ManualClock(), settings)
        at = Correlation("boxes", "box", "b1")
        changes: list[Item] = [
            IndexChange(at, iid, "wait", True, only_one=iid.startswith("f"))
            for iid in ("n1", "f1", "n2", "f2")
        ]
        processor.process(changes)
        batch, _ = processor._prepare([Incoming("", _message(7), [("box", "b1")], "m1")])
        delivered = sorted(f.instance for f in batch.forwards if isinstance(f, ForwardEvent))
        assert delivered in (["f1", "n1", "n2"], ["f2", "n1", "n2"])
        assert batch.seen == [("boxes", "m1")]
    finally:
        store.close()
