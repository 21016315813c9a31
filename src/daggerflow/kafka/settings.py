"""The settings of the runtime's producers and consumers (``docs/kafka-runtime-notes.md``,
"Recommended configuration"), in one place; and the one place where Kafka clients are made.

Every producer, consumer, admin and low-level client of the runtime comes from a factory
below, which spreads the connection's security settings (TLS, SASL: ``client_options.py``)
into it; tests/unit/test_kafka_clients.py checks that no client is constructed elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from .client_options import ACCEPTED_OPTIONS, Connection, connection_of

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


def client_kwargs(broker: Connection | str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` of one client plus the bootstrap list and the connection's security
    settings. The runtime's own settings win for the connection extras (the reaper's
    ``client_id``); they may never touch TLS or SASL."""
    conn = connection_of(broker)
    security = conn.security.kwargs()
    clash = sorted(k for k in settings if k in ACCEPTED_OPTIONS and k not in conn.security.EXTRAS)
    if clash:
        raise TypeError(f"a client's own settings may not set {clash}: they come from the connection")
    return {"bootstrap_servers": conn.bootstrap, **security, **settings}


def new_producer(broker: Connection | str, **settings: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_kwargs(broker, settings))


def new_consumer(broker: Connection | str, **settings: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**client_kwargs(broker, settings))


def new_admin(broker: Connection | str, **settings: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_kwargs(broker, settings))


def new_client(broker: Connection | str, **settings: Any) -> AIOKafkaClient:
    """A low-level client (requests the higher-level ones do not offer: hanging/)."""
    return AIOKafkaClient(**client_kwargs(broker, settings))


def groupless_consumer(
    broker: Connection | str,
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
    return new_consumer(
        broker,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **settings,
    )
