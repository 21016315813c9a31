"""The store contract, checked the same way against both stores: SQLite (a file) and
RocksDB (a directory, the ``rocksdb`` extra). Real databases in a temp dir, no engine."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daggerflow import Dagger
from daggerflow.errors import ConfigurationError, StoreError
from daggerflow.model.instance import Correlation, Instance, Node
from daggerflow.store.base import Outgoing, PendingJob, Store, WriteBatch
from daggerflow.store.factory import open_store

try:
    import rocksdict
except ImportError:  # pragma: no cover - the rocksdb extra is part of the dev install
    rocksdict = None

needs_rocksdb = pytest.mark.skipif(rocksdict is None, reason="needs the rocksdb extra (rocksdict)")
KINDS = ["sqlite", pytest.param("rocksdb", marks=needs_rocksdb)]

Opener = Callable[..., Store]


def url_for(kind: str, path: Path) -> str:
    return f"sqlite:///{path}.db" if kind == "sqlite" else f"rocksdb:///{path}"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, tmp_path: Path) -> Iterator[Opener]:
    """``opener()`` opens (or reopens) the test's store; all are closed at the end."""
    opened: list[Store] = []

    def open_(name: str = "state", **options: Any) -> Store:
        store = open_store(
            url_for(kind, tmp_path / name), datadir=str(tmp_path), application_name="t", **options
        )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        try:
            store.close()
        except Exception:
            pass


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


def inst(iid: str, template: str = "tpl", status: str = "NOT_STARTED", created: float = 1.0) -> Instance:
    root = Node(id=iid, name=template, kind="workflow", status=status, time_created=created)
    return Instance(
        id=iid, template_name=template, template_version="1", nodes={iid: root}, lastupdated=created
    )


def put(store: Store, *instances: Instance) -> None:
    store.commit(WriteBatch(instances={i.id: i for i in instances}), 0.0)


def ids(instances: list[Instance]) -> list[str]:
    return [i.id for i in instances]


# Instances --------------------------------------------------------------------------------


def test_instances_round_trip_and_delete(opener: Opener) -> None:
    store = opener()
    assert store.get_instance("a") is None
    a = inst("a", status="EXECUTING")
    a.runtime_parameters["order"] = {"id": "O-1", "items": [1, 2]}
    put(store, a, inst("b"))
    got = store.get_instance("a")
    assert got is not None and got.status == "EXECUTING"
    assert got.runtime_parameters == {"order": {"id": "O-1", "items": [1, 2]}}
    store.commit(WriteBatch(instances={"b": None}), 0.0)
    assert store.get_instance("b") is None
    store.close()

    again = opener()
    assert ids(again.list_instances(status=None, template=None, limit=10, offset=0)) == ["a"]
    assert again.get_instance("a") == got


def test_listing_filters_order_and_paging(store: Store) -> None:
    put(
        store,
        inst("z", "pizza", "COMPLETED", created=1.0),
        inst("b", "pizza", "EXECUTING", created=3.0),
        inst("a", "pizza", "EXECUTING", created=3.0),  # same time: ordered by id
        inst("c", "salad", "EXECUTING", created=2.0),
        inst("d", "salad", "COMPLETED", created=10.0),
    )

    def listing(
        status: str | None = None, template: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[str]:
        return ids(store.list_instances(status=status, template=template, limit=limit, offset=offset))

    assert listing() == ["z", "c", "a", "b", "d"]
    assert listing(status="EXECUTING") == ["c", "a", "b"]
    assert listing(template="pizza") == ["z", "a", "b"]
    assert listing(status="EXECUTING", template="pizza") == ["a", "b"]
    assert listing(status="FAILURE") == []
    assert listing(limit=2) == ["z", "c"] and listing(limit=2, offset=2) == ["a", "b"]
    assert listing(limit=2, offset=4) == ["d"] and listing(offset=5) == [] and listing(limit=0) == []
    assert store.count_instances(status=None, template=None) == 5
    assert store.count_instances(status="EXECUTING", template=None) == 3
    assert store.count_instances(status=None, template="salad") == 2
    assert store.count_instances(status="COMPLETED", template="salad") == 1

    # A status change moves the instance between status listings; its template and
    # creation time (the listing order) stay those of its first commit.
    put(store, inst("c", "salad", "COMPLETED", created=99.0))
    assert listing(status="EXECUTING") == ["a", "b"]
    assert listing(status="COMPLETED") == ["z", "c", "d"]
    assert listing(status="COMPLETED", template="salad") == ["c", "d"]
    assert listing() == ["z", "c", "a", "b", "d"]

    store.commit(WriteBatch(instances={"a": None, "d": None}), 0.0)
    assert listing() == ["z", "c", "b"]
    assert store.count_instances(status="COMPLETED", template=None) == 2
    assert store.count_instances(status="EXECUTING", template="pizza") == 1


def test_status_changes_and_deletes_after_a_reopen(opener: Opener) -> None:
    store = opener()
    put(store, inst("a", "pizza", "EXECUTING", created=1.0), inst("b", "pizza", "EXECUTING", created=2.0))
    store.close()
    store = opener()
    put(store, inst("a", "pizza", "COMPLETED", created=5.0))
    store.commit(WriteBatch(instances={"b": None}), 0.0)
    assert store.count_instances(status="EXECUTING", template=None) == 0
    assert ids(store.list_instances(status="COMPLETED", template="pizza", limit=10, offset=0)) == ["a"]
    assert store.count_instances(status=None, template=None) == 1


# Correlation index and timers -------------------------------------------------------------


def test_index_put_delete_lookup(store: Store) -> None:
    at = Correlation("orders", "order_id", "42")
    other = Correlation("orders", "order_id", "420")
    batch = WriteBatch(
        index_put=[(at, "w1", "n1", False), (at, "w2", "n1", True), (other, "w3", "n1", False)]
    )
    store.commit(batch, 0.0)
    assert sorted(store.lookup(at)) == [("w1", "n1", False), ("w2", "n1", True)]
    assert store.lookup(other) == [("w3", "n1", False)]
    assert store.lookup(Correlation("orders", "order_id", "4")) == []
    assert store.lookup(Correlation("order", "sorder_id", "42")) == []
    store.commit(WriteBatch(index_del=[(at, "w1", "n1")]), 0.0)
    assert store.lookup(at) == [("w2", "n1", True)]


def test_index_values_with_separator_like_characters(store: Store) -> None:
    """Values are arbitrary strings: NUL bytes and prefixes of each other stay distinct."""
    values = ["a", "a\x00", "a\x00b", "ab", "", "\x00\x01", "ü"]
    store.commit(
        WriteBatch(
            index_put=[
                (Correlation("t", "k", v), f"w{n}", f"node\x00{n}", False) for n, v in enumerate(values)
            ]
        ),
        0.0,
    )
    for n, v in enumerate(values):
        assert store.lookup(Correlation("t", "k", v)) == [(f"w{n}", f"node\x00{n}", False)]


def test_timers_set_replace_cancel(opener: Opener) -> None:
    store = opener()
    batch = WriteBatch()
    batch.set_timer("w1", "n1:timeout", 100.0)
    batch.set_timer("w1", "n2:trigger", 50.5)
    batch.set_timer("w2", "n1:timeout", 7.0)
    store.commit(batch, 0.0)
    batch = WriteBatch()
    batch.set_timer("w1", "n1:timeout", 200.0)
    batch.cancel_timer("w2", "n1:timeout")
    store.commit(batch, 0.0)
    store.close()
    assert sorted(opener().all_timers()) == [("w1", "n1:timeout", 200.0), ("w1", "n2:trigger", 50.5)]


def test_deleting_an_instance_drops_its_index_entries_and_timers(store: Store) -> None:
    at = Correlation("orders", "order_id", "1")
    batch = WriteBatch(
        instances={"w1": inst("w1"), "w2": inst("w2")},
        index_put=[(at, "w1", "L", False), (at, "w2", "L", False)],
    )
    batch.set_timer("w1", "L:timeout", 5.0)
    batch.set_timer("w2", "L:timeout", 6.0)
    store.commit(batch, 0.0)
    store.commit(WriteBatch(instances={"w1": None}), 0.0)
    assert store.lookup(at) == [("w2", "L", False)]
    assert store.all_timers() == [("w2", "L:timeout", 6.0)]


def test_history_rows_put_delete_and_go_with_their_instance(opener: Opener) -> None:
    store = opener()
    rows = [("w1", 0, b"\x91\x01"), ("w1", 32, b"\x91\x02"), ("w2", 0, b"\x91\x03"), ("w10", 5, b"\x90")]
    store.commit(WriteBatch(instances={i: inst(i) for i in ("w1", "w2", "w10")}, history_put=rows), 0.0)
    assert store.history_rows("w1") == [(0, b"\x91\x01"), (32, b"\x91\x02")]  # (w10's are not w1's)
    store.commit(WriteBatch(history_del=[("w1", 0)], history_put=[("w1", 64, b"\x90")]), 0.0)
    store.close()
    store = opener()
    assert store.history_rows("w1") == [(32, b"\x91\x02"), (64, b"\x90")]
    # Deleted and put in one batch: the put wins (deletes go first, as for every table).
    store.commit(WriteBatch(history_del=[("w2", 0)], history_put=[("w2", 0, b"\x91\x04")]), 0.0)
    assert store.history_rows("w2") == [(0, b"\x91\x04")]
    store.commit(WriteBatch(instances={"w1": None, "w2": None}), 0.0)  # even without history_del
    assert store.history_rows("w1") == [] and store.history_rows("w2") == []
    assert store.history_rows("w10") == [(5, b"\x90")]


# Jobs --------------------------------------------------------------------------------------


def test_pending_jobs(opener: Opener) -> None:
    store = opener()
    store.commit(
        WriteBatch(
            jobs_put=[
                PendingJob("w1", "n1", "execute", 1, {"params": {"a": [1, "x"]}}),
                PendingJob("w1", "n1", "execute", 2, None),
                PendingJob("w2", "n3", "on_message", 1, "payload"),
            ]
        ),
        0.0,
    )
    store.commit(WriteBatch(jobs_del=[("w1", "n1", 1)]), 0.0)
    store.close()
    jobs = sorted(opener().pending_jobs(), key=lambda j: (j.instance, j.seq))
    assert jobs == [
        PendingJob("w1", "n1", "execute", 2, None),
        PendingJob("w2", "n3", "on_message", 1, "payload"),
    ]


# Topics ------------------------------------------------------------------------------------


def test_appends_read_offsets_and_heads_after_reopen(opener: Opener) -> None:
    store = opener()
    assert store.end_offset("orders") == 0 and store.read("orders", 0, 10) == [] and store.topics() == []
    appended = store.commit(
        WriteBatch(
            appends=[
                Outgoing("orders", "k1", '{"n": 1}', {"h": "v"}),
                Outgoing("ready", None, b"\x00raw"),
                Outgoing("orders", "k2", '{"n": 2}'),
            ]
        ),
        12.5,
    )
    assert appended == [("orders", 0), ("ready", 0), ("orders", 1)]
    assert store.append("orders", None, "direct", None, 13.0) == 2
    msgs = store.read("orders", 0, 10)
    assert [(m.offset, m.key, m.value, m.headers, m.timestamp) for m in msgs] == [
        (0, "k1", '{"n": 1}', {"h": "v"}, 12.5),
        (1, "k2", '{"n": 2}', {}, 12.5),
        (2, None, "direct", {}, 13.0),
    ]
    assert [m.offset for m in store.read("orders", 1, 1)] == [1]
    assert store.read("orders", 3, 10) == []
    assert store.read("ready", 0, 10)[0].value == b"\x00raw"
    assert store.topics() == ["orders", "ready"]
    store.close()

    again = opener()
    assert again.end_offset("orders") == 3 and again.end_offset("ready") == 1
    assert again.commit(WriteBatch(appends=[Outgoing("orders", None, "after")]), 14.0) == [("orders", 3)]
    assert again.append("ready", None, "x", None, 15.0) == 1
    assert [m.value for m in again.read("orders", 2, 10)] == ["direct", "after"]


def test_topics_with_similar_names_do_not_mix(store: Store) -> None:
    for topic in ("a", "a\x00b", "ab", "b"):
        store.append(topic, None, topic, None, 0.0)
    store.append("a", None, "second", None, 0.0)
    assert sorted(store.topics()) == ["a", "a\x00b", "ab", "b"]
    assert [m.value for m in store.read("a", 0, 10)] == ["a", "second"]
    assert store.end_offset("a") == 2 and store.end_offset("ab") == 1


def test_consumer_positions(opener: Opener) -> None:
    store = opener()
    assert store.position("listener:orders") is None
    store.commit(WriteBatch(positions={"listener:orders": 5, "agent:x": 1}), 0.0)
    store.commit(WriteBatch(positions={"listener:orders": 9}), 0.0)
    store.close()
    again = opener()
    assert again.position("listener:orders") == 9 and again.position("agent:x") == 1


def test_template_versions_are_kept_once_and_survive_a_reopen(opener: Opener) -> None:
    store = opener()
    assert store.template_versions() == []
    store.save_template_version("orders", "v1", b'{"template":"orders"}', 2.0)
    store.save_template_version("orders", "v1", b"ignored: kept already", 3.0)
    store.save_template_version("a\x00b", "v0", b"{}", 1.0)
    store.close()
    again = opener()
    assert again.template_versions() == [("a\x00b", "v0", b"{}", 1.0), ("orders", "v1", b'{"template":"orders"}', 2.0)]


# Dedupe ids and buffered messages --------------------------------------------------------------


def _purge(store: Store, *, now: float, seen_ttl: float) -> None:
    """As the pipeline purges (``BatchApplier.purge``): what ``expired`` lists, deleted in a batch."""
    seen, buffered = store.expired(now, seen_ttl, 1_000_000)
    store.commit(WriteBatch(seen_del=seen, buffer_del=buffered), now)


def test_seen_ids_are_purged_by_age(store: Store) -> None:
    store.commit(WriteBatch(seen=[("orders", "m1"), ("orders", "m2")]), 100.0)
    store.commit(WriteBatch(seen=[("orders", "m3")]), 200.0)
    assert store.has_seen("orders", "m1") and not store.has_seen("ready", "m1")
    _purge(store, now=250.0, seen_ttl=100.0)  # forget ids first seen before 150
    assert not store.has_seen("orders", "m1") and not store.has_seen("orders", "m2")
    assert store.has_seen("orders", "m3")
    _purge(store, now=301.0, seen_ttl=100.0)
    assert not store.has_seen("orders", "m3")


def test_buffered_messages_expire_and_are_taken_by_id(opener: Opener) -> None:
    store = opener()
    at = Correlation("ready", "order_id", "7")
    store.commit(
        WriteBatch(buffer_put=[(at, {"n": 1}, 100.0), (at, {"n": 2}, 50.0), (at, {"n": 3}, 100.0)]), 0.0
    )
    store.commit(WriteBatch(buffer_put=[(Correlation("ready", "order_id", "8"), "other", 100.0)]), 0.0)
    assert [p for _, p in store.buffered(at, now=10.0)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    live = store.buffered(at, now=60.0)
    assert [p for _, p in live] == [{"n": 1}, {"n": 3}]
    store.commit(WriteBatch(buffer_del=[live[0][0]]), 0.0)
    assert [p for _, p in store.buffered(at, now=60.0)] == [{"n": 3}]
    _purge(store, now=60.0, seen_ttl=1.0)
    assert [p for _, p in store.buffered(at, now=0.0)] == [{"n": 3}]  # the expired one is gone
    store.close()

    again = opener()
    again.commit(WriteBatch(buffer_put=[(at, {"n": 4}, 100.0)]), 0.0)
    found = again.buffered(at, now=60.0)
    assert [p for _, p in found] == [{"n": 3}, {"n": 4}]
    assert len({i for i, _ in found}) == 2  # ids stay distinct across a reopen
    assert [p for _, p in again.buffered(Correlation("ready", "order_id", "8"), now=60.0)] == ["other"]


# Atomicity and durability ------------------------------------------------------------------


def test_a_failing_commit_writes_nothing(store: Store) -> None:
    batch = WriteBatch(
        instances={"w1": inst("w1")},
        appends=[Outgoing("orders", None, "x")],
        jobs_put=[PendingJob("w1", "n1", "execute", 1, object())],  # cannot be encoded
    )
    with pytest.raises(TypeError):
        store.commit(batch, 0.0)
    assert store.get_instance("w1") is None
    assert store.end_offset("orders") == 0 and store.read("orders", 0, 10) == []
    assert store.commit(WriteBatch(appends=[Outgoing("orders", None, "y")]), 0.0) == [("orders", 0)]


def test_commits_survive_a_killed_process(kind: str, tmp_path: Path) -> None:
    """The process dies right after commit (no close): the commit is in the log."""
    url = url_for(kind, tmp_path / "killed")
    code = (
        "import os\n"
        "from daggerflow.store.factory import open_store\n"
        "from daggerflow.store.base import Outgoing, WriteBatch\n"
        f"s = open_store({url!r}, datadir='.', application_name='t')\n"
        "s.commit(WriteBatch(positions={'c': 3}, appends=[Outgoing('t', None, 'v')]), 1.0)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    store = open_store(url, datadir=".", application_name="t")
    try:
        assert store.position("c") == 3 and [m.value for m in store.read("t", 0, 10)] == ["v"]
    finally:
        store.close()


# Ownership, foreign and newer databases -----------------------------------------------------------


def test_a_held_lock_is_a_store_error(opener: Opener, kind: str) -> None:
    first = opener()
    with pytest.raises(StoreError, match="in use by another daggerflow worker"):
        opener()
    first.close()
    opener().close()  # released on close


def _make_foreign(kind: str, path: Path) -> None:
    if kind == "sqlite":
        with sqlite3.connect(f"{path}.db") as db:
            db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    else:
        db = rocksdict.Rdict(str(path))
        db["customer:1"] = "Ada"
        db.close()


def test_a_foreign_database_is_refused(opener: Opener, kind: str, tmp_path: Path) -> None:
    _make_foreign(kind, tmp_path / "foreign")
    with pytest.raises(StoreError, match="did not create"):
        opener("foreign")
    opener("foreign-not").close()  # the failed open released its lock: other stores open


def test_a_newer_database_is_refused_and_released(opener: Opener, kind: str, tmp_path: Path) -> None:
    store = opener("newer")
    put(store, inst("w1"))
    store.close()
    set_version(kind, tmp_path / "newer", 999)
    with pytest.raises(StoreError, match="schema version 999, newer"):
        opener("newer")
    set_version(kind, tmp_path / "newer", 1)
    assert opener("newer").get_instance("w1") is not None


def set_version(kind: str, path: Path, version: int) -> None:
    if kind == "sqlite":
        with sqlite3.connect(f"{path}.db") as db:
            db.execute(f"PRAGMA user_version = {version}")
    else:
        db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
        db[b"mschema_version"] = str(version).encode()
        db.close()


# RocksDB specifics ------------------------------------------------------------------------------


@needs_rocksdb
def test_rocksdb_refuses_a_directory_or_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("buy flour")
    with pytest.raises(StoreError, match="did not create"):
        open_store(f"rocksdb:///{notes}", datadir=".", application_name="t")
    assert sorted(os.listdir(notes)) == ["todo.txt"]  # untouched
    (tmp_path / "plain").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(f"rocksdb:///{tmp_path}/plain", datadir=".", application_name="t")


@needs_rocksdb
def test_rocksdb_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, where in [
        ("rocksdb:///rel/a", tmp_path / "rel" / "a"),
        (f"rocksdb:///{tmp_path}/abs", tmp_path / "abs"),
    ]:
        store = open_store(url, datadir=".", application_name="t", durability="full")
        try:
            assert type(store).__name__ == "RocksDBStore"
            assert store._write.sync  # type: ignore[attr-defined]  # durability="full" syncs
            assert (where / "CURRENT").exists() and Path(f"{where}.lock").exists()
        finally:
            store.close()
    # Two slashes would read "rel" as a host: refused with the right spelling, like "rocksdb://".
    for url in ("rocksdb://rel/b", "rocksdb://", "rocksdb:/x"):
        with pytest.raises(ConfigurationError, match="rocksdb:///relative/dir"):
            open_store(url, datadir=".", application_name="t")


def test_without_the_extra_rocksdb_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # import rocksdict now fails
    with pytest.raises(ConfigurationError) as info:
        Dagger(store=f"rocksdb:///{tmp_path}/state", web_port=None)
    assert str(info.value) == "store 'rocksdb://' needs the rocksdb extra: pip install 'daggerflow[rocksdb]'"


@needs_rocksdb
def test_constructing_an_engine_opens_nothing(tmp_path: Path) -> None:
    Dagger(store=f"rocksdb:///{tmp_path}/state", web_port=None)
    assert not (tmp_path / "state").exists() and not (tmp_path / "state.lock").exists()


@needs_rocksdb
def test_float_key_encoding_preserves_order() -> None:
    from daggerflow.store.rocksdb import _f64

    values = [-1e300, -2.5, -1.0, -1e-300, 0.0, 1e-300, 1.0, 1.5, 1700000000.123, 1700000000.124, 1e300]
    assert sorted(values, key=_f64) == values


@needs_rocksdb
def test_rocksdb_corrupt_database_is_a_store_error(tmp_path: Path) -> None:
    url = f"rocksdb:///{tmp_path}/db"
    store = open_store(url, datadir=".", application_name="t")
    store.commit(WriteBatch(appends=[Outgoing("t", None, "x" * 500) for _ in range(50)]), 0.0)
    store.close()
    for name in os.listdir(tmp_path / "db"):
        if name != "LOCK":
            path = tmp_path / "db" / name
            data = bytearray(path.read_bytes())
            for at in range(0, len(data), 97):
                data[at] = (data[at] + 0x5A) % 256
            path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="not a usable daggerflow database"):
        open_store(url, datadir=".", application_name="t")
    # The failed open released the lock: a replacement database opens at the same path.
    for name in os.listdir(tmp_path / "db"):
        (tmp_path / "db" / name).unlink()
    open_store(url, datadir=".", application_name="t").close()
