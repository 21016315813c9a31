"""Bulk jobs' pure parts and their state: a share's progress and the job's (model/bulk.py),
the job as an events-topic record (kafka/codec.py), and shares and their ids in both stores
and through the changelog (a restore gives the same share and the same ids left)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daggerflow.kafka import codec
from daggerflow.model.bulk import ERROR_SAMPLE, BulkShare, BulkSpec, decode_share, encode_share, progress
from daggerflow.store.base import Store, WriteBatch
from daggerflow.store.changelog import Restorer, batch_records, records_batch
from daggerflow.store.factory import open_store

try:
    import rocksdict
except ImportError:  # pragma: no cover
    rocksdict = None

KINDS = ["sqlite", pytest.param("rocksdb", marks=pytest.mark.skipif(rocksdict is None, reason="rocksdict"))]

SPEC = BulkSpec(id="00112233aabbccdd", action="retry", filter={"status": "FAILURE"}, created=10.0, batch=3)


def share(partition: int = 0, matched: int = 5, **kw: object) -> BulkShare:
    return BulkShare(spec=SPEC, partition=partition, matched=matched, **kw)  # type: ignore[arg-type]


def test_a_share_advances_and_finishes_when_nothing_is_left() -> None:
    s = share(matched=5)
    assert s.remaining == 5
    s = s.advanced(2, 1, ["x: gone"], now=20.0)
    assert (s.done, s.failed, s.remaining, s.errors, s.finished) == (2, 1, 2, ("x: gone",), None)
    s = s.advanced(2, 0, [], now=30.0)
    assert s.remaining == 0 and s.finished == 30.0
    many = share(matched=100).advanced(0, 100, [f"e{i}" for i in range(100)], now=1.0)
    assert len(many.errors) == ERROR_SAMPLE and many.failed == 100
    assert decode_share(encode_share(many)) == many


def test_progress_adds_up_shares_and_is_done_only_when_every_partition_finished() -> None:
    assert progress(SPEC, [], 3).state == "starting"
    a = share(0, 4).advanced(4, 0, [], 50.0)
    b = share(1, 3).advanced(1, 1, ["b1: why"], 40.0)
    p = progress(SPEC, [a, b], 3)
    assert (p.state, p.matched, p.done, p.failed, p.remaining, p.errors) == ("running", 7, 5, 1, 1, ["b1: why"])
    assert p.finished is None and [s.partition for s in p.shares] == [0, 1]
    c = share(2, 0, finished=11.0)
    b2 = b.advanced(1, 0, [], 60.0)
    # A partition reported twice (by its old and its new owner): the most advanced counts.
    done = progress(SPEC, [a, b, c, b2], 3)
    assert (done.state, done.done, done.remaining, done.finished) == ("done", 6, 0, 60.0)


def test_a_bulk_job_travels_in_the_events_topic() -> None:
    assert codec.decode_event(codec.encode(SPEC)) == SPEC


@pytest.fixture(params=KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    def open_(name: str) -> Store:
        url = f"sqlite:///{tmp_path / name}.db" if request.param == "sqlite" else f"rocksdb:///{tmp_path / name}"
        return open_store(url, datadir=str(tmp_path), application_name="t")

    a, b = open_("a"), open_("b")
    yield a, b
    a.close()
    b.close()


def test_shares_and_their_ids_in_the_store_and_through_the_changelog(stores: tuple[Store, Store]) -> None:
    store, replica = stores
    log: list[tuple[bytes, bytes | None]] = []

    def commit(batch: WriteBatch) -> None:
        store.commit(batch, 0.0)
        log.extend(batch_records(batch, 0.0))

    first = share(matched=4)
    commit(WriteBatch(bulk_shares={SPEC.id: first},
                      bulk_items_put=[(SPEC.id, n, f"i{n}") for n in range(4)]))  # fmt: skip
    other = BulkShare(spec=BulkSpec(id="ffff000011112222", action="stop", filter={}, created=5.0),
                      partition=0, matched=0, finished=5.0)  # fmt: skip
    commit(WriteBatch(bulk_shares={other.spec.id: other}))
    assert store.bulk_items(SPEC.id, 2) == [(0, "i0"), (1, "i1")]
    assert store.bulk_active() == [first] and store.bulk_share(other.spec.id) == other
    step = first.advanced(1, 1, ["i1: gone"], 9.0)
    commit(WriteBatch(bulk_shares={SPEC.id: step}, bulk_items_del=[(SPEC.id, 0), (SPEC.id, 1)]))
    assert store.bulk_items(SPEC.id, 10) == [(2, "i2"), (3, "i3")]
    assert store.bulk_share(SPEC.id) == step and store.bulk_share("nope") is None
    assert {key[:1] for key, _ in log} == {b"u", b"U"}
    Restorer(replica, 0).apply((n, k, v) for n, (k, v) in enumerate(log))
    assert replica.bulk_items(SPEC.id, 10) == [(2, "i2"), (3, "i3")]
    assert replica.bulk_share(SPEC.id) == step and replica.bulk_active() == [step]
    assert records_batch(log).bulk_items_del == [(SPEC.id, 0), (SPEC.id, 1)]
