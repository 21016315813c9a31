"""``HangingTransactions``: the background check that finds and ends hanging transactions on
the partitions a worker reads, and ends at once those a fenced owner left open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka import TopicPartition

from ...errors import DaggerError
from ..client_options import Connection
from ..settings import new_client
from .protocol import ProducerState
from .txn_admin import (
    IN_PROGRESS_STATES,
    CoordinatorTransaction,
    coordinator_transactions,
    describe_producers,
    end_offsets,
    end_transaction,
)
from .txn_log import decide, transaction_decisions

log = logging.getLogger(__name__)

#: An old open transaction on a partition, with what its coordinator knows of it (None: unknown).
_Hanging = tuple[TopicPartition, ProducerState, CoordinatorTransaction | None]


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
        broker: Connection | str,
        *,
        transaction_timeout_ms: int = 30000,
        grace_ms: int = 30000,
        interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        check_coordinator: bool = True,
    ) -> None:
        self._broker = broker
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
        client = new_client(self._broker, client_id="daggerflow-hanging-txns")
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
            self._broker,
            [transactional_id],
            since_ms=min(s.last_timestamp_ms for _, s in fenced) - self._max_age_ms,
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
        tps = sorted(self._watched)
        if not tps:
            return []
        offsets = await end_offsets(self._client, tps)
        stuck = sorted(tp for tp, (lso, hw) in offsets.items() if lso < hw)
        if not stuck:
            return []
        now_ms = self._clock() * 1000
        candidates = await self._old_candidates(stuck, now_ms)
        if not candidates:
            return []
        hanging = await self._filter_by_coordinator(candidates)
        if not hanging:
            return []
        return await self._end_with_decisions(hanging, offsets, now_ms)

    async def _old_candidates(
        self, stuck: Sequence[TopicPartition], now_ms: float
    ) -> list[tuple[TopicPartition, ProducerState]]:
        """The open transactions on ``stuck`` partitions whose last write is older than the age
        rule allows a live one. A partition whose producers cannot be described is skipped."""
        candidates: list[tuple[TopicPartition, ProducerState]] = []
        for tp in stuck:
            try:
                states = (await describe_producers(self._client, [tp])).get(tp, [])
            except (DaggerError, kafka_errors.KafkaError) as e:
                log.warning("cannot describe the producers of %s/%s: %s", tp.topic, tp.partition, e)
                continue
            candidates += [
                (tp, s)
                for s in states
                if s.current_txn_start_offset >= 0 and s.last_timestamp_ms < now_ms - self._max_age_ms
            ]
        return candidates

    async def _filter_by_coordinator(
        self, candidates: Sequence[tuple[TopicPartition, ProducerState]]
    ) -> list[_Hanging]:
        """The candidates whose coordinator is done with them (or does not know their producer
        id), with what it knows of each; none at all if the coordinators cannot be asked."""
        try:
            coordinator = (
                await coordinator_transactions(self._client, (s.producer_id for _, s in candidates))
                if self._check_coordinator
                else {}
            )
        except (DaggerError, kafka_errors.KafkaError) as e:
            log.warning("cannot ask the transaction coordinators, aborting nothing this time: %s", e)
            return []
        hanging: list[_Hanging] = []
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
        return hanging

    async def _end_with_decisions(
        self,
        hanging: Sequence[_Hanging],
        offsets: Mapping[TopicPartition, tuple[int, int]],
        now_ms: float,
    ) -> list[tuple[TopicPartition, ProducerState]]:
        """End each hanging transaction with its coordinator's recorded decision, else abort it.

        The marker must be the coordinator's decision: a broker restart skips commit markers as
        well as abort ones, and aborting a committed transaction would lose its records (its
        offsets may well be committed). Only a transaction with no recorded decision is aborted.
        Nothing is ended if the transaction log cannot be read."""
        try:
            decisions = await transaction_decisions(
                self._broker,
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
                await end_transaction(self._client, tp, s, commit=commit)
            except (DaggerError, kafka_errors.KafkaError) as e:
                log.warning("ending producer %s's transaction on %s/%s failed: %s", s.producer_id, tp.topic,
                            tp.partition, e)  # fmt: skip
                continue
            ended.append((tp, s))
            self.ended.append((tp, s, commit))
        return ended
