"""The settings of the runtime's producers and consumers (``docs/kafka-runtime-notes.md``,
"Recommended configuration"), in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

#: Settings of the transactional producers (one per task).
PRODUCER_SETTINGS: Mapping[str, Any] = {
    # > worst commit interval + batch time; bounds the LSO stall of a dead owner's open
    # transaction when nobody takes its partition over (broker max 900000)
    "transaction_timeout_ms": 30000,
    # NOT_ENOUGH_REPLICAS answers of KIP-890 verification are retried after this: p99 104 -> 13 ms
    "retry_backoff_ms": 10,
    "linger_ms": 0,  # the commit flushes anyway
    # One batch per partition per transaction (``send_many``): a 16 KB batch would split a
    # commit's changelog records into many, each waiting for the previous one to drain.
    "max_batch_size": 1024 * 1024,
}


def consumer_settings(group_id: str, *, group_instance_id: str | None = None) -> dict[str, Any]:
    """AIOKafkaConsumer keyword arguments for a worker of the group (notes, "Consumer")."""
    return {
        "group_id": group_id,
        "group_instance_id": group_instance_id,  # static membership: in-place restarts, no rebalance
        "isolation_level": "read_committed",
        "enable_auto_commit": False,  # offsets are committed in the transactions
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,  # the broker minimum; failover detection ~5-6 s
        "heartbeat_interval_ms": 1000,  # joins and clean leaves cost ~one heartbeat interval
        "partition_assignment_strategy": (RangePartitionAssignor,),  # co-partitions by construction
        "fetch_max_wait_ms": 100,  # ListOffsets/metadata calls never wait 500 ms behind a long poll
        "max_poll_records": 500,
    }


def groupless_consumer(
    bootstrap: str,
    *,
    fetch_max_wait_ms: int,
    isolation_level: str = "read_committed",
    **settings: Any,
) -> AIOKafkaConsumer:
    """A consumer outside any group, for partitions it is assigned by hand and reads whole
    (changelog restores and standbys, the owners topic, the transaction log): a group would
    split them between the processes. Nothing is committed. ``read_committed`` by default, so
    that what an aborted (zombie's) transaction wrote is never read. ``fetch_max_wait_ms``
    bounds the long poll that ListOffsets requests wait behind on the same connection
    (docs/kafka-runtime-notes.md, pitfall 8). ``settings`` are more AIOKafkaConsumer keywords."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **settings,
    )
