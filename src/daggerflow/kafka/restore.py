"""Restoring a partition's local store from its changelog topic (Kafka Streams' ChangelogReader).

The records-to-store half (``store.changelog.Restorer``) has no Kafka in it; this is the
consumer half: read the changelog partition from the store's checkpoint to the last stable
offset, in chunks, logging progress.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import TopicPartition

from ..store.base import Store
from ..store.changelog import Restorer, RestoreResult

log = logging.getLogger(__name__)


async def restore_from_topic(
    store: Store,
    consumer: Any,
    topic: str,
    partition: int,
    *,
    chunk: int = 10_000,
    timeout: float = 300.0,
    progress_every: float = 5.0,
) -> RestoreResult:
    """Restore ``store`` from changelog ``topic``/``partition``: from its checkpoint + 1
    (or the beginning) to the end offset read before starting; the checkpoint is then
    ``end - 1``, so the next restore starts at ``end``.

    ``consumer`` is a started ``aiokafka.AIOKafkaConsumer`` with no group and
    ``isolation_level="read_committed"``: aborted records are never applied, and the end
    offset is the last stable offset. It is assigned this one partition (other assignments
    are replaced). ``end_offsets`` is called before ``assign`` so it does not queue behind a
    long-poll fetch (docs/kafka-runtime-notes.md, pitfall 8)."""
    tp = TopicPartition(topic, partition)
    restorer = Restorer(store, partition, chunk=chunk)
    checkpoint = restorer.checkpoint()
    start = 0 if checkpoint is None else checkpoint + 1
    t0 = time.perf_counter()
    end = int((await consumer.end_offsets([tp]))[tp])
    if start > end:
        # Not corruption by itself, so the store is kept: the end is the last stable offset,
        # which a transaction left hanging (a broker restart) holds below records the store
        # already has. Wiping would restore less than it holds.
        log.warning("restoring %s/%d: the store's checkpoint %d is beyond the last stable offset %d; "
                    "keeping the store as it is", topic, partition, start - 1, end)  # fmt: skip
    records = 0
    if start < end:
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + timeout
        next_log = time.monotonic() + progress_every
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"restore of {topic}/{partition} stopped at offset {await consumer.position(tp)} "
                    f"of {end} after {timeout} s"
                )
            fetched = await consumer.getmany(tp, timeout_ms=100, max_records=chunk)
            rows = [(r.offset, r.key, r.value) for r in fetched.get(tp, ()) if r.offset < end]
            if rows:
                records += restorer.apply(rows)
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + progress_every
                log.info("restoring %s/%d: %d records, offset %d of %d", topic, partition, records,
                         rows[-1][0] if rows else start, end)  # fmt: skip
        restorer.advance(end - 1)  # the log may end with markers: start at ``end`` next time
    seconds = time.perf_counter() - t0
    log.info("restored %s/%d from offset %d to %d: %d records in %.2f s", topic, partition, start, end,
             records, seconds)  # fmt: skip
    return RestoreResult(partition, start, end, records, seconds)
