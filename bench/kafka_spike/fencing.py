"""Experiment 2: zombie fencing of transactional producers in aiokafka.

    .venv/bin/python bench/kafka_spike/fencing.py [--bootstrap 127.0.0.1:9092] [--skip-timeout]

Scenarios (each with a fresh transactional.id):

  in-txn       A has an open transaction with a record sent; B (same id) starts; then A sends
               again, and A commits.
  idle         A committed and is idle; B starts; A begins a new transaction and sends.
  send-then-commit  A is fenced while idle; begins, send()s without awaiting delivery, commits.
  commit-only  A has an open transaction; B starts; A calls commit_transaction() directly.
  offsets      A has an open transaction; B starts; A calls send_offsets_to_transaction().
  after-fence  what every further call on the fenced producer A raises, and whether stop() works.
  visibility   what a read_committed reader and a group's committed offset show for
               A's open/aborted/committed transactions, including the order "fetch committed
               offset, then fence" vs "fence, then fetch" (the eos-alpha hand-over).
  timeout      A uses transaction_timeout_ms=2000 and stays in its transaction for 15 s:
               the broker aborts it; what does A's commit raise? (skip with --skip-timeout)

Prints one line per observation: the call, the exception class (module.qualname), its message,
and the producer's internal TransactionManager state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from common import base_parser, create_topics, drain, suffix


def _state(p: AIOKafkaProducer) -> str:
    tm = p._txn_manager
    return tm.state.name if tm is not None else "-"


async def attempt(
    label: str, producer: AIOKafkaProducer | None, aw: Awaitable[Any], timeout: float = 20
) -> str:
    """Await aw, print what happened, and return the exception class name ('ok' if none)."""
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(aw, timeout)
        outcome, msg = "ok", ""
    except Exception as exc:  # we want to see exactly what is raised
        outcome = f"{type(exc).__module__}.{type(exc).__qualname__}"
        msg = str(exc)[:110]
        if exc.__cause__ is not None:
            msg += f"  (cause: {type(exc.__cause__).__name__})"
    dt = (time.perf_counter() - t0) * 1000
    state = _state(producer) if producer is not None else "-"
    print(f"  {label:<46} -> {outcome:<40} {dt:8.1f} ms  state={state}  {msg}", flush=True)
    return outcome.rsplit(".", 1)[-1]


async def new_producer(bootstrap: str, tid: str, **kw: Any) -> tuple[AIOKafkaProducer, float]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid, **kw)
    t0 = time.perf_counter()
    await p.start()  # InitProducerId: fences older producers of tid, aborts their open transaction
    return p, time.perf_counter() - t0


async def scenario_first_txn(bootstrap: str, topic: str) -> None:
    print("first transaction on this broker (coordinator and __transaction_state may need creating):")
    p, t_start = await new_producer(bootstrap, f"first-{suffix()}")
    t0 = time.perf_counter()
    await p.begin_transaction()
    await p.send_and_wait(topic, b"x", partition=0)
    t_send = time.perf_counter() - t0
    t1 = time.perf_counter()
    await p.commit_transaction()
    t_commit = time.perf_counter() - t1
    print(
        f"  start() {t_start * 1000:.1f} ms, begin+send {t_send * 1000:.1f} ms, commit {t_commit * 1000:.1f} ms"
    )
    p2, t_start2 = await new_producer(bootstrap, f"second-{suffix()}")
    t0 = time.perf_counter()
    async with p2.transaction():
        await p2.send_and_wait(topic, b"y", partition=0)
    print(
        f"  second producer: start() {t_start2 * 1000:.1f} ms, whole txn {(time.perf_counter() - t0) * 1000:.1f} ms"
    )
    await p.stop()
    await p2.stop()


async def scenario_in_txn(bootstrap: str, topic: str) -> None:
    print("in-txn: A sends in an open transaction, B starts with the same transactional_id")
    tid = f"fence-{suffix()}"
    a, _ = await new_producer(bootstrap, tid)
    await a.begin_transaction()
    await a.send_and_wait(topic, b"A-1", partition=0)
    b, t_b = await new_producer(bootstrap, tid)
    print(f"  B.start() took {t_b * 1000:.1f} ms (A's open transaction is aborted by the coordinator)")
    await attempt("A.send_and_wait() after B.start()", a, a.send_and_wait(topic, b"A-2", partition=0))
    await attempt("A.commit_transaction()", a, a.commit_transaction())
    await attempt("A.stop()", a, a.stop())
    async with b.transaction():
        await b.send_and_wait(topic, b"B-1", partition=0)
    await b.stop()


async def scenario_idle(bootstrap: str, topic: str) -> None:
    print("idle: A committed earlier and is idle, B starts, A begins a new transaction")
    tid = f"fence-{suffix()}"
    a, _ = await new_producer(bootstrap, tid)
    async with a.transaction():
        await a.send_and_wait(topic, b"A-0", partition=0)
    b, _ = await new_producer(bootstrap, tid)
    await attempt("A.begin_transaction()", a, a.begin_transaction())
    await attempt("A.send() (enqueue only)", a, a.send(topic, b"A-1", partition=0))
    await attempt("A.send_and_wait()", a, a.send_and_wait(topic, b"A-2", partition=0))
    await attempt("A.commit_transaction()", a, a.commit_transaction())
    await attempt("A.abort_transaction()", a, a.abort_transaction())
    await attempt("A.stop()", a, a.stop())
    await b.stop()


async def scenario_send_then_commit(bootstrap: str, topic: str) -> None:
    print("send-then-commit: A is fenced while idle, then begins, send()s without awaiting delivery, commits")
    tid = f"fence-{suffix()}"
    a, _ = await new_producer(bootstrap, tid)
    async with a.transaction():
        await a.send_and_wait(topic, b"A-0", partition=0)
    b, _ = await new_producer(bootstrap, tid)
    await a.begin_transaction()
    fut = await a.send(topic, b"A-1", partition=0)
    await asyncio.sleep(0.2)  # delivery fails in the background meanwhile
    await attempt("A.commit_transaction()", a, a.commit_transaction())
    await attempt("the send() delivery future", a, fut)
    await attempt("A.stop()", a, a.stop())
    await b.stop()


async def scenario_commit_only(bootstrap: str, topic: str) -> None:
    print("commit-only: A has an open transaction, B starts, A commits without sending again")
    tid = f"fence-{suffix()}"
    a, _ = await new_producer(bootstrap, tid)
    await a.begin_transaction()
    await a.send_and_wait(topic, b"A-1", partition=0)
    b, _ = await new_producer(bootstrap, tid)
    await attempt("A.commit_transaction()", a, a.commit_transaction())
    await attempt("A.begin_transaction() afterwards", a, a.begin_transaction())
    await attempt("A.stop()", a, a.stop())
    await b.stop()


async def scenario_offsets(bootstrap: str, topic: str, group: str) -> None:
    print("offsets: A has an open transaction, B starts, A calls send_offsets_to_transaction()")
    tid = f"fence-{suffix()}"
    a, _ = await new_producer(bootstrap, tid)
    await a.begin_transaction()
    await a.send_and_wait(topic, b"A-1", partition=1)
    b, _ = await new_producer(bootstrap, tid)
    await attempt(
        "A.send_offsets_to_transaction()",
        a,
        a.send_offsets_to_transaction({TopicPartition(topic, 0): 5}, group),
    )
    await attempt("A.commit_transaction()", a, a.commit_transaction())
    await attempt("A.stop()", a, a.stop())
    await b.stop()


async def scenario_abortable(bootstrap: str, topic: str) -> None:
    print("abort after fencing: can a fenced A abort cleanly?")
    tid = f"fence-{suffix()}"
    a, _ = await new_producer(bootstrap, tid)
    await a.begin_transaction()
    await a.send_and_wait(topic, b"A-1", partition=0)
    b, _ = await new_producer(bootstrap, tid)
    await attempt("A.abort_transaction()", a, a.abort_transaction())
    await attempt("A.stop()", a, a.stop())
    await b.stop()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return await c.committed(tp)
    finally:
        await c.stop()


async def scenario_visibility(bootstrap: str, topic: str, out: str, group: str) -> None:
    print("visibility: committed offsets and read_committed output around fencing")
    tid = f"vis-{suffix()}"
    tp = TopicPartition(topic, 0)
    a, _ = await new_producer(bootstrap, tid)

    await a.begin_transaction()
    await a.send_and_wait(out, b"txn1", partition=0)
    await a.send_offsets_to_transaction({tp: OffsetAndMetadata(10, "")}, group)
    print(
        f"  txn1 open (offset 10 pending):       committed={await committed(bootstrap, group, tp)}  "
        f"read_committed output={len(await drain(bootstrap, out, idle_ms=300, max_wait_s=2))} records"
    )
    await a.commit_transaction()
    print(
        f"  txn1 committed:                      committed={await committed(bootstrap, group, tp)}  "
        f"read_committed output={len(await drain(bootstrap, out, idle_ms=300))} records"
    )

    # hand-over, wrong order: the new owner reads the committed offset *before* fencing
    await a.begin_transaction()
    await a.send_and_wait(out, b"txn2", partition=0)
    await a.send_offsets_to_transaction({tp: 20}, group)
    seen_before_fence = await committed(bootstrap, group, tp)
    await a.commit_transaction()  # the zombie's commit still succeeds: nobody fenced it yet
    print(
        f"  fetch-then-fence: new owner read {seen_before_fence}, zombie then committed 20 -> the new owner "
        f"would re-process 10..19 (duplicates); committed now={await committed(bootstrap, group, tp)}"
    )

    # hand-over, right order: fence first (start() = InitProducerId), then read the committed offset
    await a.begin_transaction()
    await a.send_and_wait(out, b"txn3", partition=0)
    await a.send_offsets_to_transaction({tp: 30}, group)
    b, t_b = await new_producer(bootstrap, tid)
    seen_after_fence = await committed(bootstrap, group, tp)
    res = await attempt("zombie A.commit_transaction() after fence", a, a.commit_transaction())
    print(
        f"  fence-then-fetch: B.start() {t_b * 1000:.1f} ms, new owner read {seen_after_fence} "
        f"(txn3 aborted), zombie commit -> {res}"
    )
    await a.stop()
    vals = [r.value for r in await drain(bootstrap, out, idle_ms=300)]
    print(f"  read_committed output now: {vals}")
    await b.stop()


async def scenario_timeout(bootstrap: str, topic: str) -> None:
    print("timeout: transaction_timeout_ms=2000, A stays 15 s in its transaction")
    tid = f"timeout-{suffix()}"
    a, _ = await new_producer(bootstrap, tid, transaction_timeout_ms=2000)
    await a.begin_transaction()
    await a.send_and_wait(topic, b"A-1", partition=2)
    t0 = time.perf_counter()
    # watch the partition's last stable offset: it moves once the broker aborts the transaction
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await c.start()
    tp = TopicPartition(topic, 2)
    lso0 = (await c.end_offsets([tp]))[tp]
    aborted_after = None
    while time.perf_counter() - t0 < 15:
        await asyncio.sleep(0.5)
        if (await c.end_offsets([tp]))[tp] != lso0 and aborted_after is None:
            aborted_after = time.perf_counter() - t0
    await c.stop()
    print(f"  broker aborted the expired transaction after ~{aborted_after} s (LSO moved)")
    await attempt("A.send_and_wait() after expiry", a, a.send_and_wait(topic, b"A-2", partition=2))
    await attempt("A.commit_transaction() after expiry", a, a.commit_transaction())
    await attempt("A.stop()", a, a.stop())


async def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--skip-timeout", action="store_true", help="skip the 15 s transaction-timeout scenario"
    )
    args = parser.parse_args()
    sfx = suffix()
    topic, out, group = f"fence-in-{sfx}", f"fence-out-{sfx}", f"fence-group-{sfx}"
    await create_topics(args.bootstrap, {topic: 3, out: 1})
    await scenario_first_txn(args.bootstrap, topic)
    await scenario_in_txn(args.bootstrap, topic)
    await scenario_idle(args.bootstrap, topic)
    await scenario_send_then_commit(args.bootstrap, topic)
    await scenario_commit_only(args.bootstrap, topic)
    await scenario_offsets(args.bootstrap, topic, group)
    await scenario_abortable(args.bootstrap, topic)
    await scenario_visibility(args.bootstrap, topic, out, group)
    if not args.skip_timeout:
        await scenario_timeout(args.bootstrap, topic)


if __name__ == "__main__":
    asyncio.run(main())
