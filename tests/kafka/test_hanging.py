"""daggerflow.kafka.hanging against a real broker: DescribeProducers, the WriteTxnMarkers abort and
the reaper's age rule on transactions left open by abandoned producers.

An abandoned transaction is made with a transactional producer (transaction timeout 10 min, so the
broker does not end it during the test) that is stopped without committing: the partition keeps
an open transaction, exactly like the one a broker restart leaves behind. Ages are made without
waiting: records carry an old CreateTime (the producer state's last timestamp is the batch's max
timestamp) and the reaper gets an injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient

from daggerflow.kafka.hanging import (
    Decision,
    HangingTransactions,
    ProducerState,
    TransactionAdminError,
    coordinator_transactions,
    decide,
    describe_producers,
    end_offsets,
    end_transaction,
    group_offsets_partition,
    offsets_partition,
    transaction_decisions,
)

from .txn_support import abort_transaction

pytestmark = pytest.mark.timeout(120)

LONG_TXN_MS = 600_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def topic(broker: str) -> AsyncIterator[str]:
    """A fresh one-partition topic, deleted afterwards."""
    name = unique("hanging")
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture
async def client(broker: str) -> AsyncIterator[Any]:
    c = AIOKafkaClient(bootstrap_servers=broker)
    await c.bootstrap()
    yield c
    await c.close()


async def txn_producer(broker: str) -> AIOKafkaProducer:
    p = AIOKafkaProducer(
        bootstrap_servers=broker, transactional_id=unique("hanging-txn"), transaction_timeout_ms=LONG_TXN_MS
    )
    await p.start()
    return p


async def abandoned_txn(
    broker: str, tp: TopicPartition, n: int, timestamp_ms: int | None = None
) -> tuple[int, int]:
    """Write ``n`` records in a transaction, then stop the producer without committing;
    returns its (producer id, epoch)."""
    p = await txn_producer(broker)
    try:
        await p.begin_transaction()
        for i in range(n):
            await p.send_and_wait(
                tp.topic, b"abandoned %d" % i, partition=tp.partition, timestamp_ms=timestamp_ms
            )
        return p._txn_manager.producer_id, p._txn_manager.producer_epoch
    finally:
        await p.stop()  # aiokafka's stop neither commits nor aborts: the transaction stays open


async def committed_values(broker: str, tp: TopicPartition) -> list[bytes]:
    """The values a group-less read_committed consumer reads up to the LSO."""
    c = AIOKafkaConsumer(bootstrap_servers=broker, isolation_level="read_committed", fetch_max_wait_ms=100)
    await c.start()
    try:
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        out: list[bytes] = []
        async with asyncio.timeout(30):
            while await c.position(tp) < end:
                for recs in (await c.getmany(tp, timeout_ms=200)).values():
                    out.extend(r.value for r in recs)
        return out
    finally:
        await c.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds: a commit returns once the coordinator has decided, and its
    markers reach the partitions a moment later."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def open_txns(states: dict[TopicPartition, list[ProducerState]], tp: TopicPartition) -> dict[int, int]:
    return {s.producer_id: s.current_txn_start_offset for s in states[tp] if s.current_txn_start_offset >= 0}


async def test_describe_producers_shows_the_open_transaction(broker: str, topic: str, client: Any) -> None:
    tp = TopicPartition(topic, 0)
    p = await txn_producer(broker)
    try:
        async with p.transaction():
            await p.send_and_wait(topic, b"before", partition=0)
        await p.begin_transaction()
        await p.send_and_wait(topic, b"open", partition=0)
        pid, epoch = p._txn_manager.producer_id, p._txn_manager.producer_epoch

        (state,) = (await describe_producers(client, [tp]))[tp]
        assert (state.producer_id, state.producer_epoch) == (pid, epoch)
        # offset 0 is the first transaction's record, 1 its commit marker: the open one starts at 2
        assert state.current_txn_start_offset == 2
        assert state.last_sequence == 1
        assert abs(state.last_timestamp_ms - time.time() * 1000) < 60_000
        assert await end_offsets(client, [tp]) == {tp: (2, 3)}

        await p.commit_transaction()

        async def committed() -> bool:
            return await end_offsets(client, [tp]) == {tp: (4, 4)}

        await eventually(committed)
        (state,) = (await describe_producers(client, [tp]))[tp]
        assert (state.producer_id, state.current_txn_start_offset) == (pid, -1)
    finally:
        await p.stop()


async def test_describe_producers_error_names_the_partition(client: Any, topic: str) -> None:
    missing = TopicPartition(topic, 7)  # the topic has one partition
    with pytest.raises(TransactionAdminError) as info:
        await describe_producers(client, [missing])
    assert info.value.tp == missing


async def test_abort_transaction_of_an_abandoned_producer(broker: str, topic: str, client: Any) -> None:
    tp = TopicPartition(topic, 0)
    pid, epoch = await abandoned_txn(broker, tp, 3)
    assert await end_offsets(client, [tp]) == {tp: (0, 3)}
    (state,) = (await describe_producers(client, [tp]))[tp]
    assert (state.producer_id, state.producer_epoch, state.current_txn_start_offset) == (pid, epoch, 0)

    await abort_transaction(client, tp, state)

    lso, hw = (await end_offsets(client, [tp]))[tp]
    assert lso == hw == 4  # 3 records + the abort marker
    assert open_txns(await describe_producers(client, [tp]), tp) == {}
    later = await txn_producer(broker)
    try:
        async with later.transaction():
            await later.send_and_wait(topic, b"later", partition=0)
    finally:
        await later.stop()

    async def settled() -> bool:
        lso, hw = (await end_offsets(client, [tp]))[tp]
        return lso == hw

    await eventually(settled)
    assert await committed_values(broker, tp) == [b"later"]


async def test_abort_with_a_stale_epoch_is_refused(broker: str, topic: str, client: Any) -> None:
    """The leader checks the marker's epoch: a marker older than the producer state's is refused,
    so an abort cannot end a newer transaction of the same producer id by mistake."""
    tp = TopicPartition(topic, 0)
    txn_id = unique("hanging-txn")
    for attempt in range(2):  # the second start of the same transactional id bumps the epoch
        p = AIOKafkaProducer(
            bootstrap_servers=broker, transactional_id=txn_id, transaction_timeout_ms=LONG_TXN_MS
        )
        await p.start()
        try:
            await p.begin_transaction()
            await p.send_and_wait(topic, b"x", partition=0)
            if attempt == 0:
                await p.commit_transaction()
        finally:
            await p.stop()
    (state,) = (await describe_producers(client, [tp]))[tp]
    assert state.producer_epoch >= 1 and state.current_txn_start_offset == 2
    stale = ProducerState(
        state.producer_id, state.producer_epoch - 1, state.last_sequence, state.last_timestamp_ms,
        state.coordinator_epoch, state.current_txn_start_offset,
    )  # fmt: skip
    with pytest.raises(TransactionAdminError) as info:
        await abort_transaction(client, tp, stale)
    assert info.value.error_name == "InvalidProducerEpoch"
    assert open_txns(await describe_producers(client, [tp]), tp) == {state.producer_id: 2}


async def test_offset_commits_in_an_abandoned_transaction(broker: str, topic: str, client: Any) -> None:
    """send_offsets_to_transaction writes to the group's __consumer_offsets partition: a hanging
    transaction there (a broker restart skips those markers too) is found and aborted the same way."""
    group = unique("hanging-group")
    offsets_tp = await group_offsets_partition(client, group)
    p = await txn_producer(broker)
    try:
        await p.begin_transaction()
        await p.send_offsets_to_transaction({TopicPartition(topic, 0): 1}, group)
        pid = p._txn_manager.producer_id
    finally:
        await p.stop()  # abandoned with the offset commit pending
    states = await describe_producers(client, [offsets_tp])
    assert pid in open_txns(states, offsets_tp)
    (state,) = [s for s in states[offsets_tp] if s.producer_id == pid]
    lso, hw = (await end_offsets(client, [offsets_tp]))[offsets_tp]
    assert lso <= state.current_txn_start_offset < hw

    await abort_transaction(client, offsets_tp, state)
    assert pid not in open_txns(await describe_producers(client, [offsets_tp]), offsets_tp)


def test_offsets_partition_is_javas_hash() -> None:
    # values from Java: (g.hashCode() & 0x7fffffff) % 50
    assert [
        offsets_partition(g).partition for g in ("pizza", "tf6543541.listener.tf6543541.ready", "é😀x")
    ] == [28, 11, 42]
    assert offsets_partition("pizza", 1) == TopicPartition("__consumer_offsets", 0)


async def test_coordinator_transactions(broker: str, topic: str, client: Any) -> None:
    tp = TopicPartition(topic, 0)
    p = await txn_producer(broker)
    try:
        await p.begin_transaction()
        await p.send_and_wait(topic, b"open", partition=0)
        pid = p._txn_manager.producer_id
        txn = (await coordinator_transactions(client, [pid, -42]))[pid]
        assert (txn.transactional_id, txn.state, txn.partitions) == (
            p._txn_manager.transactional_id,
            "Ongoing",
            {tp},
        )
        await p.commit_transaction()

        async def complete() -> bool:  # PrepareCommit until the markers are written
            return (await coordinator_transactions(client, [pid]))[pid].state == "CompleteCommit"

        await eventually(complete)
    finally:
        await p.stop()
    assert await coordinator_transactions(client, []) == {}


async def test_transaction_decisions_and_a_commit_marker(broker: str, topic: str, client: Any) -> None:
    """The coordinator's decisions come from __transaction_state; a transaction it decided to
    commit but whose markers never came (what a broker restart leaves) is committed by its own
    marker: the records become visible to read_committed consumers."""
    tp = TopicPartition(topic, 0)
    start_ms = int(time.time() * 1000) - 5_000
    p = await txn_producer(broker)
    try:
        txn_id = p._txn_manager.transactional_id
        async with p.transaction():
            await p.send_and_wait(topic, b"committed", partition=0)
        await p.begin_transaction()
        # CreateTime 1 s ahead: the commit above may be decided in this very millisecond, and
        # decide() cannot tell a decision from a later write of the same millisecond
        await p.send_and_wait(topic, b"open", partition=0, timestamp_ms=int(time.time() * 1000) + 1000)
        pid = p._txn_manager.producer_id
    finally:
        await p.stop()
    decisions = await transaction_decisions(broker, [txn_id, unique("nobody")], since_ms=start_ms)
    assert [(d.transactional_id, d.producer_id, d.commit, d.partitions) for d in decisions] == [
        (txn_id, pid, True, {tp})
    ]
    (state,) = (await describe_producers(client, [tp]))[tp]
    assert decide(tp, state, txn_id, decisions) is None  # the open one was written after that commit

    await end_transaction(client, tp, state, commit=True)
    lso, hw = (await end_offsets(client, [tp]))[tp]
    assert lso == hw
    assert await committed_values(broker, tp) == [b"committed", b"open"]


def test_decide_takes_the_last_decision_on_the_partition_if_not_before_the_last_write() -> None:
    tp, other = TopicPartition("t", 0), TopicPartition("t", 1)
    state = ProducerState(7, 2, 10, last_timestamp_ms=1_000, coordinator_epoch=0, current_txn_start_offset=5)

    def d(
        pid: int, epoch: int, commit: bool, parts: set[TopicPartition], at: int, tid: str = "x"
    ) -> Decision:
        return Decision(tid, pid, epoch, commit, frozenset(parts), at)

    older = d(7, 2, True, {tp}, 900)  # an earlier transaction (decided before the last write)
    mine = d(7, 3, False, {tp, other}, 1_200)  # a timeout abort: epoch bumped
    elsewhere = d(7, 3, True, {other}, 1_300)  # the next one, not on tp
    assert decide(tp, state, "x", [older, mine, elsewhere]) == mine
    assert decide(tp, state, "x", [older, elsewhere]) is None  # the open writes were never decided
    assert decide(tp, state, "y", [older, mine, elsewhere]) is None  # another transactional id
    assert decide(tp, state, None, [mine]) is None
    assert decide(tp, state, "x", [d(8, 2, True, {tp}, 1_200), d(7, 1, True, {tp}, 1_200)]) is None
    later = d(7, 3, True, {tp}, 1_400)  # wrote to tp again: its writes joined the open transaction
    assert decide(tp, state, "x", [older, mine, later]) == later


async def test_reaper_leaves_what_the_coordinator_still_owns(
    broker: str, topic: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An abandoned transaction is old by the age rule, but its coordinator still has it Ongoing
    (it will abort it at its own timeout): not hanging, as find-hanging would say too."""
    tp = TopicPartition(topic, 0)
    pid, _ = await abandoned_txn(broker, tp, 1, timestamp_ms=int(time.time() * 1000) - 120_000)
    reaper = HangingTransactions(broker, transaction_timeout_ms=30_000, grace_ms=0, interval=3600)
    await reaper.start()
    try:
        reaper.watch([tp])
        with caplog.at_level(logging.INFO, logger="daggerflow.kafka.hanging"):
            assert await reaper.check_once() == []
        assert any(
            f"producer {pid} on {topic}/0" in r.getMessage() and "Ongoing" in r.getMessage()
            for r in caplog.records
        )
        assert open_txns(await describe_producers(client, [tp]), tp) == {pid: 0}
    finally:
        await reaper.stop()


async def test_reaper_aborts_only_transactions_older_than_the_threshold(
    broker: str, topic: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tp = TopicPartition(topic, 0)
    now_ms = int(time.time() * 1000)
    # old: last write 120 s ago (CreateTime set by the producer), well past 30 s + 0 s
    old_pid, old_epoch = await abandoned_txn(broker, tp, 2, timestamp_ms=now_ms - 120_000)
    young_pid, _ = await abandoned_txn(broker, tp, 1)
    assert open_txns(await describe_producers(client, [tp]), tp) == {old_pid: 0, young_pid: 2}

    fake_now = [time.time()]
    reaper = HangingTransactions(
        broker,
        transaction_timeout_ms=30_000,
        grace_ms=0,
        interval=3600,
        clock=lambda: fake_now[0],
        check_coordinator=False,  # the coordinator still owns these (see the next test)
    )
    await reaper.start()
    try:
        assert await reaper.check_once() == []  # nothing watched yet
        reaper.watch([tp])
        with caplog.at_level(logging.WARNING, logger="daggerflow.kafka.hanging"):
            aborted = await reaper.check_once()
        assert [(t, s.producer_id, s.producer_epoch, s.current_txn_start_offset) for t, s in aborted] == [
            (tp, old_pid, old_epoch, 0)
        ]
        assert any(
            f"{topic}/0" in r.getMessage() and f"producer id {old_pid} epoch {old_epoch}" in r.getMessage()
            and "started at offset 0" in r.getMessage()
            for r in caplog.records
        )  # fmt: skip
        assert open_txns(await describe_producers(client, [tp]), tp) == {young_pid: 2}
        lso, hw = (await end_offsets(client, [tp]))[tp]
        assert (lso, hw) == (2, 4)  # the young transaction still holds the LSO

        assert await reaper.check_once() == []  # the young one stays, check after check

        fake_now[0] += 60  # a minute on: the young one is now past the threshold too
        reaper.unwatch([tp])
        assert await reaper.check_once() == []
        reaper.watch([tp])
        assert [s.producer_id for _, s in await reaper.check_once()] == [young_pid]
        lso, hw = (await end_offsets(client, [tp]))[tp]
        assert lso == hw == 5
        assert await committed_values(broker, tp) == []
    finally:
        await reaper.stop()


async def test_end_fenced_ends_what_an_older_epoch_left_open(broker: str, topic: str, client: Any) -> None:
    """What a new owner does after fencing (``HangingTransactions.end_fenced``): a transaction
    of an older epoch of the fenced producer id still open on a partition is ended at once
    (no age rule), here aborted (no decision recorded: the producer never committed); other
    producers' transactions and the same producer's current epoch are left alone."""
    tp = TopicPartition(topic, 0)
    pid, epoch = await abandoned_txn(broker, tp, 2)
    other_pid, _ = await abandoned_txn(broker, tp, 1)
    reaper = HangingTransactions(broker, transaction_timeout_ms=LONG_TXN_MS)
    await reaper.start()
    try:
        # The current epoch itself is not "older": nothing to end.
        assert await reaper.end_fenced("some-txn-id", pid, epoch, [tp]) == []
        ended = await reaper.end_fenced("some-txn-id", pid, epoch + 1, [tp])
        assert [(t, s.producer_id, committed) for t, s, committed in ended] == [(tp, pid, False)]
        assert open_txns(await describe_producers(client, [tp]), tp) == {other_pid: 2}
    finally:
        await reaper.stop()
