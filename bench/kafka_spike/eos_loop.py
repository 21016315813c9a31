"""Experiment 1: consume-transform-produce with one transactional producer per input partition
("eos-alpha"), killed with SIGKILL mid-transaction and restarted.

    .venv/bin/python bench/kafka_spike/eos_loop.py [--bootstrap 127.0.0.1:9092] [--records 20000]
        [--partitions 4] [--static] [--random-kills 3] [--no-guard]

The orchestrator (default mode):

1. creates ``in`` (P partitions), ``out`` (P) and ``changelog`` (P, cleanup.policy=compact);
2. writes N input records ``"%08d" % i`` to partition i % P (idempotent producer, acks=all);
3. runs a worker subprocess (``worker`` mode, below) and SIGKILLs it:
   - while it holds a transaction open after producing its output (records in the log,
     uncommitted);
   - while it holds a transaction open after ``send_offsets_to_transaction`` (offsets pending);
   - at random instants (``--random-kills``), whatever it is doing;
   then runs it to completion;
4. verifies with read_committed readers: every input id appears exactly once in ``out``;
   per partition the sequence numbers written by the worker's state (restored from the
   changelog on every restart) are exactly 1..n with no gap and no repeat; the changelog's
   last ``__count`` per partition equals n; and the group's committed offsets equal the input
   end offsets.

The worker: a consumer (group ``G``, ``isolation_level="read_committed"``,
``enable_auto_commit=False``) subscribed to ``in`` with a ``ConsumerRebalanceListener``. On
assignment, for each partition p it (1) starts a producer with
``transactional_id=f"{app}-{group}-{topic}-{p}"`` (InitProducerId fences a previous owner and
aborts its open transaction), (2) restores its state (a counter) from changelog partition p,
(3) only then reads the committed offset and seeks to it. Each batch of partition p is one
transaction on p's producer: output records to ``out``/p, state updates to ``changelog``/p,
``send_offsets_to_transaction({tp: last + 1}, group)``, ``commit_transaction()``. Records whose
offset is below the partition's next expected offset are dropped (the "offset guard", see
``Worker.__init__``); ``--no-guard`` disables it and shows the duplicates it prevents.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from common import base_parser, create_topics, drain, suffix

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, flush=True)


class CountingHandler(logging.Handler):
    """Counts aiokafka warnings by error class instead of printing each one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.counts[msg.rsplit("Error: ", 1)[-1] if "Error: " in msg else msg[:80]] += 1


# --------------------------------------------------------------------------------------------
# worker
# --------------------------------------------------------------------------------------------


class Worker(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.consumer: AIOKafkaConsumer | None = None
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self.counts: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}
        # offset guard: the next input offset each owned partition must process. aiokafka installs
        # the new assignment and starts fetching from the committed offset *it* read (before our
        # fence) before on_partitions_assigned has finished (observed: even before it started), so
        # getmany() can hand out records the callback's seek() then rewinds under: without the
        # guard those records are processed twice (--no-guard reproduces it).
        self.next_offset: dict[TopicPartition, int] = {}
        self.dropped = 0
        self.in_callback = False
        self.lock = asyncio.Lock()  # a rebalance callback never runs in the middle of a transaction
        self.txns = 0

    def tid(self, tp: TopicPartition) -> str:
        return f"{self.args.app}-{self.args.group}-{tp.topic}-{tp.partition}"

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            for tp in revoked:
                p = self.producers.pop(tp, None)
                if p is not None:
                    await p.stop()
                self.counts.pop(tp, None)
                self.next_offset.pop(tp, None)
            log(f"REVOKED {sorted(tp.partition for tp in revoked)}")

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        self.in_callback = True
        async with self.lock:
            t0 = time.perf_counter()
            for tp in sorted(assigned):
                t1 = time.perf_counter()
                prod = AIOKafkaProducer(
                    bootstrap_servers=self.args.bootstrap,
                    transactional_id=self.tid(tp),
                    transaction_timeout_ms=self.args.transaction_timeout_ms,
                    linger_ms=5,
                )
                await prod.start()  # fences the previous owner of tp
                t_init = time.perf_counter() - t1
                self.producers[tp] = prod
                t2 = time.perf_counter()
                self.counts[tp], n_restored = await self.restore(tp.partition)
                t_restore = time.perf_counter() - t2
                committed = await self.consumer.committed(tp)  # after the fence: stable
                self.consumer.seek(tp, committed or 0)
                self.next_offset[tp] = committed or 0
                self.ends[tp] = (await self.consumer.end_offsets([tp]))[tp]
                log(
                    f"ASSIGNED p{tp.partition} init {t_init * 1000:.0f} ms, restored count={self.counts[tp]} "
                    f"from {n_restored} changelog records in {t_restore * 1000:.0f} ms, committed={committed}"
                )
            log(
                f"ASSIGNED_ALL {sorted(tp.partition for tp in assigned)} in {(time.perf_counter() - t0) * 1000:.0f} ms"
            )
        self.in_callback = False

    async def restore(self, partition: int) -> tuple[int, int]:
        """State of one partition = the last committed ``__count`` in its changelog partition."""
        c = AIOKafkaConsumer(
            bootstrap_servers=self.args.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await c.start()
        try:
            tp = TopicPartition(self.args.changelog, partition)
            # end_offsets() *before* assign(): once a partition is assigned, aiokafka long-polls it
            # and a ListOffsets on the same connection waits behind the Fetch (fetch_max_wait_ms)
            end = (await c.end_offsets([tp]))[tp]  # read_committed: the last stable offset
            c.assign([tp])
            await c.seek_to_beginning(tp)
            count, n = 0, 0
            while await c.position(tp) < end:
                for recs in (await c.getmany(tp, timeout_ms=200)).values():
                    for r in recs:
                        n += 1
                        if r.key == b"__count":
                            count = int(r.value)
            return count, n
        finally:
            await c.stop()

    async def process(self, tp: TopicPartition, recs: list, during_callback: bool) -> None:  # type: ignore[type-arg]
        async with self.lock:
            prod = self.producers.get(tp)
            if prod is None:  # revoked meanwhile
                return
            if not self.args.no_guard:
                fresh = [r for r in recs if r.offset >= self.next_offset[tp]]
                if len(fresh) < len(recs):
                    self.dropped += len(recs) - len(fresh)
                    log(
                        f"GUARD p{tp.partition} dropped offsets {recs[0].offset}..{recs[-1].offset} "
                        f"(next is {self.next_offset[tp]}); getmany() returned them while "
                        f"on_partitions_assigned was running: {during_callback}"
                    )
                if not fresh:
                    return
                recs = fresh
            self.txns += 1
            n = self.counts[tp]
            await prod.begin_transaction()
            for r in recs:
                n += 1
                await prod.send(self.args.output, r.value + b"|%d" % n, key=r.key, partition=tp.partition)
                await prod.send(self.args.changelog, b"%d" % n, key=r.value, partition=tp.partition)
            await prod.send(self.args.changelog, b"%d" % n, key=b"__count", partition=tp.partition)
            if self.args.hold_after_produce == self.txns:
                await prod.flush()
                log(f"HOLDING after produce p{tp.partition} txn {self.txns}")
                await asyncio.sleep(3600)
            await prod.send_offsets_to_transaction({tp: recs[-1].offset + 1}, self.args.group)
            if self.args.hold_after_offsets == self.txns:
                await prod.flush()
                log(f"HOLDING after send_offsets p{tp.partition} txn {self.txns}")
                await asyncio.sleep(3600)
            await prod.commit_transaction()
            self.counts[tp] = n
            self.next_offset[tp] = recs[-1].offset + 1

    async def run(self) -> None:
        a = self.args
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=a.bootstrap,
            group_id=a.group,
            group_instance_id=a.instance_id or None,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=a.session_timeout_ms,
            heartbeat_interval_ms=a.session_timeout_ms // 3,
            max_poll_records=a.batch,
            fetch_max_wait_ms=100,
        )
        await self.consumer.start()
        self.consumer.subscribe([a.input], listener=self)
        log(f"STARTED pid {os.getpid()}")
        processed = 0
        idle_since: float | None = None
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=300, max_records=a.batch)
                during_callback = self.in_callback
                for tp, recs in batch.items():
                    await self.process(tp, recs, during_callback)
                    processed += len(recs)
                if batch:
                    idle_since = None
                    continue
                if a.exit_when_done and self.producers:
                    done = True
                    for tp in list(self.producers):
                        if await self.consumer.position(tp) < self.ends.get(tp, 1 << 62):
                            done = False
                    if done:
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since > 1.0:
                            break
        finally:
            log(
                f"EXIT processed {processed} records in {self.txns} transactions, offset guard dropped {self.dropped}"
            )
            await self.consumer.stop()
            for p in self.producers.values():
                await p.stop()


# --------------------------------------------------------------------------------------------
# orchestrator
# --------------------------------------------------------------------------------------------


async def seed(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await p.start()
    try:
        futs = [await p.send(topic, b"%08d" % i, key=b"k%d" % i, partition=i % partitions) for i in range(n)]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


class Run:
    """One worker subprocess whose stdout we follow line by line."""

    def __init__(self, args: argparse.Namespace, names: dict[str, str], extra: list[str]) -> None:
        cmd = [
            sys.executable, str(HERE / "eos_loop.py"), "worker",
            "--bootstrap", args.bootstrap, "--app", names["app"], "--group", names["group"],
            "--input", names["input"], "--output", names["output"], "--changelog", names["changelog"],
            "--batch", str(args.batch), "--session-timeout-ms", str(args.session_timeout_ms),
            *(["--instance-id", "worker-1"] if args.static else []),
            *(["--no-guard"] if args.no_guard else []),
            *extra,
        ]  # fmt: skip
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.first_assigned: float | None = None

    def lines(self):  # type: ignore[no-untyped-def]
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            if line.startswith("ASSIGNED_ALL") and self.first_assigned is None:
                self.first_assigned = time.monotonic() - self.t0
            yield line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def orchestrate(args: argparse.Namespace) -> None:
    sfx = suffix()
    names = {
        "app": "spike",
        "group": f"eos-{sfx}",
        "input": f"eos-in-{sfx}",
        "output": f"eos-out-{sfx}",
        "changelog": f"eos-changelog-{sfx}",
    }
    P, N = args.partitions, args.records
    asyncio.run(
        create_topics(
            args.bootstrap,
            {names["input"]: P, names["output"]: P, names["changelog"]: P},
            {names["changelog"]: {"cleanup.policy": "compact"}},
        )
    )
    asyncio.run(seed(args.bootstrap, names["input"], N, P))
    log(f"seeded {N} records into {names['input']} ({P} partitions); static membership={args.static}")

    plans: list[tuple[str, list[str]]] = [
        ("kill -9 while holding a txn after produce", ["--hold-after-produce", "5"]),
        ("kill -9 while holding a txn after send_offsets", ["--hold-after-offsets", "7"]),
    ]
    rng = random.Random(args.seed)
    for i in range(args.random_kills):
        plans.append(
            (f"kill -9 at a random instant #{i + 1}", [f"--random-kill:{rng.uniform(0.3, 1.5):.2f}"])
        )
    plans.append(("run to completion", ["--exit-when-done"]))

    t_all = time.monotonic()
    for label, extra in plans:
        random_kill = None
        if extra and extra[0].startswith("--random-kill:"):
            random_kill = float(extra[0].split(":")[1])
            extra = []
        run = Run(args, names, extra)
        log(f"--- {label}")
        killed_at = None
        for line in run.lines():
            if line.startswith(("ASSIGNED", "HOLDING", "EXIT", "REVOKED", "WARNINGS", "GUARD")):
                log(f"    [{time.monotonic() - run.t0:6.2f}s] {line}")
            if line.startswith("HOLDING"):
                run.kill()
                killed_at = time.monotonic() - run.t0
                break
            if line.startswith("ASSIGNED_ALL") and random_kill is not None:
                time.sleep(random_kill)  # the worker keeps processing; its stdout pipe buffers
                run.kill()
                killed_at = time.monotonic() - run.t0
                break
        if killed_at is None:
            run.proc.wait()
        log(
            f"    first assignment {run.first_assigned:.2f}s after spawn"
            + (f", SIGKILL at {killed_at:.2f}s" if killed_at is not None else "")
        )
    log(f"all runs: {time.monotonic() - t_all:.1f}s")
    asyncio.run(verify(args.bootstrap, names, N, P))


async def verify(bootstrap: str, names: dict[str, str], n: int, partitions: int) -> None:
    out = await drain(bootstrap, names["output"])
    ids = [r.value.split(b"|")[0] for r in out]
    dup = [k for k, c in Counter(ids).items() if c > 1]
    missing = n - len(set(ids))
    seqs: dict[int, list[int]] = defaultdict(list)
    for r in out:
        seqs[r.partition].append(int(r.value.split(b"|")[1]))
    seq_ok = all(seqs[p] == list(range(1, len(seqs[p]) + 1)) for p in seqs)
    log(
        f"output (read_committed): total {len(out)}, distinct {len(set(ids))}, duplicates {len(dup)}, missing {missing}"
    )
    log(f"per-partition state sequence 1..n without gap or repeat: {seq_ok}")
    raw = await drain(bootstrap, names["output"], isolation_level="read_uncommitted")
    log(f"output (read_uncommitted, aborted records included): {len(raw)} records")

    cl = await drain(bootstrap, names["changelog"])
    last: dict[int, int] = {}
    for r in cl:
        if r.key == b"__count":
            last[r.partition] = int(r.value)
    expected = {p: len(range(p, n, partitions)) for p in range(partitions)}
    log(
        f"changelog __count per partition {dict(sorted(last.items()))}, expected {expected}: {last == expected}"
    )

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=names["group"], enable_auto_commit=False)
    await c.start()
    try:
        committed = {p: await c.committed(TopicPartition(names["input"], p)) for p in range(partitions)}
    finally:
        await c.stop()
    log(f"committed offsets {committed} == input ends {expected}: {committed == expected}")
    ok = len(out) == n and not dup and missing == 0 and seq_ok and last == expected and committed == expected
    log("RESULT: " + ("PASS exactly once" if ok else "FAIL"))
    if not ok:
        sys.exit(1)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "worker"])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="max records per poll (one txn per partition)")
    parser.add_argument("--random-kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--static", action="store_true", help="static membership (group_instance_id)")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    # worker options
    parser.add_argument("--app", default="spike")
    parser.add_argument("--group")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--changelog")
    parser.add_argument("--instance-id")
    parser.add_argument("--transaction-timeout-ms", type=int, default=10000)
    parser.add_argument("--hold-after-produce", type=int, default=0)
    parser.add_argument("--hold-after-offsets", type=int, default=0)
    parser.add_argument("--exit-when-done", action="store_true")
    parser.add_argument(
        "--no-guard", action="store_true", help="disable the offset guard (reproduces duplicates)"
    )
    args = parser.parse_args()
    if args.mode == "worker":
        handler = CountingHandler()
        logging.getLogger("aiokafka").addHandler(handler)
        logging.getLogger("aiokafka").propagate = False
        try:
            asyncio.run(Worker(args).run())
        finally:
            log(f"WARNINGS {dict(handler.counts)}")
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
