"""Wiping a partition's local store before it is restored from the changelog."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("aiokafka")

from daggerflow.errors import StoreError
from daggerflow.kafka.active_tasks import wipe_store
from daggerflow.store.lockfile import LockFile


def test_a_sqlite_store_goes_with_its_wal_and_shm(tmp_path: Path) -> None:
    path = tmp_path / "p003.db"
    for name in ("p003.db", "p003.db-wal", "p003.db-shm"):
        (tmp_path / name).write_bytes(b"garbage")
    (tmp_path / "p004.db").write_bytes(b"another partition's")
    wipe_store(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p003.db.lock", "p004.db"]


def test_a_rocksdb_directory_goes_whole(tmp_path: Path) -> None:
    path = tmp_path / "p000.rocks"
    (path / "sub").mkdir(parents=True)
    (path / "CURRENT").write_text("MANIFEST-1")
    (path / "sub" / "x.sst").write_bytes(b"garbage")
    wipe_store(str(path))
    assert not path.exists()


def test_a_store_another_worker_holds_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "p001.db"
    path.write_bytes(b"in use")
    held = LockFile(str(path))
    held.acquire(str(path))
    try:
        with pytest.raises(StoreError, match="in use"):
            wipe_store(str(path))
        assert path.read_bytes() == b"in use"
    finally:
        held.release()
