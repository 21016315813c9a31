"""Experiment 4: transactional producer throughput and commit latency on this machine.

    .venv/bin/python bench/kafka_spike/perf.py [--bootstrap 127.0.0.1:9092] [--seconds 5]
        [--sizes 1,10,100,1000] [--backoffs 100,10] [--value-bytes 100]

Cases (each runs for --seconds, on fresh topics):

  single      one transactional producer; each transaction = N records to one partition of
              ``out`` + send_offsets_to_transaction() for one input partition + commit.
              Repeated for each retry_backoff_ms in --backoffs (aiokafka's default is 100 ms;
              it is the delay before retrying a produce that the broker answered with
              NOT_ENOUGH_REPLICAS, see the notes).
  single-nooffsets   the same without send_offsets_to_transaction (N = 1 and 100).
  rr12        12 transactional producers (one per partition of a 12-partition ``out``), one
              process; transactions issued round-robin, one at a time.
  conc12      the same 12 producers, each running its own loop concurrently (asyncio tasks).
  baseline    non-transactional idempotent producer (acks=all): awaits delivery every N
              records, and fully pipelined.

Reported: transactions/s, records/s, commit_transaction() latency p50/p99, the time spent in
send_offsets_to_transaction(), client CPU seconds per wall second, and aiokafka warnings
(retried produce errors) counted by class.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import aiokafka.producer.sender
from aiokafka import AIOKafkaProducer, TopicPartition
from common import base_parser, create_topics, pct, suffix


class WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        key = msg.rsplit("Error: ", 1)[-1] if "Error: " in msg else msg[:60]
        self.counts[key.replace("<class 'aiokafka.errors.", "").replace("'>", "")] += 1


WARN = WarningCounter()


@dataclass
class Stats:
    label: str
    txns: int = 0
    records: int = 0
    commit_s: list[float] = field(default_factory=list)
    offsets_s: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    warnings: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        c = [x * 1000 for x in self.commit_s]
        o = [x * 1000 for x in self.offsets_s]
        s = (
            f"{self.label:<34} {self.txns / self.wall:9.1f} txn/s {self.records / self.wall:10.0f} rec/s"
            f"  commit p50 {pct(c, 50):6.2f} p99 {pct(c, 99):7.2f} ms"
        )
        if o:
            s += f"  send_offsets p50 {pct(o, 50):5.2f} ms"
        s += f"  cpu {self.cpu / self.wall:4.2f}"
        if self.warnings:
            s += f"  warnings {self.warnings}"
        return s


def value(n: int) -> bytes:
    return b"v" * n


async def txn_producer(bootstrap: str, tid: str, backoff_ms: int) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid, retry_backoff_ms=backoff_ms)
    await p.start()
    return p


async def one_txn(
    p: AIOKafkaProducer, st: Stats, out: str, partition: int, n: int, val: bytes,
    offsets_tp: TopicPartition | None, group: str, seq: int,
) -> None:  # fmt: skip
    await p.begin_transaction()
    for i in range(n):
        await p.send(out, val, key=b"key-%d" % i, partition=partition)
    if offsets_tp is not None:
        t = time.perf_counter()
        await p.send_offsets_to_transaction({offsets_tp: seq + 1}, group)
        st.offsets_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    await p.commit_transaction()
    st.commit_s.append(time.perf_counter() - t)
    st.txns += 1
    st.records += n


class Measure:
    """Context manager filling wall/cpu/warnings of a Stats."""

    def __init__(self, st: Stats) -> None:
        self.st = st

    def __enter__(self) -> Stats:
        WARN.counts.clear()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self.st

    def __exit__(self, *exc: object) -> None:
        self.st.wall = time.perf_counter() - self.t0
        self.st.cpu = time.process_time() - self.c0
        self.st.warnings = dict(WARN.counts)
        print(self.st.line(), flush=True)


async def case_single(
    bootstrap: str, seconds: float, n: int, backoff: int, val: bytes, with_offsets: bool
) -> None:
    sfx = suffix()
    out, inp, group = f"perf-out-{sfx}", f"perf-in-{sfx}", f"perf-g-{sfx}"
    await create_topics(bootstrap, {out: 1, inp: 1})
    p = await txn_producer(bootstrap, f"perf-{sfx}", backoff)
    tp = TopicPartition(inp, 0) if with_offsets else None
    # warm-up: first transaction registers the partition/group with the coordinator
    await one_txn(p, Stats("warmup"), out, 0, 1, val, tp, group, 0)
    label = f"single N={n} backoff={backoff}" + ("" if with_offsets else " no-offsets")
    with Measure(Stats(label)) as st:
        deadline = time.perf_counter() + seconds
        seq = 1
        while time.perf_counter() < deadline:
            await one_txn(p, st, out, 0, n, val, tp, group, seq)
            seq += 1
    await p.stop()


async def case_12(bootstrap: str, seconds: float, n: int, backoff: int, val: bytes, concurrent: bool) -> None:
    sfx = suffix()
    out, inp, group = f"perf12-out-{sfx}", f"perf12-in-{sfx}", f"perf12-g-{sfx}"
    await create_topics(bootstrap, {out: 12, inp: 12})
    t0 = time.perf_counter()
    prods = await asyncio.gather(*(txn_producer(bootstrap, f"perf12-{sfx}-{i}", backoff) for i in range(12)))
    t_start = time.perf_counter() - t0
    tps = [TopicPartition(inp, i) for i in range(12)]
    await asyncio.gather(
        *(one_txn(p, Stats("w"), out, i, 1, val, tps[i], group, 0) for i, p in enumerate(prods))
    )
    label = f"{'conc12' if concurrent else 'rr12'} N={n} backoff={backoff}"
    with Measure(Stats(label)) as st:
        deadline = time.perf_counter() + seconds
        if concurrent:

            async def loop(i: int) -> None:
                seq = 1
                while time.perf_counter() < deadline:
                    await one_txn(prods[i], st, out, i, n, val, tps[i], group, seq)
                    seq += 1

            await asyncio.gather(*(loop(i) for i in range(12)))
        else:
            seq = 1
            while time.perf_counter() < deadline:
                for i, p in enumerate(prods):
                    await one_txn(p, st, out, i, n, val, tps[i], group, seq)
                seq += 1
    print(f"{'':<34} (starting the 12 producers concurrently took {t_start * 1000:.0f} ms)")
    await asyncio.gather(*(p.stop() for p in prods))


async def case_baseline(bootstrap: str, seconds: float, n: int | None, val: bytes) -> None:
    sfx = suffix()
    out = f"perf-base-{sfx}"
    await create_topics(bootstrap, {out: 1})
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await p.start()
    await p.send_and_wait(out, val, partition=0)
    label = f"baseline idempotent N={n or 'pipelined'}"
    with Measure(Stats(label)) as st:
        deadline = time.perf_counter() + seconds
        if n is None:
            futs = []
            while time.perf_counter() < deadline:
                for i in range(1000):
                    futs.append(await p.send(out, val, key=b"key-%d" % i, partition=0))
                st.records += 1000
            await asyncio.gather(*futs)
        else:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                futs = [await p.send(out, val, key=b"key-%d" % i, partition=0) for i in range(n)]
                await asyncio.gather(*futs)
                st.commit_s.append(time.perf_counter() - t)  # "commit" = wait for delivery of the batch
                st.txns += 1
                st.records += n
    await p.stop()


async def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--backoffs", default="100,10")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--cases", default="single,single-nooffsets,rr12,conc12,baseline")
    parser.add_argument(
        "--concurrent-txn-backoff-ms",
        type=float,
        default=None,
        help="patch aiokafka.producer.sender.BACKOFF_OVERRIDE (default 20 ms): the wait before retrying "
        "AddPartitionsToTxn answered CONCURRENT_TRANSACTIONS, i.e. right after the previous commit",
    )
    args = parser.parse_args()
    if args.concurrent_txn_backoff_ms is not None:
        aiokafka.producer.sender.BACKOFF_OVERRIDE = args.concurrent_txn_backoff_ms / 1000  # type: ignore[attr-defined]
    logging.getLogger("aiokafka").addHandler(WARN)
    logging.getLogger("aiokafka").propagate = False
    sizes = [int(x) for x in args.sizes.split(",")]
    backoffs = [int(x) for x in args.backoffs.split(",")]
    cases = set(args.cases.split(","))
    val = value(args.value_bytes)
    b, s = args.bootstrap, args.seconds
    print(
        f"value {args.value_bytes} B, {s:.0f} s per case; commit = commit_transaction() (baseline: delivery of N); "
        f"BACKOFF_OVERRIDE {aiokafka.producer.sender.BACKOFF_OVERRIDE * 1000:g} ms"  # type: ignore[attr-defined]
    )
    if "single" in cases:
        for backoff in backoffs:
            for n in sizes:
                await case_single(b, s, n, backoff, val, with_offsets=True)
    if "single-nooffsets" in cases:
        for n in [1, 100]:
            await case_single(b, s, n, backoffs[-1], val, with_offsets=False)
    if "rr12" in cases:
        for n in [10, 100]:
            await case_12(b, s, n, backoffs[-1], val, concurrent=False)
    if "conc12" in cases:
        for backoff in backoffs:
            for n in [10, 100]:
                await case_12(b, s, n, backoff, val, concurrent=True)
    if "baseline" in cases:
        for n in [1, 100, 1000]:
            await case_baseline(b, s, n, val)
        await case_baseline(b, s, None, val)


if __name__ == "__main__":
    asyncio.run(main())
