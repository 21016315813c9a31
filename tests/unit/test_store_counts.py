"""Instance counts of both stores against a model of the instances, and the RocksDB store's
kept counts (``store/rocksdb_counts.py``): exact after every kind of change, after a reopen,
after a restore from the changelog and after the upgrade of a schema 1 database; and a plain
count reads no listing range."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from daggerflow.model.query import InstanceQuery
from daggerflow.store.base import PendingJob, Store, WriteBatch
from daggerflow.store.changelog import Restorer, batch_records
from daggerflow.store.factory import open_store

from .test_store_contract import KINDS, inst, needs_rocksdb, rocksdict, url_for

TEMPLATES = ("pizza", "salad", "soup")
STATUSES = ("NOT_STARTED", "EXECUTING", "COMPLETED", "FAILURE", "STOPPED")
Model = dict[str, tuple[str, str]]  # instance id -> (template, status)


def random_batches(seed: int, n: int) -> list[tuple[WriteBatch, Model]]:
    """``n`` batches of creates, status moves, rewrites with the same status and deletes
    (of existing and of unknown ids), each with the model of the instances after it."""
    rng = random.Random(seed)
    model: Model = {}
    out = []
    for b in range(n):
        batch = WriteBatch()
        before = sorted(model)  # (a batch holds one value per id: each id once)
        for k in range(rng.randint(1, 12)):
            ids = [i for i in before if i not in batch.instances]
            roll = rng.random()
            if roll < 0.45 or not ids:
                iid, template = f"w{b}-{k}", rng.choice(TEMPLATES)
                status = rng.choice(STATUSES)
            elif roll < 0.85:
                iid = rng.choice(ids)
                # The store keeps an instance's first template: a later commit naming another
                # one must not move the count between templates.
                template, status = model[iid][0], rng.choice(STATUSES)
                batch.instances[iid] = inst(iid, rng.choice(TEMPLATES), status, created=float(b))
                model[iid] = (template, status)
                continue
            else:
                iid = rng.choice([*ids, "never-created"])
                batch.instances[iid] = None
                model.pop(iid, None)
                continue
            batch.instances[iid] = inst(iid, template, status, created=float(b))
            model[iid] = (template, status)
        out.append((batch, dict(model)))
    return out


def commit_all(
    store: Store, seed: int, n: int, records: list[tuple[bytes, bytes | None]] | None = None
) -> Model:
    """Commit ``random_batches(seed, n)`` (their changelog records to ``records``); the model."""
    model: Model = {}
    for batch, after in random_batches(seed, n):
        store.commit(batch, 0.0)
        if records is not None:
            records.extend(batch_records(batch, 0.0))
        model = after
    return model


def assert_counts(store: Store, model: Model) -> None:
    by = Counter(model.values())
    for template in (None, *TEMPLATES, "unknown"):
        for status in (None, *STATUSES):
            expected = sum(
                n
                for (t, s), n in by.items()
                if (template is None or t == template) and (status is None or s == status)
            )
            assert store.count_instances(status=status, template=template) == expected, (template, status)
            query = InstanceQuery(status=status, template=template)
            assert store.count_query(query) == expected, (template, status)
    assert store.status_counts() == sorted((t, s, n) for (t, s), n in by.items())


@pytest.mark.parametrize("kind", KINDS)
def test_counts_follow_every_change_and_survive_reopens(kind: str, tmp_path: Path) -> None:
    url = url_for(kind, tmp_path / "state")
    store = open_store(url, datadir=str(tmp_path), application_name="t")
    try:
        for n, (batch, model) in enumerate(random_batches(seed=11, n=60)):
            store.commit(batch, 0.0)
            assert_counts(store, model)
            if n % 20 == 19:  # the kept counts are read back from the database, not memory
                store.close()
                store = open_store(url, datadir=str(tmp_path), application_name="t")
                assert_counts(store, model)
        assert model, "the script should leave instances to count"
    finally:
        store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_counts_of_a_store_restored_from_the_changelog(kind: str, tmp_path: Path) -> None:
    original = open_store(url_for(kind, tmp_path / "original"), datadir=str(tmp_path), application_name="t")
    records: list[tuple[bytes, bytes | None]] = []
    model = commit_all(original, seed=5, n=40, records=records)
    original.close()
    log = [(n, k, v) for n, (k, v) in enumerate(records)]
    url = url_for(kind, tmp_path / "restored")
    restored = open_store(url, datadir=str(tmp_path), application_name="t")
    try:
        # Chunks of 7 records: one restore commit holds several batches' changes to an id.
        Restorer(restored, 0, chunk=7).apply(log)
        assert_counts(restored, model)
        # Applying every record again (a replay past the checkpoint) counts nothing twice.
        Restorer(restored, 0, chunk=3).apply(log, skip_applied=False)
        assert_counts(restored, model)
        restored.close()
        restored = open_store(url, datadir=str(tmp_path), application_name="t")
        assert_counts(restored, model)
    finally:
        restored.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_commit_counts_nothing(kind: str, tmp_path: Path) -> None:
    store = open_store(url_for(kind, tmp_path / "state"), datadir=str(tmp_path), application_name="t")
    try:
        store.commit(WriteBatch(instances={"a": inst("a", "pizza", "EXECUTING")}), 0.0)
        bad = WriteBatch(
            instances={"a": inst("a", "pizza", "COMPLETED"), "b": inst("b", "pizza")},
            jobs_put=[PendingJob("a", "n1", "execute", 1, object())],  # cannot be encoded
        )
        with pytest.raises(TypeError):
            store.commit(bad, 0.0)
        assert_counts(store, {"a": ("pizza", "EXECUTING")})
    finally:
        store.close()


# RocksDB's kept counts --------------------------------------------------------------------------


@needs_rocksdb
def test_a_plain_rocksdb_count_reads_no_listing_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"rocksdb:///{tmp_path}/state", datadir=str(tmp_path), application_name="t")
    try:
        model = commit_all(store, seed=3, n=30)
        store.count_instances(status=None, template=None)  # (the counts are in memory now)

        def no_scan(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"a plain count walked a range: {args}")

        monkeypatch.setattr(store, "_scan", no_scan)
        monkeypatch.setattr(store, "_keys", no_scan)
        assert_counts(store, model)
        # Not plain: a creation-time bound is counted from the listing (which it reads).
        with pytest.raises(AssertionError, match="walked a range"):
            store.count_query(InstanceQuery(created_after=0.0))
    finally:
        store.close()


@needs_rocksdb
def test_a_schema_1_rocksdb_database_gets_its_counts_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old"
    store = open_store(f"rocksdb:///{path}", datadir=str(tmp_path), application_name="t")
    model = commit_all(store, seed=8, n=25)
    store.close()
    # What a schema 1 database is: the same ranges without the kept counts.
    assert rocksdict is not None
    db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
    counts = [k for k in db.keys(from_key=b"k") if k.startswith(b"k")]
    assert counts
    for key in counts:
        del db[key]
    db[b"mschema_version"] = b"1"
    db.close()

    store = open_store(f"rocksdb:///{path}", datadir=str(tmp_path), application_name="t")
    try:
        assert_counts(store, model)
        # And it keeps counting from there.
        store.commit(WriteBatch(instances={"new": inst("new", "soup", "FAILURE")}), 0.0)
        assert_counts(store, {**model, "new": ("soup", "FAILURE")})
    finally:
        store.close()
    db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
    try:
        assert db[b"mschema_version"] == b"2"  # an older daggerflow (no counting) refuses it now
    finally:
        db.close()
