"""Instance search on real stores (SQLite file, RocksDB directory): ``query_instances`` and
``count_query`` agree with the reference meaning (``model.query.matches``) over a few hundred
random instances, through changes and deletions, and indexed conditions use an index."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daggerflow.model.instance import Correlation, Instance, Node
from daggerflow.model.query import (
    InstanceQuery,
    matches,
    query_from_pairs,
    search_names,
    search_rows,
    sort_key,
)
from daggerflow.store.base import Store, WriteBatch
from daggerflow.store.sqlite import SQLiteStore

STATUSES = ["NOT_STARTED", "EXECUTING", "COMPLETED", "FAILURE"]
# Template -> its search keys: "orders" indexes order_id and customer, "legacy" nothing,
# "mixed" has instances of two profiles (customer declared after a redeploy).
TEMPLATES = {"orders": ("order_id", "customer"), "legacy": (), "mixed": ("order_id",)}
TOPICS = ["ready", "paid"]


def _stores() -> list[str]:
    kinds = ["sqlite"]
    try:
        import rocksdict  # noqa: F401

        kinds.append("rocksdb")
    except ImportError:  # pragma: no cover - the rocksdb extra is in the lock
        pass
    return kinds


def open_kind(kind: str, path: Path) -> Store:
    if kind == "sqlite":
        return SQLiteStore(str(path / "s.db"))
    from daggerflow.store.rocksdb import RocksDBStore

    return RocksDBStore(str(path / "r"))


def make_instance(rng: random.Random, n: int) -> Instance:
    iid = f"i{n:04d}"
    template = rng.choice(list(TEMPLATES))
    keys = TEMPLATES[template]
    if template == "mixed" and rng.random() < 0.5:
        keys = ("order_id", "customer")
    created = float(rng.randrange(0, 50))  # ties: ordered by id
    status = rng.choice(STATUSES)
    params: dict[str, Any] = {"order_id": f"o{rng.randrange(12)}", "customer": rng.choice(["ann", "bob", 7, True])}
    if rng.random() < 0.2:
        del params["customer"]
    if rng.random() < 0.1:
        params["order_id"] = {"nested": 1}  # never equal to a filter
    waits: dict[str, Correlation] = {}
    if status in ("NOT_STARTED", "EXECUTING") and rng.random() < 0.6:
        waits["l1"] = Correlation(rng.choice(TOPICS), "order_id", str(params["order_id"]))
    root = Node(id=iid, name=template, kind="ROOT", status=status, time_created=created)
    return Instance(
        id=iid, template_name=template, template_version=rng.choice(["v1", "v2"]), nodes={iid: root},
        runtime_parameters=params, lastupdated=created + rng.randrange(0, 30), correlations=waits,
        search_keys=keys,
    )


def write(store: Store, instances: list[Instance], before: dict[str, Instance]) -> None:
    """Commit instances as the processor's batch would: their rows, profiles and index."""
    batch = WriteBatch()
    for inst in instances:
        old = before.get(inst.id)
        batch.instances[inst.id] = inst
        if old is None:
            batch.search_profiles.append((inst.template_name, search_names(inst)))
        old_rows, new_rows = search_rows(old), search_rows(inst)
        batch.search_del.extend((inst.id, k) for k in old_rows if k not in new_rows)
        batch.search_put.extend((inst.id, k, v, inst.root.time_created)
                                for k, v in new_rows.items() if old_rows.get(k) != v)  # fmt: skip
        for node, at in (old.correlations if old else {}).items():
            if inst.correlations.get(node) != at:
                batch.index_del.append((at, inst.id, node))
        for node, at in inst.correlations.items():
            batch.index_put.append((at, inst.id, node, False))
        before[inst.id] = inst
    store.commit(batch, 0.0)


def delete(store: Store, iid: str, before: dict[str, Instance]) -> None:
    old = before.pop(iid)
    batch = WriteBatch(instances={iid: None})
    batch.search_del.extend((iid, k) for k in search_rows(old))
    batch.index_del.extend((at, iid, node) for node, at in old.correlations.items())
    store.commit(batch, 0.0)


def reference(held: dict[str, Instance], query: InstanceQuery) -> list[str]:
    key, reverse = sort_key(query)
    return [i.id for i in sorted((i for i in held.values() if matches(i, query)), key=key, reverse=reverse)]


QUERIES = st.lists(
    st.one_of(
        st.tuples(st.just("param.order_id"), st.sampled_from([f"o{n}" for n in range(12)])),
        st.tuples(st.just("param.customer"), st.sampled_from(["ann", "bob", "7", "true"])),
        st.tuples(st.just("status"), st.sampled_from(STATUSES)),
        st.tuples(st.just("template"), st.sampled_from([*TEMPLATES, "none"])),
        st.tuples(st.just("version"), st.sampled_from(["v1", "v2"])),
        st.tuples(st.just("waiting_on"), st.sampled_from(TOPICS)),
        st.tuples(st.just("correlation"), st.sampled_from([f"o{n}" for n in range(12)])),
        st.tuples(st.just("created_after"), st.integers(0, 50).map(str)),
        st.tuples(st.just("created_before"), st.integers(0, 50).map(str)),
        st.tuples(st.just("updated_after"), st.integers(0, 80).map(str)),
        st.tuples(st.just("sort"), st.sampled_from(["-created", "created", "-updated", "updated"])),
    ),
    max_size=4,
    unique_by=lambda p: p[0],
)


@pytest.fixture(scope="module", params=_stores())
def populated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[str, Instance]]]:
    """A store of 300 random instances, some changed and some deleted since."""
    rng = random.Random(10)
    store = open_kind(request.param, tmp_path_factory.mktemp(request.param))
    held: dict[str, Instance] = {}
    instances = [make_instance(rng, n) for n in range(300)]
    for start in range(0, 300, 50):
        write(store, instances[start : start + 50], held)
    # Parameter patches (search rows move), status changes, ended waits, deletions.
    changed = []
    for inst in rng.sample(list(held.values()), 60):
        new = Instance(**{f: getattr(inst, f) for f in inst.__struct_fields__})
        new.runtime_parameters = {**inst.runtime_parameters, "order_id": f"o{rng.randrange(12)}"}
        if rng.random() < 0.3:
            new.runtime_parameters.pop("customer", None)
        new.correlations = {} if rng.random() < 0.5 else {
            "l1": Correlation("ready", "order_id", new.runtime_parameters["order_id"])}
        new.lastupdated = inst.lastupdated + 5
        changed.append(new)
    write(store, changed, held)
    for iid in rng.sample(sorted(held), 30):
        delete(store, iid, held)
    try:
        yield store, held
    finally:
        store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=QUERIES, offset=st.integers(0, 5), limit=st.integers(1, 40))
def test_query_agrees_with_matches(
    populated: tuple[Store, dict[str, Instance]], pairs: list[tuple[str, str]], offset: int, limit: int
) -> None:
    store, held = populated
    query = query_from_pairs(pairs)
    expected = reference(held, query)
    assert [i.id for i in store.query_instances(query, limit=limit, offset=offset)] == expected[offset : offset + limit]
    assert store.count_query(query) == len(expected)


def test_every_instance_is_listed_newest_first(populated: tuple[Store, dict[str, Instance]]) -> None:
    store, held = populated
    everything = store.query_instances(InstanceQuery(), limit=1000, offset=0)
    assert [i.id for i in everything] == reference(held, InstanceQuery())
    assert len(everything) == 270 == store.count_query(InstanceQuery())


def test_deleted_instances_leave_no_search_rows(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "d.db"))
    try:
        held: dict[str, Instance] = {}
        rng = random.Random(3)
        write(store, [make_instance(rng, n) for n in range(20)], held)
        for iid in list(held):
            delete(store, iid, held)
        assert store.db.execute("SELECT COUNT(*) FROM search").fetchone()[0] == 0
    finally:
        store.close()


def _plan(store: SQLiteStore, query: InstanceQuery) -> str:
    return " | ".join(store.query_plan(query))


def test_sqlite_uses_the_indexes(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "p.db"))
    try:
        rng = random.Random(5)
        held: dict[str, Instance] = {}
        write(store, [i for i in (make_instance(rng, n) for n in range(200)) if i.template_name == "orders"], held)
        indexed = _plan(store, query_from_pairs([("param.order_id", "o3")]))
        assert "USING COVERING INDEX search_value (name=? AND value=?)" in indexed, indexed
        assert "SCAN i" not in indexed, indexed
        both = _plan(store, query_from_pairs([("param.order_id", "o3"), ("param.customer", "ann")]))
        assert "search_value" in both and "SCAN i" not in both, both
        waiting = _plan(store, query_from_pairs([("waiting_on", "ready")]))
        assert "SCAN i" not in waiting and "correlation" in waiting, waiting
        # A value alone reads the waiting listeners' entries (not the instances).
        value = _plan(store, query_from_pairs([("correlation", "o3")]))
        assert "SCAN c" in value and "SCAN i" not in value, value
        # A parameter no template indexes: the instances the other conditions select.
        undeclared = _plan(store, query_from_pairs([("param.colour", "red"), ("status", "FAILURE")]))
        assert "instances_status" in undeclared, undeclared
        # Another template that does not index order_id: its instances are read too.
        write(store, [Instance(id="l1", template_name="legacy", template_version="v", nodes={
            "l1": Node(id="l1", name="legacy", kind="ROOT", time_created=1.0)}, runtime_parameters={"order_id": "o3"})],
            held)  # fmt: skip
        mixed = store.query_instances(query_from_pairs([("param.order_id", "o3")]), limit=100, offset=0)
        assert "l1" in [i.id for i in mixed]
        assert sorted(i.id for i in mixed) == sorted(reference(held, query_from_pairs([("param.order_id", "o3")])))
    finally:
        store.close()


def test_schema_3_database_is_migrated_and_searched_by_reading(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "v3.db")
    store = SQLiteStore(path)
    inst = Instance(id="old", template_name="orders", template_version="v", runtime_parameters={"order_id": "o1"},
                    nodes={"old": Node(id="old", name="orders", kind="ROOT", time_created=1.0)})  # fmt: skip
    store.commit(WriteBatch(instances={"old": inst}), 0.0)
    store.close()
    with sqlite3.connect(path) as db:  # what version 3 wrote
        for table in ("search", "search_profiles"):
            db.execute(f"DROP TABLE {table}")
        db.execute("PRAGMA user_version = 3")
    migrated = SQLiteStore(path)
    try:
        assert migrated.db.execute("PRAGMA user_version").fetchone()[0] == 4
        # Its instances index nothing: a parameter filter reads them, and finds them.
        found = migrated.query_instances(query_from_pairs([("param.order_id", "o1")]), limit=10, offset=0)
        assert [i.id for i in found] == ["old"]
    finally:
        migrated.close()


@pytest.mark.parametrize("kind", _stores())
def test_changelog_restores_the_search_index(tmp_path: Path, kind: str) -> None:
    """Search rows and profiles travel in the changelog (tag ``a``): a store restored from a
    compacted changelog of another answers every query alike."""
    from daggerflow.store.changelog import Restorer, batch_records

    source = SQLiteStore(str(tmp_path / "source.db"))
    records: list[tuple[bytes, bytes | None]] = []
    original = source.commit

    def recording(batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        out = original(batch, ts)
        records.extend(batch_records(batch, ts))
        return out

    source.commit = recording  # type: ignore[method-assign]
    rng = random.Random(11)
    held: dict[str, Instance] = {}
    instances = [make_instance(rng, n) for n in range(120)]
    write(source, instances[:60], held)
    write(source, instances[60:], held)
    for iid in rng.sample(sorted(held), 20):
        delete(source, iid, held)
    compacted = {key: value for key, value in records}  # a compacted topic keeps the last of each key
    target = open_kind(kind, tmp_path / "target")
    try:
        Restorer(target, 0).apply((n, k, v) for n, (k, v) in enumerate(compacted.items()))
        for pairs in ([("param.order_id", "o3")], [("param.customer", "ann"), ("template", "orders")],
                      [("waiting_on", "ready")], [("param.customer", "7")], []):  # fmt: skip
            query = query_from_pairs(pairs)
            assert [i.id for i in target.query_instances(query, limit=500, offset=0)] == reference(held, query)
            assert target.count_query(query) == len(reference(held, query))
        if isinstance(target, SQLiteStore):  # the deleted instances' rows were tombstoned
            orphans = "SELECT COUNT(*) FROM search WHERE instance NOT IN (SELECT id FROM instances)"
            assert target.db.execute(orphans).fetchone()[0] == 0
            assert target.db.execute("SELECT COUNT(*) FROM search").fetchone()[0] > 0
    finally:
        target.close()
        source.close()
