"""Retention of the embedded topics, on real SQLite files with a manual clock: what is past
its retention is deleted by housekeeping, what a running reader has not read stays, the
newest message always stays (offsets stay monotonic across a restart), a reader asking for
a deleted offset starts at the first retained one, and the options are validated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daggerflow import Dagger, ManualClock
from daggerflow.embedded.retention import (
    DEFAULT_RETENTION,
    UPDATE_TOPIC_RETENTION,
    Retention,
    parse_retention,
    retention_policy,
)
from daggerflow.embedded.runtime import EmbeddedRuntime
from daggerflow.errors import ConfigurationError


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def offsets(engine: Dagger, topic: str) -> list[int]:
    return [m.offset for m in engine.read_topic(topic, 0, 1000)]


def runtime(engine: Dagger) -> EmbeddedRuntime:
    assert isinstance(engine.runtime, EmbeddedRuntime)
    return engine.runtime


#: Both stores keep embedded topics, so both apply retention.
STORES = pytest.mark.parametrize("kind", ["sqlite", "rocksdb"])


def store_url(kind: str, path: Path) -> str:
    return f"{kind}:///{path}"


@STORES
async def test_housekeeping_deletes_what_is_past_retention_but_never_what_a_reader_has_not_read(
    tmp_path: Path, clock: ManualClock, kind: str
) -> None:
    engine = Dagger(store=store_url(kind, tmp_path / "r.db"), web_port=None, clock=clock,
                    topic_retention={"t": {"ms": 1000}})  # fmt: skip
    seen: list[str] = []
    never = asyncio.Event()

    @engine.agent("t", name="reader")
    async def reader(value: Any) -> None:
        seen.append(value)
        if value == "block":
            await never.wait()  # the reader stops here: offsets from 4 on stay unread

    async with engine:
        for n in range(4):
            await engine.append("t", None, f"a{n}")
        store = runtime(engine).store
        await until(lambda: store.position("agent:reader") == 4)
        for value in ("block", "b5", "b6"):
            await engine.append("t", None, value)
        await until(lambda: "block" in seen)
        clock.advance(2.0)  # every message is now past its 1 s retention
        await engine.append("t", None, "new")

        assert await runtime(engine).apply_retention() == 4
        assert offsets(engine, "t") == [4, 5, 6, 7]  # read and old: gone; unread: kept
        # A reader asking for a deleted offset starts at the first one retained.
        assert [m.value for m in engine.read_topic("t", 0, 2)] == ["block", "b5"]
        assert await runtime(engine).apply_retention() == 0
        never.set()


@STORES
async def test_the_housekeeping_loop_applies_retention_by_count_and_keeps_the_newest_message(
    tmp_path: Path, clock: ManualClock, kind: str
) -> None:
    url = store_url(kind, tmp_path / "c.db")
    options = {"u": {"messages": 2}, "w": {"ms": 500}, "kept": {}}
    engine = Dagger(store=url, web_port=None, clock=clock, topic_retention=options)
    async with engine:
        for n in range(5):
            for topic in ("u", "w", "kept"):
                await engine.append(topic, None, f"{topic}{n}")

        def a_minute_later() -> bool:
            clock.advance(61.0)  # the housekeeping loop runs once a minute
            return offsets(engine, "u") == [3, 4] and offsets(engine, "w") == [4]

        await until(a_minute_later)
        assert offsets(engine, "kept") == [0, 1, 2, 3, 4]  # {}: kept forever
    # Restarted, the topics go on from the newest offset kept: offsets stay monotonic.
    async with Dagger(store=url, web_port=None, clock=clock, topic_retention=options) as again:
        assert await again.append("w", None, "w5") == 5
        assert offsets(again, "w") == [4, 5]


async def test_a_new_database_gives_freed_pages_back_to_the_file_system(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "v.db"
    engine = Dagger(store=f"sqlite:///{path}", web_port=None, clock=clock, topic_retention={"big": {"messages": 1}, "kept": {}})
    async with engine:
        for n in range(400):
            await engine.append("big", None, "x" * 4000 + str(n))
        store: Any = runtime(engine).store
        pages_full = store.db.execute("PRAGMA page_count").fetchone()[0]
        assert await runtime(engine).apply_retention() == 399
        # Most of the file was free: it is given back (up to 2048 pages per round).
        assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert store.db.execute("PRAGMA page_count").fetchone()[0] < pages_full / 4
        # Freed pages below a quarter of the file stay for the next writes.
        for n in range(200):
            await engine.append("kept", None, "k" * 4000 + str(n))
        for n in range(40):
            await engine.append("big", None, "y" * 4000 + str(n))
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        assert await runtime(engine).apply_retention() == 40
        assert store.db.execute("PRAGMA page_count").fetchone()[0] == pages
        assert 0 < store.db.execute("PRAGMA freelist_count").fetchone()[0] * 4 <= pages


def test_retention_policy_defaults_and_option_checks() -> None:
    policy = retention_policy(parse_retention(None), "updates")
    assert policy("updates") == UPDATE_TOPIC_RETENTION and UPDATE_TOPIC_RETENTION.messages == 1000
    assert policy("orders") == DEFAULT_RETENTION == Retention(ms=7 * 24 * 3600 * 1000.0)
    mine = retention_policy(parse_retention({"*": {"messages": 10}, "updates": {"ms": 5}}), "updates")
    assert mine("orders") == Retention(messages=10) and mine("updates") == Retention(ms=5.0)
    for bad in ({"t": {"seconds": 1}}, {"t": {"ms": -1}}, {"t": {"messages": 0}}, {"t": 5}, {"t": {"messages": 1.5}}):
        with pytest.raises(ConfigurationError, match="topic_retention"):
            Dagger(web_port=None, topic_retention=bad)
