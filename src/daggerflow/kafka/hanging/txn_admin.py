"""Transaction-admin requests, sent with a started ``AIOKafkaClient`` (or a consumer's or
producer's client) to partition leaders and transaction coordinators: DescribeProducers,
WriteTxnMarkers, ListOffsets (aiokafka's own ``OffsetRequest``, v1-v3, with both isolation levels:
the ``read_committed`` latest offset is the LSO, the ``read_uncommitted`` one the high watermark)
and List/DescribeTransactions.

Permissions when ACLs are on: DescribeProducers needs READ on the topic, WriteTxnMarkers needs
CLUSTER_ACTION on the cluster (it is the inter-broker marker request), ListOffsets DESCRIBE,
List/DescribeTransactions DESCRIBE on the transactional ids (ListTransactions silently leaves out
the others).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka import TopicPartition
from aiokafka.client import CoordinationType
from aiokafka.protocol.offset import OffsetRequest

from ...errors import DaggerError
from ..compat import wait_on_metadata
from .protocol import (
    DescribeProducersRequest,
    DescribeTransactionsRequest,
    ListTransactionsRequest,
    ProducerState,
    WriteTxnMarkersRequest,
    coordinator_partition,
)

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


#: The group coordinator's topic: transactional offset commits (``send_offsets_to_transaction``)
#: are records there, and a hanging transaction on its partition makes the group's committed
#: offsets unstable for ever (OffsetFetch answers UNSTABLE_OFFSET_COMMIT), so it must be watched too.
OFFSETS_TOPIC = "__consumer_offsets"


def offsets_partition(group_id: str, partitions: int = 50) -> TopicPartition:
    """The ``__consumer_offsets`` partition holding ``group_id``'s offsets (Java's
    ``Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions``, default 50)."""
    return TopicPartition(OFFSETS_TOPIC, coordinator_partition(group_id, partitions))


async def group_offsets_partition(client: Any, group_id: str) -> TopicPartition:
    """:func:`offsets_partition` with the broker's actual ``__consumer_offsets`` partition count
    (a development broker often has 1, not 50)."""
    partitions = await wait_on_metadata(client, OFFSETS_TOPIC)
    return offsets_partition(group_id, len(partitions))


async def _leader(client: Any, tp: TopicPartition) -> int:
    """The node id of ``tp``'s leader, refreshing metadata once if the client does not know it."""
    leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        await wait_on_metadata(client, tp.topic)
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
    (or a consumer's ``compat.consumer_client``, or a producer's ``client``). Raises :class:`TransactionAdminError` for the first
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


async def end_offsets(client: Any, tps: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
    """``{tp: (last stable offset, high watermark)}`` from ListOffsets on each leader. A partition
    answered with an error is left out (it is looked at again on the next check)."""
    groups = await _by_leader(client, tps)
    lso = await _latest(client, groups, _READ_COMMITTED)
    hw = await _latest(client, groups, _READ_UNCOMMITTED)
    return {tp: (lso[tp], hw[tp]) for tp in lso.keys() & hw.keys()}


async def high_watermarks(client: Any, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """``{tp: high watermark}``: the offset after the last record acknowledged to any producer,
    committed or not (a partition answered with an error is left out)."""
    return await _latest(client, await _by_leader(client, tps), _READ_UNCOMMITTED)


async def _latest(client: Any, groups: dict[int, dict[str, list[int]]], isolation: int) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for node, topics in groups.items():
        request = OffsetRequest(-1, isolation, [(t, [(p, _LATEST) for p in ps]) for t, ps in topics.items()])
        resp = await client.send(node, request)
        for name, partitions in resp.topics:
            for index, error_code, _timestamp, offset in partitions:
                if error_code:
                    log.debug("ListOffsets %s/%s: error code %s", name, index, error_code)
                    continue
                offsets[TopicPartition(name, index)] = offset
    return offsets


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
