"""Finding and aborting hanging transactions (KIP-664), the way ``kafka-transactions.sh
find-hanging`` / ``abort`` do, for the partitions a worker reads.

Why: a broker restarted while transactional producers are active can load its transaction
coordinator state before partition leaders are known, skip the commit/abort markers ("Couldn't
find leader endpoint for partitions ... these partitions are likely deleted already") and leave
the partition's producer state with an ongoing transaction forever. The partition's last stable
offset (LSO) then never advances and every ``read_committed`` consumer of it stalls. The
coordinator has forgotten the transaction, so nothing on the broker side will ever end it.

aiokafka 0.14 has neither DescribeProducers (API key 61) nor WriteTxnMarkers (API key 27); both
are declared here with aiokafka's protocol primitives and sent with ``AIOKafkaClient.send`` to the
partition's leader. Versions (checked against Kafka 4.3.1's generated schemas):

- DescribeProducers v0 (the only version; flexible).
- WriteTxnMarkers v1 (flexible; Kafka 4 removed v0). v2 only adds ``transaction_version`` for
  KIP-890 coordinators; v1 is what a v1-era coordinator would write, which fits aiokafka's
  producers (they do not speak KIP-890).
- ListOffsets through aiokafka's own ``OffsetRequest`` (v1-v3) with both isolation levels: the
  ``read_committed`` latest offset is the LSO, the ``read_uncommitted`` one the high watermark.

- ListTransactions v0 / DescribeTransactions v0 (flexible) to cross-check with the coordinator,
  and a plain consumer of ``__transaction_state`` for the coordinator's commit/abort decision.

Permissions when ACLs are on: DescribeProducers needs READ on the topic, WriteTxnMarkers needs
CLUSTER_ACTION on the cluster (it is the inter-broker marker request), ListOffsets DESCRIBE,
List/DescribeTransactions DESCRIBE on the transactional ids (ListTransactions silently leaves out
the others), and reading ``__transaction_state`` READ on that internal topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.protocol.types import (
    Array,
    Boolean,
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

from daggerflow.errors import DaggerError

log = logging.getLogger(__name__)

_READ_UNCOMMITTED = 0
_READ_COMMITTED = 1
_LATEST = -1  # ListOffsets timestamp meaning "the end of the partition" (HW or LSO by isolation)


class TransactionAdminError(DaggerError):
    """A DescribeProducers, WriteTxnMarkers, List/DescribeTransactions answer carried an error
    (``tp`` the partition it is about, if any; ``error_code`` is Kafka's, ``error_name`` aiokafka's
    name for it)."""

    def __init__(
        self, operation: str, tp: TopicPartition | None, error_code: int, detail: str | None = None
    ) -> None:
        self.operation = operation
        self.tp = tp
        self.error_code = error_code
        self.error_name = kafka_errors.for_code(error_code).__name__
        where = f" on {tp.topic}/{tp.partition}" if tp is not None else ""
        msg = f"{operation}{where} failed: {self.error_name} (error code {error_code})"
        super().__init__(f"{msg}: {detail}" if detail else msg)


@dataclass(frozen=True)
class ProducerState:
    """One active producer of a partition, as the partition leader's producer state has it."""

    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp_ms: int
    coordinator_epoch: int
    current_txn_start_offset: int  # -1 if the producer has no open transaction on the partition


# ---------------------------------------------------------------------------------------------
# protocol: DescribeProducers v0 (API key 61)
# ---------------------------------------------------------------------------------------------


class DescribeProducersResponse_v0(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 61
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("error_message", CompactString("utf-8")),  # nullable: decodes to None
                        (
                            "active_producers",
                            CompactArray(
                                ("producer_id", Int64),
                                ("producer_epoch", Int32),  # int32 here, int16 everywhere else
                                ("last_sequence", Int32),
                                ("last_timestamp", Int64),
                                ("coordinator_epoch", Int32),
                                ("current_txn_start_offset", Int64),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeProducersRequest_v0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    FLEXIBLE_VERSION = True
    API_KEY = 61
    API_VERSION = 0
    RESPONSE_TYPE = DescribeProducersResponse_v0
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeProducersRequest(Request[DescribeProducersRequest_v0]):  # type: ignore[misc]
    API_KEY = 61

    def __init__(self, topics: dict[str, list[int]]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[DescribeProducersRequest_v0]) -> DescribeProducersRequest_v0:
        return request_struct_class([(t, ps, {}) for t, ps in self._topics.items()], {})


# ---------------------------------------------------------------------------------------------
# protocol: WriteTxnMarkers v1 (API key 27)
# ---------------------------------------------------------------------------------------------


class WriteTxnMarkersResponse_v1(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 27
    API_VERSION = 1
    SCHEMA = Schema(
        (
            "markers",
            CompactArray(
                ("producer_id", Int64),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("error_code", Int16),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class WriteTxnMarkersRequest_v1(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    FLEXIBLE_VERSION = True
    API_KEY = 27
    API_VERSION = 1
    RESPONSE_TYPE = WriteTxnMarkersResponse_v1
    SCHEMA = Schema(
        (
            "markers",
            CompactArray(
                ("producer_id", Int64),
                ("producer_epoch", Int16),
                ("transaction_result", Boolean),  # True = commit, False = abort
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        ("partition_indexes", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("coordinator_epoch", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class WriteTxnMarkersRequest(Request[WriteTxnMarkersRequest_v1]):  # type: ignore[misc]
    API_KEY = 27

    def __init__(self, tp: TopicPartition, state: ProducerState, *, commit: bool) -> None:
        self._tp = tp
        self._state = state
        self._commit = commit

    def build(self, request_struct_class: type[WriteTxnMarkersRequest_v1]) -> WriteTxnMarkersRequest_v1:
        s = self._state
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [(self._tp.topic, [self._tp.partition], {})]
        marker: tuple[Any, ...] = (
            s.producer_id,
            s.producer_epoch,
            self._commit,
            topics,
            s.coordinator_epoch,
            {},
        )
        return request_struct_class([marker], {})


# ---------------------------------------------------------------------------------------------
# protocol: ListTransactions v0 (API key 66) and DescribeTransactions v0 (API key 65)
# ---------------------------------------------------------------------------------------------


class ListTransactionsResponse_v0(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 66
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("unknown_state_filters", CompactArray(CompactString("utf-8"))),
        (
            "transaction_states",
            CompactArray(
                ("transactional_id", CompactString("utf-8")),
                ("producer_id", Int64),
                ("transaction_state", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class ListTransactionsRequest_v0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    FLEXIBLE_VERSION = True
    API_KEY = 66
    API_VERSION = 0
    RESPONSE_TYPE = ListTransactionsResponse_v0
    SCHEMA = Schema(
        ("state_filters", CompactArray(CompactString("utf-8"))),
        ("producer_id_filters", CompactArray(Int64)),
        ("tags", TaggedFields),
    )


class ListTransactionsRequest(Request[ListTransactionsRequest_v0]):  # type: ignore[misc]
    API_KEY = 66

    def __init__(self, producer_ids: list[int]) -> None:
        self._producer_ids = producer_ids

    def build(self, request_struct_class: type[ListTransactionsRequest_v0]) -> ListTransactionsRequest_v0:
        return request_struct_class([], self._producer_ids, {})


class DescribeTransactionsResponse_v0(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 65
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "transaction_states",
            CompactArray(
                ("error_code", Int16),
                ("transactional_id", CompactString("utf-8")),
                ("transaction_state", CompactString("utf-8")),
                ("transaction_timeout_ms", Int32),
                ("transaction_start_time_ms", Int64),
                ("producer_id", Int64),
                ("producer_epoch", Int16),
                (
                    "topics",
                    CompactArray(
                        ("topic", CompactString("utf-8")),
                        ("partitions", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeTransactionsRequest_v0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    FLEXIBLE_VERSION = True
    API_KEY = 65
    API_VERSION = 0
    RESPONSE_TYPE = DescribeTransactionsResponse_v0
    SCHEMA = Schema(
        ("transactional_ids", CompactArray(CompactString("utf-8"))),
        ("tags", TaggedFields),
    )


class DescribeTransactionsRequest(Request[DescribeTransactionsRequest_v0]):  # type: ignore[misc]
    API_KEY = 65

    def __init__(self, transactional_ids: list[str]) -> None:
        self._ids = transactional_ids

    def build(
        self, request_struct_class: type[DescribeTransactionsRequest_v0]
    ) -> DescribeTransactionsRequest_v0:
        return request_struct_class(self._ids, {})


# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------


#: The group coordinator's topic: transactional offset commits (``send_offsets_to_transaction``)
#: are records there, and a hanging transaction on its partition makes the group's committed
#: offsets unstable for ever (OffsetFetch answers UNSTABLE_OFFSET_COMMIT), so it must be watched too.
OFFSETS_TOPIC = "__consumer_offsets"


def _java_partition(key: str, partitions: int) -> int:
    """``Utils.abs(key.hashCode()) % partitions``: how the group and transaction coordinators
    place a group id / transactional id on their internal topic."""
    data = key.encode("utf-16-be")  # String.hashCode runs over UTF-16 code units
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


def offsets_partition(group_id: str, partitions: int = 50) -> TopicPartition:
    """The ``__consumer_offsets`` partition holding ``group_id``'s offsets (Java's
    ``Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions``, default 50)."""
    return TopicPartition(OFFSETS_TOPIC, _java_partition(group_id, partitions))


async def group_offsets_partition(client: Any, group_id: str) -> TopicPartition:
    """:func:`offsets_partition` with the broker's actual ``__consumer_offsets`` partition count
    (a development broker often has 1, not 50)."""
    partitions = await client._wait_on_metadata(OFFSETS_TOPIC)
    return offsets_partition(group_id, len(partitions))


async def _leader(client: Any, tp: TopicPartition) -> int:
    """The node id of ``tp``'s leader, refreshing metadata once if the client does not know it."""
    leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        # _wait_on_metadata adds the topic to the client's metadata set (harmless for a consumer's
        # or producer's client: it only widens what metadata it fetches) and waits for it.
        await client._wait_on_metadata(tp.topic)
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        raise TransactionAdminError("leader lookup", tp, kafka_errors.LeaderNotAvailableError.errno)
    return int(leader)


async def _by_leader(client: Any, tps: Iterable[TopicPartition]) -> dict[int, dict[str, list[int]]]:
    groups: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for tp in tps:
        groups[await _leader(client, tp)][tp.topic].append(tp.partition)
    return groups


async def describe_producers(
    client: Any, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, list[ProducerState]]:
    """DescribeProducers on each partition's leader. ``client`` is a started ``AIOKafkaClient``
    (or a consumer's/producer's ``._client``). Raises :class:`TransactionAdminError` for the first
    partition answered with an error."""
    out: dict[TopicPartition, list[ProducerState]] = {}
    for node, topics in (await _by_leader(client, tps)).items():
        resp = await client.send(node, DescribeProducersRequest(topics))
        for name, partitions, _tags in resp.topics:
            for index, error_code, error_message, producers, _ptags in partitions:
                tp = TopicPartition(name, index)
                if error_code:
                    raise TransactionAdminError("DescribeProducers", tp, error_code, error_message)
                out[tp] = [
                    ProducerState(pid, epoch, seq, ts, coord_epoch, start)
                    for pid, epoch, seq, ts, coord_epoch, start, _t in producers
                ]
    return out


async def end_transaction(client: Any, tp: TopicPartition, state: ProducerState, *, commit: bool) -> None:
    """Write a commit or abort marker for ``state``'s open transaction on ``tp`` to its leader (one
    WriteTxnMarkers marker, as the coordinator itself would). The leader checks the epochs against
    its producer state, so a marker for a producer that has since moved to a newer epoch is refused
    (INVALID_PRODUCER_EPOCH), not misapplied. Raises :class:`TransactionAdminError`."""
    node = await _leader(client, tp)
    resp = await client.send(node, WriteTxnMarkersRequest(tp, state, commit=commit))
    for _pid, topics, _tags in resp.markers:
        for name, partitions, _ttags in topics:
            for index, error_code, _ptags in partitions:
                if error_code:
                    raise TransactionAdminError("WriteTxnMarkers", TopicPartition(name, index), error_code)


async def abort_transaction(client: Any, tp: TopicPartition, state: ProducerState) -> None:
    """What Kafka's ``Admin.abortTransaction(AbortTransactionSpec(tp, producerId, producerEpoch,
    coordinatorEpoch))`` does: an abort marker for ``state``'s open transaction on ``tp``."""
    await end_transaction(client, tp, state, commit=False)


async def end_offsets(client: Any, tps: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
    """``{tp: (last stable offset, high watermark)}`` from ListOffsets on each leader. A partition
    answered with an error is left out (it is looked at again on the next check)."""
    groups = await _by_leader(client, tps)
    found: dict[int, dict[TopicPartition, int]] = {_READ_COMMITTED: {}, _READ_UNCOMMITTED: {}}
    for node, topics in groups.items():
        for isolation, offsets in found.items():
            request = OffsetRequest(
                -1, isolation, [(t, [(p, _LATEST) for p in ps]) for t, ps in topics.items()]
            )
            resp = await client.send(node, request)
            for name, partitions in resp.topics:
                for index, error_code, _timestamp, offset in partitions:
                    if error_code:
                        log.debug("ListOffsets %s/%s: error code %s", name, index, error_code)
                        continue
                    offsets[TopicPartition(name, index)] = offset
    lso, hw = found[_READ_COMMITTED], found[_READ_UNCOMMITTED]
    return {tp: (lso[tp], hw[tp]) for tp in lso.keys() & hw.keys()}


@dataclass(frozen=True)
class CoordinatorTransaction:
    """A transactional id's state as its transaction coordinator has it (DescribeTransactions)."""

    transactional_id: str
    state: str  # Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, ...
    producer_id: int
    producer_epoch: int
    partitions: frozenset[TopicPartition]


#: Coordinator states in which the coordinator itself still owns the transaction's outcome: it
#: will write (or is writing) the markers, so an abort from outside could contradict a commit.
IN_PROGRESS_STATES = frozenset({"Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence"})


async def coordinator_transactions(
    client: Any, producer_ids: Iterable[int]
) -> dict[int, CoordinatorTransaction]:
    """``{producer id: its transaction}`` for those producer ids that some coordinator knows
    (ListTransactions on every broker, then DescribeTransactions on each id's coordinator).
    A producer id missing from the answer is unknown to every coordinator: its transactional id
    expired, or the caller may not DESCRIBE it (ListTransactions silently leaves those out)."""
    pids = sorted(set(producer_ids))
    if not pids:
        return {}
    ids: set[str] = set()
    for broker in client.cluster.brokers():
        resp = await client.send(broker.nodeId, ListTransactionsRequest(pids))
        if resp.error_code:
            raise TransactionAdminError("ListTransactions", None, resp.error_code)
        ids.update(txn_id for txn_id, _pid, _state, _tags in resp.transaction_states)
    out: dict[int, CoordinatorTransaction] = {}
    for txn_id in sorted(ids):
        node = await client.coordinator_lookup(CoordinationType.TRANSACTION, txn_id)
        resp = await client.send(node, DescribeTransactionsRequest([txn_id]))
        for error_code, tid, state, _timeout, _start, pid, epoch, topics, _tags in resp.transaction_states:
            if error_code:
                raise TransactionAdminError("DescribeTransactions", None, error_code, tid)
            parts = frozenset(TopicPartition(t, p) for t, ps, _t in topics for p in ps)
            if pid in pids:
                out[pid] = CoordinatorTransaction(tid, state, pid, epoch, parts)
    return out


# ---------------------------------------------------------------------------------------------
# the coordinators' decisions: __transaction_state
# ---------------------------------------------------------------------------------------------

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
    bootstrap: str, transactional_ids: Iterable[str], *, since_ms: int | None = None
) -> list[Decision]:
    """Every commit/abort decision still in the transaction log for ``transactional_ids``, in log
    order, from their ``__transaction_state`` partitions (compaction may have removed old ones; the
    latest record of each id always stays). ``since_ms``: read only records appended from then on
    (by the records' timestamps), instead of whole partitions that can hold millions."""
    ids = set(transactional_ids)
    if not ids:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        count = len(await consumer._client._wait_on_metadata(TRANSACTION_LOG_TOPIC))
        tps = sorted({TopicPartition(TRANSACTION_LOG_TOPIC, _java_partition(i, count)) for i in ids})
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


# ---------------------------------------------------------------------------------------------
# the reaper
# ---------------------------------------------------------------------------------------------


class HangingTransactions:
    """Finds and ends hanging transactions on the partitions a worker reads, the way
    kafka-transactions.sh find-hanging/abort do (but with the coordinator's decision, see below).

    A partition is looked at when its LSO is below its high watermark (some transaction is open).
    A producer with an open transaction there whose last write is older than
    ``transaction_timeout_ms + grace_ms`` is hanging: a live transaction would have been aborted by
    its coordinator by then (``transaction_timeout_ms`` must therefore be at least the producers'
    ``transaction.timeout.ms``), so the partition's state is stale. Younger transactions are never
    touched: ending a live one from outside would contradict what its producer does next.

    Like find-hanging, an old one is then checked against its coordinator (List/Describe
    Transactions): it is left alone while the coordinator still has that partition in an
    in-progress transaction of that producer id (it will write the markers itself, perhaps a
    commit delayed by a broker restart). Hanging means the coordinator is done with it (Complete*,
    Empty, a newer transaction without this partition) or does not know the producer id.
    ``check_coordinator=False`` skips that check (only the age rule decides); the tests need it
    because a healthy broker's coordinator never forgets an abandoned transaction.

    Unlike ``kafka-transactions.sh abort``, the marker written is the coordinator's own decision,
    read from ``__transaction_state`` (the last PrepareCommit/PrepareAbort of that producer naming
    the partition, if not older than its last write there, see :func:`decide`): a broker restart
    skips commit markers too, and an abort would then drop records whose input offsets are
    committed (measured: READY answers lost, workflows stuck EXECUTING). With no decision recorded
    (never decided, compacted away, or ``check_coordinator=False``) the transaction is aborted."""

    def __init__(
        self,
        bootstrap: str,
        *,
        transaction_timeout_ms: int = 30000,
        grace_ms: int = 30000,
        interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        check_coordinator: bool = True,
    ) -> None:
        self._bootstrap = bootstrap
        self._max_age_ms = transaction_timeout_ms + grace_ms
        self._interval = interval
        self._clock = clock
        self._check_coordinator = check_coordinator
        #: every transaction this reaper ended: (partition, producer state, committed?)
        self.ended: list[tuple[TopicPartition, ProducerState, bool]] = []
        self._watched: set[TopicPartition] = set()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        client = AIOKafkaClient(bootstrap_servers=self._bootstrap, client_id="daggerflow-hanging-txns")
        await client.bootstrap()
        self._client = client
        self._task = asyncio.create_task(self._run(), name="hanging-transactions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def watch(self, tps: Iterable[TopicPartition]) -> None:
        self._watched.update(tps)

    def unwatch(self, tps: Iterable[TopicPartition]) -> None:
        self._watched.difference_update(tps)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # a period, not a synchronisation
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except (kafka_errors.KafkaError, OSError, TimeoutError) as e:  # broker down or restarting
                log.warning("hanging transaction check failed, next try in %.0f s: %r", self._interval, e)
            except Exception:
                log.exception("hanging transaction check failed")

    async def end_fenced(
        self, transactional_id: str, producer_id: int, epoch: int, tps: Sequence[TopicPartition]
    ) -> list[tuple[TopicPartition, ProducerState, bool]]:
        """End, at once, the transactions that ``transactional_id``'s earlier epochs left open on
        ``tps``, just after a new owner fenced it (InitProducerId gave it ``producer_id`` and
        ``epoch``).

        The coordinator finishes a transaction (markers written) before it answers InitProducerId,
        so an older epoch's transaction still open on a partition is one whose markers the broker
        skipped (a restart: docs/kafka-runtime-notes.md section 7). No age rule is needed, and none may
        wait: the new owner restores from the changelog and reads its committed offsets next, and
        a committed transaction whose changelog or offsets marker is missing would have its
        inputs processed a second time (measured: an order sent twice after a broker restart).
        Each is ended with the coordinator's decision (:func:`decide`), else aborted. Returns what
        it ended: (partition, producer state, committed?)."""
        if self._client is None:
            raise RuntimeError("HangingTransactions.end_fenced() before start()")
        client = self._client
        # Only partitions with some transaction open (LSO below the high watermark): one
        # ListOffsets, and DescribeProducers (a large answer) only where it can find something.
        offsets = await end_offsets(client, tps)
        candidates = [tp for tp, (lso, hw) in offsets.items() if lso < hw]
        if not candidates:
            return []
        states = await describe_producers(client, candidates)
        fenced = [
            (tp, s)
            for tp, found in sorted(states.items())
            for s in found
            if s.producer_id == producer_id and s.producer_epoch < epoch and s.current_txn_start_offset >= 0
        ]
        if not fenced:
            return []
        decisions = await transaction_decisions(
            self._bootstrap, [transactional_id], since_ms=min(s.last_timestamp_ms for _, s in fenced) - self._max_age_ms
        )
        ended: list[tuple[TopicPartition, ProducerState, bool]] = []
        for tp, s in fenced:
            decision = decide(tp, s, transactional_id, decisions)
            commit = decision is not None and decision.commit
            log.warning(
                "%s the transaction %s (producer id %s epoch %s) left open on %s/%s by a fenced owner: "
                "its markers were skipped (decision: %s)",
                "committing" if commit else "aborting", transactional_id, s.producer_id, s.producer_epoch,
                tp.topic, tp.partition,
                "none recorded" if decision is None else f"{'commit' if decision.commit else 'abort'} at {decision.decided_ms}",
            )  # fmt: skip
            await end_transaction(client, tp, s, commit=commit)
            ended.append((tp, s, commit))
            self.ended.append((tp, s, commit))
        return ended

    async def check_once(self) -> list[tuple[TopicPartition, ProducerState]]:
        """One pass over the watched partitions; returns the hanging transactions it ended
        (aborted, or committed when the coordinator had decided so: see :attr:`ended`)."""
        if self._client is None:
            raise RuntimeError("HangingTransactions.check_once() before start()")
        client = self._client
        tps = sorted(self._watched)
        if not tps:
            return []
        offsets = await end_offsets(client, tps)
        stuck = [tp for tp, (lso, hw) in offsets.items() if lso < hw]
        if not stuck:
            return []
        now_ms = self._clock() * 1000
        candidates: list[tuple[TopicPartition, ProducerState]] = []
        for tp in sorted(stuck):
            try:
                states = (await describe_producers(client, [tp])).get(tp, [])
            except (DaggerError, kafka_errors.KafkaError) as e:
                log.warning("cannot describe the producers of %s/%s: %s", tp.topic, tp.partition, e)
                continue
            candidates += [
                (tp, s)
                for s in states
                if s.current_txn_start_offset >= 0 and s.last_timestamp_ms < now_ms - self._max_age_ms
            ]
        if not candidates:
            return []
        try:
            coordinator = (
                await coordinator_transactions(client, (s.producer_id for _, s in candidates))
                if self._check_coordinator
                else {}
            )
        except (DaggerError, kafka_errors.KafkaError) as e:
            log.warning("cannot ask the transaction coordinators, aborting nothing this time: %s", e)
            return []
        hanging: list[tuple[TopicPartition, ProducerState, CoordinatorTransaction | None]] = []
        for tp, s in candidates:
            txn = coordinator.get(s.producer_id)
            if txn is not None and txn.state in IN_PROGRESS_STATES and tp in txn.partitions:
                # The coordinator still holds this partition in a transaction of that producer id
                # (a commit may be on its way, e.g. markers delayed by a restart): not hanging.
                log.info(
                    "open transaction of producer %s on %s/%s is old but its coordinator has it %s",
                    s.producer_id, tp.topic, tp.partition, txn.state,
                )  # fmt: skip
                continue
            hanging.append((tp, s, txn))
        if not hanging:
            return []
        # The marker must be the coordinator's decision: a broker restart skips commit markers as
        # well as abort ones, and aborting a committed transaction would lose its records (its
        # offsets may well be committed). Only a transaction with no recorded decision is aborted.
        try:
            decisions = await transaction_decisions(
                self._bootstrap,
                {txn.transactional_id for _, _, txn in hanging if txn is not None},
                # decisions come after the last writes; the margin covers producer/broker clock skew
                since_ms=min(s.last_timestamp_ms for _, s, _ in hanging) - self._max_age_ms,
            )
        except (DaggerError, kafka_errors.KafkaError) as e:
            log.warning("cannot read the transaction log, ending nothing this time: %s", e)
            return []
        ended: list[tuple[TopicPartition, ProducerState]] = []
        for tp, s, txn in hanging:
            decision = decide(tp, s, txn.transactional_id if txn is not None else None, decisions)
            commit = decision is not None and decision.commit
            log.warning(
                "%s hanging transaction on %s/%s: producer id %s epoch %s, started at offset %s,"
                " last write %.0f s ago (LSO %s < high watermark %s; coordinator: %s; decision: %s)",
                "committing" if commit else "aborting",
                tp.topic, tp.partition, s.producer_id, s.producer_epoch, s.current_txn_start_offset,
                (now_ms - s.last_timestamp_ms) / 1000, offsets[tp][0], offsets[tp][1],
                f"{txn.transactional_id} {txn.state}" if txn is not None
                else "producer id unknown" if self._check_coordinator else "not asked",
                "none recorded" if decision is None
                else f"{'commit' if decision.commit else 'abort'} at {decision.decided_ms}",
            )  # fmt: skip
            try:
                await end_transaction(client, tp, s, commit=commit)
            except (DaggerError, kafka_errors.KafkaError) as e:
                log.warning("ending producer %s's transaction on %s/%s failed: %s", s.producer_id, tp.topic,
                            tp.partition, e)  # fmt: skip
                continue
            ended.append((tp, s))
            self.ended.append((tp, s, commit))
        return ended
