"""The changelog of a store (store/changelog.py): committed WriteBatches -> per-key records ->
restore into a fresh store gives the same state, for SQLite and RocksDB; deletes; idempotent
replay; compaction; checkpoints; the SQLite schema migration that adds them. Real stores in a
temp dir; the engine workload runs on a real embedded engine (ManualClock)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from daggerflow import Dagger, ManualClock
from daggerflow.model.instance import Correlation, Instance, Node
from daggerflow.store.base import PendingJob, Store, WriteBatch
from daggerflow.store.changelog import (
    FORMAT_VERSION,
    ChangelogError,
    Restorer,
    batch_records,
    index_key,
    records_batch,
)
from daggerflow.store.factory import open_store
from daggerflow.store.sqlite import SCHEMA_VERSION, SQLiteStore

from ..changelog_support import Capture, OrderWorkload, Probes, dump, logical, workload_engine_options

try:
    import rocksdict
except ImportError:  # pragma: no cover - the rocksdb extra is part of the dev install
    rocksdict = None

needs_rocksdb = pytest.mark.skipif(rocksdict is None, reason="needs the rocksdb extra (rocksdict)")
KINDS = ["sqlite", pytest.param("rocksdb", marks=needs_rocksdb)]

Opener = Callable[..., Store]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, tmp_path: Path) -> Iterator[Opener]:
    opened: list[Store] = []

    def open_(name: str, kind_: str | None = None) -> Store:
        k = kind_ or kind
        url = f"sqlite:///{tmp_path / name}.db" if k == "sqlite" else f"rocksdb:///{tmp_path / name}"
        store = open_store(url, datadir=str(tmp_path), application_name="t")
        opened.append(store)
        return store

    yield open_
    for store in opened:
        try:
            store.close()
        except Exception:
            pass


def inst(iid: str, template: str = "tpl", status: str = "NOT_STARTED", created: float = 1.0) -> Instance:
    root = Node(id=iid, name=template, kind="workflow", status=status, time_created=created)
    return Instance(
        id=iid, template_name=template, template_version="1", nodes={iid: root}, lastupdated=created
    )


def with_status(i: Instance, status: str, at: float) -> Instance:
    copy = msgspec.convert(msgspec.to_builtins(i), Instance)
    copy.root.status = status
    copy.lastupdated = at
    return copy


# Awkward strings: separators and escapes inside fields must not make keys collide.
TOPIC = "orders\x00\x01x"
AT1 = Correlation(TOPIC, "order_id", "O-1")
AT2 = Correlation(TOPIC, "order_id", "O-2\x00")
AT3 = Correlation("ready", "id", "7")


def scripted_batches() -> list[tuple[WriteBatch, float]]:
    """Batches that touch every table, with updates, deletes and del+put of one key."""
    w1, w2, w3 = inst("w1", "A", created=1.0), inst("w2", "B", created=2.0), inst("w\x003", "A", created=3.0)
    b1 = WriteBatch(instances={"w1": w1, "w2": w2, "w\x003": w3})
    b1.index_put += [(AT1, "w1", "w1.l", False), (AT2, "w2", "w2.l", True), (AT3, "w\x003", "n", False)]
    b1.set_timer("w1", "w1.l:timeout", 100.0)
    b1.set_timer("w2", "w2.l:timeout", 200.0)
    b1.set_timer("w\x003", "t", 300.0)
    b1.jobs_put += [
        PendingJob("w1", "w1.c", "execute", 1, {"a": [1, 2]}),
        PendingJob("w2", "w2.c", "execute", 1, None),
    ]
    b1.positions["listener:orders"] = 5
    b1.seen.append((TOPIC, "m-1"))
    b1.buffer_put += [(AT3, '{"x": 1}', 900.0), (AT1, b"raw", 950.0), (AT2, "p", 990.0)]

    b2 = WriteBatch(instances={"w1": with_status(w1, "EXECUTING", 10.0)})
    b2.index_del.append((AT1, "w1", "w1.l"))
    b2.index_put.append((AT2, "w1", "w1.l", False))  # the listener's value moved
    b2.cancel_timer("w1", "w1.l:timeout")
    b2.set_timer("w1", "w1.l:retry", 110.0)
    b2.jobs_del.append(("w1", "w1.c", 1))
    b2.jobs_put.append(PendingJob("w1", "w1.l", "on_message", 2, "payload"))
    b2.positions["listener:orders"] = 9
    b2.positions["agent:x"] = 1
    b2.seen.append(("ready", "m-2"))
    b2.buffer_del.append(1)

    # w2 ends and is deleted: the machine ends its entry and timer explicitly.
    b3 = WriteBatch(instances={"w2": None, "w1": with_status(w1, "COMPLETED", 20.0)})
    b3.index_del.append((AT2, "w2", "w2.l"))
    b3.cancel_timer("w2", "w2.l:timeout")
    b3.jobs_del.append(("w2", "w2.c", 1))
    b3.index_del.append((AT3, "w\x003", "n"))  # deleted and put again in one batch: present
    b3.index_put.append((AT3, "w\x003", "n", False))
    b3.buffer_put.append((AT3, "later", 1000.0))
    return [(b1, 11.0), (b2, 12.0), (b3, 13.0)]


def commit_all(
    store: Store, batches: list[tuple[WriteBatch, float]]
) -> list[tuple[int, bytes, bytes | None]]:
    """Commit each batch; return its changelog as one log with offsets."""
    log: list[tuple[int, bytes, bytes | None]] = []
    for batch, ts in batches:
        store.commit(batch, ts)
        for key, value in batch_records(batch, ts):
            log.append((len(log), key, value))
    return log


def compact(
    log: list[tuple[int, bytes, bytes | None]], drop_tombstones: bool = False
) -> list[tuple[int, bytes, bytes | None]]:
    """What Kafka's log cleaner leaves: the last record of each key, at its offset (and, once
    ``delete.retention.ms`` has passed, no tombstones)."""
    last = {key: (offset, key, value) for offset, key, value in log}
    kept = sorted(last.values(), key=lambda r: r[0])
    return [r for r in kept if not (drop_tombstones and r[2] is None)]


# Batch -> records -> restore --------------------------------------------------------------------


def test_restore_reproduces_the_store(opener: Opener) -> None:
    original = opener("original")
    log = commit_all(original, scripted_batches())
    assert any(v is None for _, _, v in log), "the script deletes rows"
    restored = opener("restored")
    restorer = Restorer(restored, partition=3, chunk=4)
    assert restorer.apply(log) == len(log)
    assert dump(restored) == dump(original)
    assert restored.changelog_checkpoint(3) == len(log) - 1
    assert restored.changelog_checkpoint(0) is None
    # Spot checks through the protocol: the update, the delete, the moved entry, the del+put.
    w1 = restored.get_instance("w1")
    assert w1 is not None and w1.root.status == "COMPLETED"
    assert restored.get_instance("w2") is None
    assert [i.id for i in restored.list_instances(status="COMPLETED", template="A", limit=9, offset=0)] == [
        "w1"
    ]
    assert restored.lookup(AT1) == [] and sorted(restored.lookup(AT2)) == [("w1", "w1.l", False)]
    assert restored.lookup(AT3) == [("w\x003", "n", False)]
    assert sorted(restored.all_timers()) == sorted([("w1", "w1.l:retry", 110.0), ("w\x003", "t", 300.0)])
    assert [(j.instance, j.job, j.payload) for j in restored.pending_jobs()] == [
        ("w1", "on_message", "payload")
    ]
    assert restored.position("listener:orders") == 9 and restored.position("agent:x") == 1
    assert restored.has_seen(TOPIC, "m-1") and restored.has_seen("ready", "m-2")
    assert [p for _, p in restored.buffered(AT3, 0.0)] == ["later"]  # id 1 was taken
    assert [p for _, p in restored.buffered(AT1, 0.0)] == [b"raw"]


def test_restore_across_store_kinds(opener: Opener, kind: str) -> None:
    """The records do not depend on the store that wrote them."""
    if rocksdict is None:
        pytest.skip("needs the rocksdb extra")
    other = "rocksdb" if kind == "sqlite" else "sqlite"
    original = opener("original")
    log = commit_all(original, scripted_batches())
    restored = opener("restored", other)
    Restorer(restored, 0).apply(log)
    probes = Probes.of(b for b, _ in scripted_batches())
    assert logical(restored, probes) == logical(original, probes)


def test_replay_is_idempotent(opener: Opener) -> None:
    original = opener("original")
    log = commit_all(original, scripted_batches())
    restored = opener("restored")
    Restorer(restored, 0).apply(log)
    expected = dump(original)
    again = Restorer(restored, 0)
    assert again.apply(log) == 0 and again.skipped == len(log)  # all at or before the checkpoint
    assert dump(restored) == expected
    # Applying every record again regardless of the checkpoint leaves the same state too,
    # also in other chunkings (a chunk folds its records per key).
    for chunk in (1, 2, 5, 1000):
        assert Restorer(restored, 0, chunk=chunk).apply(log, skip_applied=False) == len(log)
        assert dump(restored) == expected
    # And a replay of an older prefix followed by the rest converges.
    Restorer(restored, 0).apply(log[: len(log) // 2], skip_applied=False)
    Restorer(restored, 0).apply(log, skip_applied=False)
    assert dump(restored) == expected


def test_an_interrupted_restore_resumes_after_its_checkpoint(opener: Opener) -> None:
    original = opener("original")
    log = commit_all(original, scripted_batches())
    restored = opener("restored")
    half = len(log) // 2
    Restorer(restored, 1, chunk=3).apply(log[:half])
    assert restored.changelog_checkpoint(1) == half - 1
    resumed = Restorer(restored, 1, chunk=3)
    assert resumed.apply(log) == len(log) - half and resumed.skipped == half
    assert dump(restored) == dump(original)


def test_compacted_changelog_restores_the_same_state(opener: Opener) -> None:
    original = opener("original")
    log = commit_all(original, scripted_batches())
    compacted = compact(log)
    assert len(compacted) < len(log)
    restored = opener("restored")
    Restorer(restored, 0).apply(compacted)
    assert dump(restored) == dump(original)
    # Once tombstones are cleaned too, a fresh store still gets the same state.
    fresh = opener("fresh")
    Restorer(fresh, 0).apply(compact(log, drop_tombstones=True))
    assert dump(fresh) == dump(original)


def test_an_instance_tombstone_drops_what_is_left_of_it(opener: Opener) -> None:
    """If an instance is deleted without explicit deletes of its entry and timer (the
    stores drop them), a restore drops them too."""
    original = opener("original")
    first = WriteBatch(instances={"w": inst("w")})
    first.index_put.append((AT1, "w", "n", False))
    first.set_timer("w", "k", 5.0)
    log = commit_all(original, [(first, 1.0), (WriteBatch(instances={"w": None}), 2.0)])
    assert original.lookup(AT1) == [] and original.all_timers() == []
    restored = opener("restored")
    Restorer(restored, 0, chunk=1).apply(log)
    assert dump(restored) == dump(original)


# Records ----------------------------------------------------------------------------------------


def test_records_are_deterministic_and_keys_never_collide() -> None:
    batches = scripted_batches()
    # A committed batch: the ids of its new buffered messages were assigned.
    for batch, _ in batches:
        batch.buffer_ids = list(range(10 * len(batch.buffer_put), 11 * len(batch.buffer_put)))
    first = [batch_records(b, ts) for b, ts in batches]
    assert first == [batch_records(b, ts) for b, ts in batches]
    for records in first:
        keys = [k for k, _ in records]
        assert len(keys) == len(set(keys)), "one record per row and batch"
    # Fields that contain the separator or the escape byte do not shift into each other.
    tricky = [
        index_key(Correlation("a\x00\x01b", "c", "d"), "i", "n"),
        index_key(Correlation("a", "\x00\x01b\x00\x01c", "d"), "i", "n"),
        index_key(Correlation("a", "b", "c\x00\x01d"), "i", "n"),
        index_key(Correlation("a", "b", "c"), "d\x00\x01i", "n"),
    ]
    assert len(set(tricky)) == len(tricky)
    # Every table has its own tag, so one id in two tables gives two keys.
    b = WriteBatch(instances={"x": inst("x")}, positions={"x": 1})
    b.set_timer("x", "x", 1.0)
    b.seen.append(("x", "x"))
    tags = {k[:1] for k, _ in batch_records(b, 0.0)}
    assert tags == {b"i", b"T", b"p", b"n"}


def test_a_batch_key_deleted_then_put_is_one_put() -> None:
    b = WriteBatch()
    b.index_del.append((AT1, "w", "n"))
    b.index_put.append((AT1, "w", "n", True))
    b.jobs_del.append(("w", "n", 1))
    b.jobs_put.append(PendingJob("w", "n", "execute", 1, None))
    records = batch_records(b, 0.0)
    assert len(records) == 2 and all(v is not None for _, v in records)


def test_values_carry_the_format_version() -> None:
    b = WriteBatch(instances={"w": inst("w")}, positions={"c": 4})
    for _, value in batch_records(b, 0.0):
        assert value is not None and msgspec.msgpack.decode(value)[0] == FORMAT_VERSION


def test_unreadable_records_are_errors() -> None:
    newer = msgspec.msgpack.encode((FORMAT_VERSION + 1, 3))
    with pytest.raises(ChangelogError, match="newer than this daggerflow"):
        records_batch([(b"p" + b"c\x00\x01", newer)])
    with pytest.raises(ChangelogError, match="unknown changelog key tag"):
        records_batch([(b"Z123", None)])
    with pytest.raises(ChangelogError, match=r"not msgpack|format version"):
        records_batch([(b"p" + b"c\x00\x01", b"\xc1garbage")])
    with pytest.raises(ChangelogError, match="no tombstone"):
        records_batch([(b"p" + b"c\x00\x01", None)])


def test_records_need_a_committed_batch() -> None:
    b = WriteBatch()
    b.buffer_put.append((AT1, "x", 1.0))
    with pytest.raises(ValueError, match="buffer_ids"):
        batch_records(b, 0.0)


def test_offsets_must_increase(opener: Opener) -> None:
    with pytest.raises(ValueError, match="must increase"):
        Restorer(opener("s"), 0).apply(
            [(5, b"p" + b"c\x00\x01", msgspec.msgpack.encode((1, 1))), (5, b"p", None)]
        )


# Store support ----------------------------------------------------------------------------------


def test_commit_assigns_buffer_ids_and_keeps_given_ones(opener: Opener) -> None:
    store = opener("s")
    b = WriteBatch()
    b.buffer_put += [(AT1, "a", 99.0), (AT1, "b", 99.0)]
    store.commit(b, 0.0)
    assert len(b.buffer_ids) == 2 and b.buffer_ids[0] < b.buffer_ids[1]
    assert [i for i, _ in store.buffered(AT1, 0.0)] == b.buffer_ids
    given = WriteBatch(buffer_put=[(AT2, "c", 99.0)], buffer_ids=[50])
    store.commit(given, 0.0)
    assert given.buffer_ids == [50] and store.buffered(AT2, 0.0) == [(50, "c")]
    # An entry with a given id replaces the one that had it (also in another place).
    store.commit(WriteBatch(buffer_put=[(AT3, "d", 99.0)], buffer_ids=[50]), 0.0)
    assert store.buffered(AT2, 0.0) == [] and store.buffered(AT3, 0.0) == [(50, "d")]
    later = WriteBatch(buffer_put=[(AT1, "e", 99.0)])
    store.commit(later, 0.0)
    assert later.buffer_ids[0] > 50  # new ids never reuse a restored one


def test_checkpoint_survives_a_reopen_and_commits_with_the_batch(opener: Opener) -> None:
    store = opener("s")
    assert store.changelog_checkpoint(0) is None
    store.commit(WriteBatch(instances={"a": inst("a")}, changelog_offsets={0: 41, 7: 3}), 0.0)
    bad = WriteBatch(instances={"b": inst("b")}, changelog_offsets={0: 99})
    bad.jobs_put.append(PendingJob("b", "n", "execute", 1, object()))  # not encodable: the commit fails
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises for it
        store.commit(bad, 0.0)
    assert store.changelog_checkpoint(0) == 41 and store.get_instance("b") is None
    store.close()
    again = opener("s")
    assert again.changelog_checkpoint(0) == 41 and again.changelog_checkpoint(7) == 3


def test_advance_moves_the_checkpoint_forward_only(opener: Opener) -> None:
    store = opener("s")
    restorer = Restorer(store, 2)
    restorer.advance(10)  # e.g. a log that ends with transaction markers
    assert store.changelog_checkpoint(2) == 10
    restorer.advance(4)
    assert store.changelog_checkpoint(2) == 10
    value = msgspec.msgpack.encode((FORMAT_VERSION, 7))
    assert restorer.apply([(9, b"p" + b"c\x00\x01", value), (11, b"p" + b"c\x00\x01", value)]) == 1
    assert store.changelog_checkpoint(2) == 11 and store.position("c") == 7


def test_sqlite_schema_1_is_migrated(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    store = SQLiteStore(path)
    store.commit(WriteBatch(instances={"a": inst("a")}, positions={"c": 3}), 0.0)
    store.close()
    with sqlite3.connect(path) as db:  # make it what version 1 wrote
        db.execute("DROP TABLE changelog")
        db.execute("DROP TABLE bulk_jobs")
        db.execute("DROP TABLE bulk_items")
        db.execute("ALTER TABLE correlation DROP COLUMN only_one")
        db.execute("PRAGMA user_version = 1")
        db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    migrated = SQLiteStore(path)
    try:
        assert migrated.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert migrated.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "4"
        assert migrated.bulk_active() == []
        assert migrated.get_instance("a") is not None and migrated.position("c") == 3
        assert migrated.changelog_checkpoint(0) is None
        migrated.commit(WriteBatch(changelog_offsets={0: 12}), 0.0)
        assert migrated.changelog_checkpoint(0) == 12
    finally:
        migrated.close()


def test_sqlite_schema_2_index_entries_read_back_as_not_match_only_one(tmp_path: Path) -> None:
    path = str(tmp_path / "v2.db")
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:  # what version 2 wrote: an entry without the flag
        db.execute("ALTER TABLE correlation DROP COLUMN only_one")
        db.execute("INSERT INTO correlation VALUES (?,?,?,?,?)", (AT1.topic, AT1.key, AT1.value, "w", "n"))
        db.execute("PRAGMA user_version = 2")
        db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    migrated = SQLiteStore(path)
    try:
        assert migrated.lookup(AT1) == [("w", "n", False)]
        migrated.commit(WriteBatch(index_put=[(AT2, "w", "m", True)]), 0.0)
        assert migrated.lookup(AT2) == [("w", "m", True)]
    finally:
        migrated.close()


def test_an_index_record_without_the_flag_reads_as_not_match_only_one() -> None:
    """Index records written before the match_only_one flag existed hold only the format
    version; a normal entry is still written that way, a match_only_one one appends ``true``."""
    key = index_key(AT1, "w", "n")
    old = msgspec.msgpack.encode([1])
    assert records_batch([(key, old)]).index_put == [(AT1, "w", "n", False)]
    flagged = WriteBatch(index_put=[(AT1, "w", "n", True)])
    assert records_batch(batch_records(flagged, 0.0)).index_put == [(AT1, "w", "n", True)]
    normal = WriteBatch(index_put=[(AT1, "w", "n", False)])
    assert batch_records(normal, 0.0) == [(key, old)]


# A real workload --------------------------------------------------------------------------------


async def test_an_engine_workload_restores_exactly(kind: str, tmp_path: Path) -> None:
    """Every commit of a real engine (instances created, waiting, blocked, deleted; an
    unmatched message buffered; a duplicate dropped) -> records -> a fresh store of each
    kind: the same state; the compacted log too."""
    url = f"sqlite:///{tmp_path}/engine.db" if kind == "sqlite" else f"rocksdb:///{tmp_path}/engine"
    engine = Dagger(store=url, web_port=None, clock=ManualClock(), **workload_engine_options())
    workload = OrderWorkload(engine, 60)
    async with engine:
        store = engine.runtime.store
        capture = Capture(store)
        await workload.run(capture)
        expected_raw, expected = dump(store), logical(store, capture.probes)
        log = capture.records()
        assert expected["timers"] and expected["jobs"] and any(expected["index"].values())
        assert any(expected["buffered"].values()) and all(expected["seen"].values())
        assert any(v is None for _, _, v in log), "deleted instances leave tombstones"
        targets: list[tuple[str, list[tuple[int, bytes, bytes | None]]]] = [
            ("full", log),
            ("compacted", compact(log)),
        ]
        for name, records in targets:
            for target in ["sqlite"] + (["rocksdb"] if rocksdict is not None else []):
                turl = (
                    f"sqlite:///{tmp_path}/{name}.db"
                    if target == "sqlite"
                    else f"rocksdb:///{tmp_path}/{name}"
                )
                restored = open_store(turl, datadir=str(tmp_path), application_name="t")
                try:
                    Restorer(restored, 0, chunk=97).apply(records)
                    assert logical(restored, capture.probes) == expected, (name, target)
                    if target == kind:
                        assert dump(restored) == expected_raw, (name, target)
                finally:
                    restored.close()
        await workload.finish()


async def test_a_purge_batch_forgets_expired_rows_with_tombstones(opener: Opener) -> None:
    """The Kafka runtime purges with a batch (``Purge``): expired dedupe ids and buffered
    messages leave the store and get changelog tombstones, so a restore of the whole
    changelog into a fresh store does not bring them back; live rows stay."""
    from daggerflow.pipeline.items import Purge, Settings
    from daggerflow.pipeline.processor import Processor
    from daggerflow.store.changelog import BUFFERED, SEEN
    from daggerflow.store.keys import text_field, u64

    store = opener("purge")
    seed = WriteBatch()
    seed.seen_at[("t", "old")] = 100.0
    seed.seen_at[("t", "new")] = 5000.0
    seed.buffer_put = [(Correlation("t", "k", "v1"), "p1", 150.0), (Correlation("t", "k", "v2"), "p2", 9000.0)]
    seed.buffer_ids = [1, 2]
    store.commit(seed, 100.0)
    assert store.expired(1000.0, 500.0, 10) == ([("t", "old")], [1])
    assert store.expired(1000.0, 500.0, 0) == ([], [])

    committed: list[WriteBatch] = []

    async def commit(batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        committed.append(batch)
        return store.commit(batch, ts)

    processor = Processor(store, ManualClock(1000.0), Settings())
    done = asyncio.get_running_loop().create_future()
    await processor.process_async([Purge(1000.0, 500.0, future=done)], commit)
    assert done.result() == 2
    [batch] = committed
    assert batch.seen_del == [("t", "old")] and batch.buffer_del == [1]
    records = batch_records(batch, 1000.0)
    assert (SEEN + text_field("t") + text_field("old"), None) in records
    assert (BUFFERED + u64(1), None) in records
    assert not store.has_seen("t", "old") and store.has_seen("t", "new")
    assert store.expired(1000.0, 500.0, 10) == ([], [])

    fresh = opener("fresh")
    fresh.commit(records_batch([*batch_records(seed, 100.0), *records]), 1000.0)
    assert not fresh.has_seen("t", "old") and fresh.has_seen("t", "new")
    assert fresh.expired(1000.0, 500.0, 10) == ([], [])
    assert [payload for _, payload in fresh.buffered(Correlation("t", "k", "v2"), 1000.0)] == ["p2"]
    assert fresh.buffered(Correlation("t", "k", "v1"), 100.0) == []
