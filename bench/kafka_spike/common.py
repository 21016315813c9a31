"""Shared helpers for the Kafka spike scripts (issue #3 groundwork).

Each script in this directory is runnable on its own (``--bootstrap HOST:PORT``); this module
only holds small helpers they share: topic creation, draining a topic, percentiles.
It is not part of the daggerflow package.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers")
    return p


def suffix() -> str:
    """A short random suffix so that every run uses fresh topics and groups."""
    return uuid.uuid4().hex[:8]


async def create_topics(
    bootstrap: str,
    topics: dict[str, int],
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create topics {name: partitions} (replication 1) and wait until their metadata is visible.

    aiokafka's create_topics() does not raise for per-topic errors: they are in the response's
    topic_errors (see admin.py). An existing topic is accepted, any other error raises.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        new = [
            NewTopic(
                name, num_partitions=n, replication_factor=1, topic_configs=(configs or {}).get(name, {})
            )
            for name, n in topics.items()
        ]
        resp = await admin.create_topics(new)
        for err in resp.topic_errors:
            name, code = err[0], err[1]
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"create_topics({name}): {err[2] if len(err) > 2 else ''}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if set(topics) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topics {sorted(topics)} not visible")
    finally:
        await admin.close()


async def drain(
    bootstrap: str,
    topic: str,
    *,
    isolation_level: str = "read_committed",
    idle_ms: int = 1500,
    max_wait_s: float = 60.0,
) -> list[Any]:
    """Read a whole topic from the beginning (no group) until its end offsets are reached.

    Returns the ConsumerRecords. With read_committed, end_offsets() returns the last stable
    offset, and we stop once every partition's position has reached it (control records
    included), or after ``idle_ms`` without records once the end is reached.
    """
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await c.start()
    out: list[Any] = []
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c._client.force_metadata_update()  # first metadata for a fresh topic
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        deadline = time.monotonic() + max_wait_s
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=idle_ms)
            for recs in batch.values():
                out.extend(recs)
            if not batch:
                positions = {tp: await c.position(tp) for tp in tps}
                if all(positions[tp] >= ends[tp] for tp in tps):
                    break
    finally:
        await c.stop()
    return out


def pct(values: Sequence[float], q: float) -> float:
    """Percentile q in [0, 100] (nearest rank); 0.0 for an empty sequence."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary_ms(values_s: Sequence[float]) -> str:
    """'p50/p99/max/mean' of durations given in seconds, printed in milliseconds."""
    if not values_s:
        return "n/a"
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms, "
        f"mean {statistics.fmean(ms):.2f} ms (n={len(ms)})"
    )
