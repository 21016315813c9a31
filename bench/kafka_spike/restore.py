"""Experiment 5: changelog restore rate (read a compacted topic from the beginning).

    .venv/bin/python bench/kafka_spike/restore.py [--bootstrap 127.0.0.1:9092] [--records 200000]
        [--value-bytes 100] [--partitions 1,12]

For each partition count, two compacted changelog topics get --records records with distinct
keys (``inst-%08d``, value --value-bytes bytes):

  plain  written by an idempotent producer, fully pipelined;
  txn    written by a transactional producer committing every 1000 records (how the runtime
         writes its changelog: the log then holds commit markers between the batches).

Then each topic is restored: a consumer with no group, ``end_offsets()`` (with read_committed:
the last stable offset), ``assign()`` + ``seek_to_beginning()``, ``getmany()`` until every
partition's ``position()`` reaches its end offset. The restore loop runs three times per topic:

  count   only counts records;
  dict    applies each record to a dict (last value per key);
  sqlite  applies each getmany() batch with ``executemany(INSERT OR REPLACE)`` into a SQLite
          file (WAL, synchronous=NORMAL), one transaction per batch.

It also checks that the position really reaches the end offset although the last offsets of
a transactional log are commit markers (no record is returned for them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import base_parser, create_topics, suffix

COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}


async def write(bootstrap: str, topic: str, n: int, partitions: int, value: bytes, txn: bool) -> float:
    if txn:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"restore-{topic}", linger_ms=5,
                             max_batch_size=65536, retry_backoff_ms=10)  # fmt: skip
    else:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                             max_batch_size=65536)  # fmt: skip
    await p.start()
    t0 = time.perf_counter()
    try:
        if txn:
            for start in range(0, n, 1000):
                async with p.transaction():
                    for i in range(start, min(n, start + 1000)):
                        await p.send(topic, value, key=b"inst-%08d" % i, partition=i % partitions)
        else:
            futs = [
                await p.send(topic, value, key=b"inst-%08d" % i, partition=i % partitions) for i in range(n)
            ]
            await asyncio.gather(*futs)
    finally:
        await p.stop()
    return time.perf_counter() - t0


class Sink:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.state: dict[bytes, bytes] = {}
        self.db: sqlite3.Connection | None = None
        self.tmp: Any = None
        if kind == "sqlite":
            self.tmp = tempfile.TemporaryDirectory()
            self.db = sqlite3.connect(os.path.join(self.tmp.name, "state.db"), isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def apply(self, recs: list[Any]) -> None:
        if self.kind == "dict":
            for r in recs:
                self.state[r.key] = r.value
        elif self.db is not None:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(r.key, r.value) for r in recs])
            self.db.execute("COMMIT")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.tmp.cleanup()


async def restore(
    bootstrap: str, topic: str, partitions: int, sink: Sink, **fetch: Any
) -> tuple[int, float, bool]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False,
                         **fetch)  # fmt: skip
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        t0 = time.perf_counter()
        # end_offsets() before assign(): afterwards it would queue behind the long-poll Fetch
        ends = await c.end_offsets(tps)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        n = 0
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500, max_records=10000)
            for recs in batch.values():
                n += len(recs)
                sink.apply(recs)
            for tp in list(remaining):
                if await c.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return n, time.perf_counter() - t0, not remaining
    finally:
        await c.stop()


async def main() -> None:
    parser: argparse.ArgumentParser = base_parser(__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--partitions", default="1,12")
    args = parser.parse_args()
    value = b"s" * args.value_bytes
    n = args.records
    for parts in [int(x) for x in args.partitions.split(",")]:
        for txn in (False, True):
            topic = f"restore-{'txn' if txn else 'plain'}-{parts}p-{suffix()}"
            await create_topics(args.bootstrap, {topic: parts}, {topic: COMPACT})
            w = await write(args.bootstrap, topic, n, parts, value, txn)
            print(
                f"{topic}: wrote {n} records ({args.value_bytes} B values) in {w:.2f}s = {n / w:,.0f} rec/s"
            )
            for kind in ("count", "dict", "sqlite"):
                sink = Sink(kind)
                got, dt, reached = await restore(args.bootstrap, topic, parts, sink)
                sink.close()
                mb = got * (args.value_bytes + 13) / dt / 1e6
                print(f"    restore {kind:<6} {got} records in {dt:.2f}s = {got / dt:>9,.0f} rec/s ({mb:.1f} MB/s payload)"
                      f"  position reached end offset: {reached}")  # fmt: skip
            if parts == 1:
                sink = Sink("count")
                got, dt, _ = await restore(
                    args.bootstrap, topic, parts, sink, max_partition_fetch_bytes=8 * 1048576
                )
                print(f"    restore count, max_partition_fetch_bytes=8 MiB: {got / dt:,.0f} rec/s")


if __name__ == "__main__":
    asyncio.run(main())
