"""Every access to aiokafka's private state, and the aiokafka release it was verified with.

The rest of ``daggerflow.kafka`` uses aiokafka's public API only; what it cannot do that way
goes through one named function here. Each says which private attribute it reads, so that an
aiokafka upgrade is checked in one file: re-run bench/kafka_spike/perf.py and fencing.py,
check that every attribute named below still exists and means the same, then widen the pin of
the ``kafka`` extra (pyproject.toml) and ``VERIFIED_AIOKAFKA`` together.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiokafka
import aiokafka.producer.sender as _aiokafka_sender
from aiokafka import TopicPartition

log = logging.getLogger(__name__)

#: aiokafka release line the private accesses below were verified with (pyproject pins the
#: ``kafka`` extra to it).
VERIFIED_AIOKAFKA = "0.14."
#: aiokafka waits ``BACKOFF_OVERRIDE`` (20 ms) after each commit, because the next
#: AddPartitionsToTxn gets CONCURRENT_TRANSACTIONS while the markers are written. 2 ms gives
#: 3-5x the transactions/s of one producer (notes §4: 30 -> 149 txn/s with retry_backoff_ms=10).
TXN_BACKOFF_OVERRIDE_S = 0.002


def tune_aiokafka() -> None:
    """Patch aiokafka's private ``producer.sender.BACKOFF_OVERRIDE`` (idempotent).

    Raises ``RuntimeError`` if aiokafka is not the verified release line or the constant is gone:
    the pin in pyproject's ``kafka`` extra guarantees it for normal installs.
    """
    version = str(aiokafka.__version__)
    current = getattr(_aiokafka_sender, "BACKOFF_OVERRIDE", None)
    if not version.startswith(VERIFIED_AIOKAFKA) or not isinstance(current, float):
        raise RuntimeError(
            f"daggerflow's Kafka runtime was verified with aiokafka {VERIFIED_AIOKAFKA}x, found {version} "
            f"(aiokafka.producer.sender.BACKOFF_OVERRIDE = {current!r}); install daggerflow[kafka]"
        )
    _aiokafka_sender.BACKOFF_OVERRIDE = TXN_BACKOFF_OVERRIDE_S


async def stop_consumer(consumer: Any, *, nudge_every: float = 1.0) -> None:
    """``consumer.stop()`` that cannot hang on aiokafka 0.14's fetcher.

    When the assignment goes away while fetches are in flight (the leave during ``stop``),
    the fetch routine awaits them under ``suppress(CancelledError)``, so the cancel that
    ``Fetcher.close`` sends is swallowed and the routine then waits for an assignment that
    never comes. Cancelling it again reaches it at that wait. Reads the private
    ``_fetcher._fetch_task``."""
    stopping = asyncio.ensure_future(consumer.stop())
    while True:
        done, _ = await asyncio.wait({stopping}, timeout=nudge_every)
        if done:
            exc = stopping.exception()
            if exc is not None:
                log.warning("stopping a consumer failed: %r", exc)
            return
        fetch_task = getattr(getattr(consumer, "_fetcher", None), "_fetch_task", None)
        if fetch_task is not None and not fetch_task.done():
            log.info("consumer stop is stuck in aiokafka's fetcher: cancelling it again")
            fetch_task.cancel()


def _sender_is_dead(producer: Any) -> bool:
    """True once aiokafka's sender task has ended: on a connection error during a
    transactional request it raises out of its loop and never restarts, and every later
    transactional call then waits forever (a broker restart does it). Reads the private
    ``_sender.sender_task``."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task is not None and task.done()


def _producer_is_fatal(producer: Any) -> bool:
    """True once a transactional producer is in FATAL_ERROR (fenced, or its transaction timed
    out). Reads the private ``_txn_manager``."""
    txn_manager = getattr(producer, "_txn_manager", None)
    return txn_manager is not None and bool(txn_manager.is_fatal_error())


def producer_identity(producer: Any) -> tuple[int, int] | None:
    """(producer id, epoch) a transactional producer got from InitProducerId, or None if not
    known yet. Reads the private ``_txn_manager``."""
    txn_manager = getattr(producer, "_txn_manager", None)
    if txn_manager is None or txn_manager.producer_id < 0:
        return None
    return int(txn_manager.producer_id), int(txn_manager.producer_epoch)


def producer_in_transaction(producer: Any) -> bool:
    """Whether a transactional producer has a transaction open. Reads the private ``_txn_manager``."""
    txn_manager = getattr(producer, "_txn_manager", None)
    return txn_manager is not None and bool(txn_manager.is_in_transaction())


def default_partition(producer: Any, topic: str, key: bytes | None, value: bytes | None) -> int:
    """The partition the producer's own partitioner picks for a record (its metadata must know
    ``topic``). Calls the private ``_partition``."""
    return int(producer._partition(topic, None, None, None, key, value))


async def wait_on_metadata(client: Any, topic: str) -> set[int]:
    """The partitions of ``topic``, fetching its metadata if ``client`` (an ``AIOKafkaClient``)
    does not have it yet. It adds the topic to the metadata the client keeps fetching (harmless:
    it only widens that set). Calls the private ``_wait_on_metadata``."""
    return set(await client._wait_on_metadata(topic))


def consumer_client(consumer: Any) -> Any:
    """The ``AIOKafkaClient`` of a consumer (for requests the consumer API does not offer).
    Reads the private ``_client``."""
    return consumer._client


def partition_state(consumer: Any, tp: TopicPartition) -> Any:
    """aiokafka's ``TopicPartitionState`` of an assigned partition (``has_valid_position``,
    ``position``), read without waiting, as ``consumer.position()`` reads it before it waits
    for a position being reset. Raises if ``tp`` is not assigned. Reads the private
    ``_subscription``."""
    return consumer._subscription.subscription.assignment.state_value(tp)
