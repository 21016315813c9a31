"""Transaction-admin helpers that only the tests need (the runtime ends hanging transactions
with the coordinator's decision, never with a bare abort)."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from daggerflow.kafka.hanging import ProducerState, end_transaction


async def abort_transaction(client: Any, tp: TopicPartition, state: ProducerState) -> None:
    """What Kafka's ``Admin.abortTransaction(AbortTransactionSpec(tp, producerId, producerEpoch,
    coordinatorEpoch))`` does: an abort marker for ``state``'s open transaction on ``tp``."""
    await end_transaction(client, tp, state, commit=False)
