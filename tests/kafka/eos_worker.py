"""A consume-transform-produce worker built from daggerflow.kafka's exactly-once blocks, for test_kafka_eos.py.

    python tests/kafka/eos_worker.py --bootstrap B --app A --group G --input IN --output OUT \
        --changelog CL --partitions P [--instance-id ID] [--batch 100] [--hold-after-produce K] [--exit-when-done]

Each batch of input partition p is one transaction of p's producer: for every record, ``value|seq``
to OUT/p and the state (a per-partition counter ``seq``) to CL/p, then a ``__count`` record,
then the input offset. The counter is restored from CL/p (read_committed) when p is activated,
so the output's per-partition sequence numbers are 1..n without gap or repeat only if state,
output and offsets are committed exactly once together.

Prints (flushed) lines the test follows: ``ACTIVE [partitions]`` when all assigned partitions are
active, ``TXN p n`` after each commit, ``REVOKED [partitions]``, ``HOLDING p`` when it holds a transaction open on purpose
(``--hold-after-produce K``: the K-th transaction, after its output was flushed), ``MIGRATED p``
and ``DONE`` (with ``--exit-when-done``, once every input partition is processed to its end).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from daggerflow.errors import TaskMigrated
from daggerflow.kafka.guard import AssignmentGuard, Fetched
from daggerflow.kafka.rebalance import RebalanceListener
from daggerflow.kafka.settings import consumer_settings
from daggerflow.kafka.task_manager import TaskManager
from daggerflow.kafka.transactions import PartitionTransactions


def say(line: str) -> None:
    print(line, flush=True)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        settings = consumer_settings(args.group, group_instance_id=args.instance_id)
        settings["max_poll_records"] = args.batch
        self.consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, **settings)
        self.transactions = PartitionTransactions(args.bootstrap, args.app, args.group)
        self.guard = AssignmentGuard()
        self.tasks = TaskManager(
            self.consumer, self.transactions, self.guard, restore=self.restore, on_revoked=self.on_revoked
        )
        self.counts: dict[int, int] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.txns = 0

    def lock(self, partition: int) -> asyncio.Lock:
        return self.locks.setdefault(partition, asyncio.Lock())

    async def restore(self, partition: int) -> None:
        """The counter of a partition = its last committed ``__count`` in the changelog."""
        c = AIOKafkaConsumer(
            bootstrap_servers=self.args.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await c.start()
        try:
            tp = TopicPartition(self.args.changelog, partition)
            end = (await c.end_offsets([tp]))[tp]  # before assign(): no wait behind a long poll
            c.assign([tp])
            await c.seek_to_beginning(tp)
            count = 0
            while await c.position(tp) < end:
                for recs in (await c.getmany(tp, timeout_ms=200)).values():
                    for r in recs:
                        if r.key == b"__count":
                            count = int(r.value)
            self.counts[partition] = count
        finally:
            await c.stop()

    async def on_revoked(self, partitions: frozenset[int]) -> None:
        say(f"REVOKED {sorted(partitions)}")
        for p in partitions:
            async with self.lock(p):  # in-flight transactions finish first
                self.counts.pop(p, None)

    async def process(self, fetched: Fetched[Any]) -> None:
        tp = fetched.tp
        p = tp.partition
        async with self.lock(p):
            records = self.guard.admit(fetched)
            producer = self.transactions.get(p)
            if not records or producer is None:
                return
            self.txns += 1
            n = self.counts[p]
            try:
                await producer.begin()
                for r in records:
                    n += 1
                    await producer.send(self.args.output, r.value + b"|%d" % n, key=r.key, partition=p)
                    await producer.send(self.args.changelog, b"%d" % n, key=r.value, partition=p)
                await producer.send(self.args.changelog, b"%d" % n, key=b"__count", partition=p)
                if self.args.delay_ms:
                    await asyncio.sleep(self.args.delay_ms / 1000)  # "work" inside the transaction
                if self.args.hold_after_produce == self.txns:
                    await producer.flush()  # the records reach the log, uncommitted
                    say(f"HOLDING {p}")
                    await asyncio.sleep(3600)
                await producer.commit({tp: records[-1].offset + 1})
            except TaskMigrated:
                say(f"MIGRATED {p}")
                self.counts.pop(p, None)
                await self.tasks.handle_migrated(p)
                return
            except Exception:
                # not fenced: abort, and read the batch again from the last committed offset
                next_offset = records[0].offset
                await producer.abort()
                self.guard.rewind(tp, next_offset)
                self.consumer.seek(tp, next_offset)
                raise
            self.counts[p] = n
            say(f"TXN {p} {n}")

    async def done(self, ends: dict[TopicPartition, int]) -> bool:
        """Every input partition committed to its end, by this worker or another."""
        for tp, end in ends.items():
            if (await self.consumer.committed(tp) or 0) < end:
                return False
        return True

    async def run(self) -> None:
        await self.consumer.start()
        try:
            tps = [TopicPartition(self.args.input, p) for p in range(self.args.partitions)]
            ends = await self.consumer.end_offsets(tps)  # before subscribe: no long poll to wait behind
            self.consumer.subscribe([self.args.input], listener=RebalanceListener(self.tasks))
            announced: frozenset[int] = frozenset()
            while True:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=self.args.batch)
                stamped = self.guard.stamp(batch)  # synchronously after getmany(): rule 2
                await asyncio.gather(*(self.process(f) for f in stamped))
                active = self.tasks.active
                if (
                    active != announced
                    and active
                    and active == {tp.partition for tp in self.consumer.assignment()}
                ):
                    announced = active
                    say(f"ACTIVE {sorted(active)}")
                if self.args.exit_when_done and not stamped and await self.done(ends):
                    say(f"DONE dropped={self.guard.dropped}")
                    return
        finally:
            await self.consumer.stop()
            await self.transactions.close()


async def amain(args: argparse.Namespace) -> None:
    await Worker(args).run()  # aiokafka objects must be created inside the running loop


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--bootstrap", "--app", "--group", "--input", "--output", "--changelog"):
        parser.add_argument(name, required=True)
    parser.add_argument("--partitions", type=int, required=True, help="of the input topic")
    parser.add_argument("--instance-id")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--hold-after-produce", type=int, default=0)
    parser.add_argument("--delay-ms", type=int, default=0, help="sleep in each transaction")
    parser.add_argument("--exit-when-done", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # KIP-890 NOT_ENOUGH_REPLICAS retries are noise
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
