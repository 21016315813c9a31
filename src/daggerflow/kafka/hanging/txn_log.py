"""The transaction coordinators' commit/abort decisions, read from ``__transaction_state``
(a plain consumer: reading it needs READ on that internal topic when ACLs are on), and
``decide``, the pure choice of the decision that covers a transaction left open."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO

from aiokafka import TopicPartition
from aiokafka.protocol.types import (
    Array,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
)

from ..client_options import Connection
from ..compat import consumer_client, wait_on_metadata
from ..settings import groupless_consumer
from .protocol import ProducerState, coordinator_partition

log = logging.getLogger(__name__)

TRANSACTION_LOG_TOPIC = "__transaction_state"
#: Upper bound on reading the transaction log for one check.
READ_TIMEOUT_S = 120.0
PREPARE_COMMIT, PREPARE_ABORT = 2, 3  # TransactionState ids (Kafka 4.3: 0 Empty ... 7 PrepareEpochFence)

_TXN_LOG_VALUE_V0 = Schema(
    ("producer_id", Int64),
    ("producer_epoch", Int16),
    ("transaction_timeout_ms", Int32),
    ("transaction_status", Int8),
    ("transaction_partitions", Array(("topic", String("utf-8")), ("partition_ids", Array(Int32)))),
    ("transaction_last_update_timestamp_ms", Int64),
    ("transaction_start_timestamp_ms", Int64),
)
_TXN_LOG_VALUE_V1 = Schema(  # flexible; its tagged fields (KIP-890 producer ids) are not needed
    ("producer_id", Int64),
    ("producer_epoch", Int16),
    ("transaction_timeout_ms", Int32),
    ("transaction_status", Int8),
    (
        "transaction_partitions",
        CompactArray(
            ("topic", CompactString("utf-8")), ("partition_ids", CompactArray(Int32)), ("tags", TaggedFields)
        ),
    ),
    ("transaction_last_update_timestamp_ms", Int64),
    ("transaction_start_timestamp_ms", Int64),
    ("tags", TaggedFields),
)


@dataclass(frozen=True)
class Decision:
    """A PrepareCommit/PrepareAbort record of the transaction log: the coordinator's decision on
    one transaction, whose markers it then (normally) writes to ``partitions``."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    partitions: frozenset[TopicPartition]
    decided_ms: int  # transaction_last_update_timestamp_ms (the broker's clock)


def _decode_txn_log(key: bytes | None, value: bytes | None) -> Decision | None:
    if key is None or value is None:  # a tombstone (expired transactional id)
        return None
    kbuf = BytesIO(key)
    if Int16.decode(kbuf) != 0:
        return None
    txn_id = String("utf-8").decode(kbuf)
    vbuf = BytesIO(value)
    version = Int16.decode(vbuf)
    if version not in (0, 1):
        log.warning("transaction log value version %s of %r not understood; skipped", version, txn_id)
        return None
    pid, epoch, _timeout, status, parts, updated, _started, *_ = (
        _TXN_LOG_VALUE_V0 if version == 0 else _TXN_LOG_VALUE_V1
    ).decode(vbuf)
    if status not in (PREPARE_COMMIT, PREPARE_ABORT):
        return None
    tps = frozenset(TopicPartition(t[0], p) for t in parts or () for p in t[1])
    return Decision(txn_id, pid, epoch, status == PREPARE_COMMIT, tps, updated)


async def transaction_decisions(
    broker: Connection | str, transactional_ids: Iterable[str], *, since_ms: int | None = None
) -> list[Decision]:
    """Every commit/abort decision still in the transaction log for ``transactional_ids``, in log
    order, from their ``__transaction_state`` partitions (compaction may have removed old ones; the
    latest record of each id always stays). ``since_ms``: read only records appended from then on
    (by the records' timestamps), instead of whole partitions that can hold millions."""
    ids = set(transactional_ids)
    if not ids:
        return []
    # The transaction log is not written in transactions: read uncommitted, up to the high watermark.
    consumer = groupless_consumer(broker, fetch_max_wait_ms=100, isolation_level="read_uncommitted")
    await consumer.start()
    try:
        count = len(await wait_on_metadata(consumer_client(consumer), TRANSACTION_LOG_TOPIC))
        tps = sorted({TopicPartition(TRANSACTION_LOG_TOPIC, coordinator_partition(i, count)) for i in ids})
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        if since_ms is None:
            await consumer.seek_to_beginning(*tps)
            pending = {tp for tp in tps if ends[tp] > 0}
        else:
            found = await consumer.offsets_for_times({tp: max(since_ms, 0) for tp in tps})
            pending = set()
            for tp, at in found.items():
                if at is not None:  # None: nothing appended since then
                    consumer.seek(tp, at.offset)
                    pending.add(tp)
        out: list[Decision] = []
        async with asyncio.timeout(READ_TIMEOUT_S):  # a broker gone mid-read must not stall the caller
            while pending:
                for records in (await consumer.getmany(*pending, timeout_ms=500)).values():
                    for r in records:
                        d = _decode_txn_log(r.key, r.value)
                        if d is not None and d.transactional_id in ids:
                            out.append(d)
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return out
    finally:
        await consumer.stop()


def decide(
    tp: TopicPartition, state: ProducerState, transactional_id: str | None, decisions: Sequence[Decision]
) -> Decision | None:
    """The coordinator's decision on the transaction left open on ``tp``: the last decision (in log
    order) of that producer id, at its epoch or a later one (a timeout abort bumps it), naming
    ``tp`` - provided it was taken no earlier than the producer's last write there (a transaction
    is decided only once its writes are done; an older decision was for an earlier transaction,
    whose markers did arrive). None if there is no such decision (never decided, or compacted
    away).

    Why the last one: were a later transaction of the same producer to write to ``tp`` after the
    markers were skipped, the partition would count its writes into the same open transaction,
    and the latest decision is the one that covers the latest writes. Timestamps have millisecond
    resolution: a decision in the very millisecond of a later, undecided transaction's last write
    would be taken for that transaction's."""
    found: Decision | None = None
    for d in decisions:
        if (
            d.transactional_id == transactional_id
            and d.producer_id == state.producer_id
            and d.producer_epoch >= state.producer_epoch
            and tp in d.partitions
        ):
            found = d
    return found if found is not None and found.decided_ms >= state.last_timestamp_ms else None
