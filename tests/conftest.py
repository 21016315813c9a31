"""Shared fixtures: engines on real SQLite files in a temp dir, with an optional manual clock.

``DAGGERFLOW_TEST_STORE=rocksdb`` makes ``make_engine`` (and so ``engine``) use RocksDB
directories instead (the ``rocksdb`` extra); tests that pass ``store=`` keep theirs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from daggerflow import Dagger, ManualClock

# The project tests itself with the kit it ships (docs/testing.md).
pytest_plugins = ["daggerflow.testing.pytest_plugin"]

TEST_STORE = os.environ.get("DAGGERFLOW_TEST_STORE", "sqlite")
if TEST_STORE not in ("sqlite", "rocksdb"):
    raise pytest.UsageError(f"DAGGERFLOW_TEST_STORE={TEST_STORE!r}: use 'sqlite' or 'rocksdb'")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/engine.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_engine(tmp_path: Path) -> Callable[..., Dagger]:
    """Build an engine on a SQLite file under tmp_path (web API off unless web_port given),
    or on a RocksDB directory there with ``DAGGERFLOW_TEST_STORE=rocksdb``.

    ``make_engine(name="a")`` gives each engine of one test its own database file.
    """

    def factory(name: str = "engine", **options: Any) -> Dagger:
        if TEST_STORE == "rocksdb":
            options.setdefault("store", f"rocksdb:///{tmp_path}/{name}")
        else:
            options.setdefault("store", f"sqlite:///{tmp_path}/{name}.db")
        options.setdefault("web_port", None)
        return Dagger(**options)

    return factory


@pytest.fixture
async def engine(make_engine: Callable[..., Dagger]) -> AsyncIterator[Dagger]:
    """A started engine with the system clock; templates must be registered before use
    (registering after start works too: listener consumers start on demand)."""
    e = make_engine()
    await e.start()
    try:
        yield e
    finally:
        await e.stop()
