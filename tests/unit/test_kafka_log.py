"""Pure parts of daggerflow.kafka, without a broker: the assignment guard, the rebalance listener's
ordering (with a recording stand-in for the consumer and the producers), the internal topic specs
and the aiokafka version pin. The broker-level behaviour is in tests/kafka/test_kafka_eos.py."""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("aiokafka")

import aiokafka
import aiokafka.producer.sender
from aiokafka import TopicPartition

from daggerflow.errors import ConfigurationError
from daggerflow.kafka.admin import TopicSpec, internal_topics, refusals
from daggerflow.kafka.compat import VERIFIED_AIOKAFKA, tune_aiokafka
from daggerflow.kafka.guard import AssignmentGuard
from daggerflow.kafka.rebalance import RebalanceListener
from daggerflow.kafka.task_manager import IllegalTransition, PartitionState, TaskManager
from daggerflow.kafka.transactions import PartitionTransactions

ROOT = Path(__file__).resolve().parents[2]
TP = TopicPartition("in", 1)


@dataclass(frozen=True)
class Rec:
    offset: int


def recs(*offsets: int) -> list[Rec]:
    return [Rec(o) for o in offsets]


def offsets(records: list[Rec]) -> list[int]:
    return [r.offset for r in records]


# ---------------------------------------------------------------------------------------------
# AssignmentGuard
# ---------------------------------------------------------------------------------------------


def test_records_of_a_partition_not_yet_activated_are_dropped() -> None:
    guard = AssignmentGuard()
    (fetched,) = guard.stamp({TP: recs(0, 1, 2)})
    assert guard.admit(fetched) == []
    assert guard.dropped == 3


def test_only_records_at_or_after_the_next_expected_offset_are_admitted() -> None:
    guard = AssignmentGuard()
    guard.activate(TP, 100)
    (fetched,) = guard.stamp({TP: recs(98, 99, 100, 101)})
    assert offsets(guard.admit(fetched)) == [100, 101]
    assert guard.next_offset(TP) == 102 and guard.dropped == 2
    # a batch overlapping what was already handed out: only the new part
    (again,) = guard.stamp({TP: recs(101, 102, 103)})
    assert offsets(guard.admit(again)) == [102, 103]
    # offsets may jump forward (transaction markers, aborted or compacted records): not a reason to drop
    (gap,) = guard.stamp({TP: recs(110, 111)})
    assert offsets(guard.admit(gap)) == [110, 111]
    assert guard.next_offset(TP) == 112


def test_a_batch_fetched_before_a_reactivation_is_dropped_even_if_its_offsets_look_fresh() -> None:
    # the spike's duplicate: getmany() returned 2400..2499, then the assignment seeked to 2400;
    # the batch in hand must not be processed, the one fetched after the seek must be, once
    guard = AssignmentGuard()
    guard.activate(TP, 2000)
    (in_hand,) = guard.stamp({TP: recs(*range(2400, 2500))})
    guard.activate(TP, 2400)  # rebalance: fenced, committed offset read, seek(2400)
    assert guard.admit(in_hand) == []
    (refetched,) = guard.stamp({TP: recs(*range(2400, 2500))})
    assert offsets(guard.admit(refetched)) == list(range(2400, 2500))
    (duplicate,) = guard.stamp({TP: recs(*range(2400, 2500))})
    assert guard.admit(duplicate) == []


def test_rewind_after_an_aborted_batch_drops_what_is_in_hand_and_admits_the_retry() -> None:
    guard = AssignmentGuard()
    guard.activate(TP, 0)
    first, second = guard.stamp({TP: recs(0, 1, 2), TopicPartition("in", 2): recs(5)})
    assert offsets(guard.admit(first)) == [0, 1, 2]
    (ahead,) = guard.stamp({TP: recs(3, 4)})  # fetched before the abort
    guard.rewind(TP, 0)  # transaction aborted; the caller seeks back to 0
    assert guard.admit(ahead) == []  # would otherwise be processed before 0..2
    (retry,) = guard.stamp({TP: recs(0, 1, 2)})
    assert offsets(guard.admit(retry)) == [0, 1, 2]
    assert guard.admit(second) == []  # partition 2 was never activated


def test_deactivation_drops_everything_until_the_next_activation() -> None:
    guard = AssignmentGuard()
    guard.activate(TP, 0)
    (fetched,) = guard.stamp({TP: recs(0)})
    guard.deactivate(TP)
    assert not guard.is_active(TP)
    assert guard.admit(fetched) == []
    (later,) = guard.stamp({TP: recs(1)})
    assert guard.admit(later) == []
    guard.rewind(TP, 0)  # no effect on an inactive partition
    assert not guard.is_active(TP)


def test_empty_partitions_are_not_stamped() -> None:
    assert AssignmentGuard().stamp({TP: []}) == []


# ---------------------------------------------------------------------------------------------
# TaskManager (recording stand-ins for the consumer and the producers)
# ---------------------------------------------------------------------------------------------


class FakeConsumer:
    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self._committed = committed
        self.calls: list[tuple[str, Any]] = []
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)
        self.calls.append(("pause", sorted(tps)))

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)
        self.calls.append(("resume", sorted(tps)))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", (tp, offset)))

    async def committed(self, tp: TopicPartition) -> int | None:
        self.calls.append(("committed", tp))
        return self._committed.get(tp)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls.append(("beginning_offsets", sorted(tps)))
        return dict.fromkeys(tps, 7)


class FakeTransactions:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer
        self.started: list[int] = []
        self.stopped: list[int] = []

    async def start(self, partition: int) -> None:
        self.started.append(partition)
        self.consumer.calls.append(("fence", partition))

    async def stop(self, partition: int) -> None:
        self.stopped.append(partition)


def make_listener(
    committed: dict[TopicPartition, int | None], restore: Any = None, on_revoked: Any = None
) -> tuple[TaskManager, FakeConsumer, FakeTransactions, AssignmentGuard]:
    consumer = FakeConsumer(committed)
    transactions = FakeTransactions(consumer)
    guard = AssignmentGuard()
    listener = TaskManager(
        consumer, cast(PartitionTransactions, transactions), guard, restore=restore, on_revoked=on_revoked
    )
    return listener, consumer, transactions, guard


async def test_assignment_returns_at_once_and_activates_in_the_background_fence_first() -> None:
    events = TopicPartition("events", 0)
    corr = TopicPartition("correlation", 0)
    other = TopicPartition("events", 1)
    release = asyncio.Event()
    restored: list[int] = []

    async def restore(partition: int) -> None:
        consumer.calls.append(("restore", partition))
        restored.append(partition)
        if partition == 0:
            await release.wait()  # a slow restore must not hold the callback

    listener, consumer, transactions, guard = make_listener({events: 40, corr: None, other: 3}, restore)
    consumer.assigned = {events, corr, other}
    # returns although task 0's restore is blocked (it would time out here if it waited for it)
    await asyncio.wait_for(listener.handle_assigned([events, corr, other]), 1)
    assert consumer.calls[0] == ("pause", sorted([events, corr, other]))  # paused before anything
    assert consumer.paused >= {events, corr}
    await listener.wait_active([1])  # task 1 does not wait for task 0's restore
    assert listener.active == {1} and guard.is_active(other) and not guard.is_active(events)
    release.set()
    await listener.wait_active([0, 1])
    assert consumer.paused == set()
    at = consumer.calls.index
    # rule 1: fence, then restore, then read the committed offsets, then seek
    assert at(("fence", 0)) < at(("restore", 0)) < at(("committed", events)) < at(("seek", (events, 40)))
    assert at(("fence", 0)) < at(("committed", corr)) < at(("seek", (corr, 7)))  # no offset: the beginning
    assert at(("seek", (events, 40))) < at(("resume", sorted([events, corr])))
    assert guard.next_offset(events) == 40 and guard.next_offset(corr) == 7
    # co-partitioned topics share one task, hence one producer
    assert sorted(transactions.started) == [0, 1]


async def test_a_revocation_during_activation_cancels_it_and_nothing_is_resumed() -> None:
    tp = TopicPartition("events", 0)
    started = asyncio.Event()

    async def restore(partition: int) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes by itself

    revoked: list[frozenset[int]] = []

    async def on_revoked(partitions: frozenset[int]) -> None:
        revoked.append(partitions)

    listener, consumer, transactions, guard = make_listener({tp: 5}, restore, on_revoked)
    consumer.assigned = {tp}
    await listener.handle_assigned([tp])
    await started.wait()
    consumer.assigned = set()
    await listener.handle_revoked([tp])
    assert revoked == [frozenset({0})] and transactions.stopped == [0]
    assert not [c for c in consumer.calls if c[0] in ("seek", "resume")]
    assert not guard.is_active(tp) and listener.active == frozenset()


async def test_a_migrated_task_is_closed_and_activated_again() -> None:
    tp = TopicPartition("events", 2)
    listener, consumer, transactions, guard = make_listener({tp: 10})
    consumer.assigned = {tp}
    await listener.handle_assigned([tp])
    await listener.wait_active([2])
    consumer._committed[tp] = 25  # what the new fence reveals
    activations = listener.activation_count
    await listener.handle_migrated(2)
    assert not guard.is_active(tp) and tp in consumer.paused and transactions.stopped == [2]
    await listener.wait_active([2])
    assert listener.activation_count == activations + 1
    assert transactions.started == [2, 2] and guard.next_offset(tp) == 25 and tp not in consumer.paused


async def test_an_activation_step_that_never_returns_is_retried_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fence that waits on the broker forever (a coordinator still finishing what a crash
    interrupted) is given up after the step timeout, logged with the step's name, and tried
    again: the partition gets activated instead of staying paused in silence."""
    from daggerflow.kafka import task_manager

    monkeypatch.setattr(task_manager, "ACTIVATION_STEP_TIMEOUT_S", 0.05)
    tp = TopicPartition("events", 0)
    listener, consumer, transactions, guard = make_listener({tp: 7})
    start = transactions.start
    hangs = [True]

    async def start_or_hang(partition: int) -> Any:
        if hangs.pop(0) if hangs else False:
            await asyncio.Event().wait()
        return await start(partition)

    monkeypatch.setattr(transactions, "start", start_or_hang)
    consumer.assigned = {tp}
    with caplog.at_level(logging.WARNING, logger="daggerflow.kafka.rebalance"):
        await listener.handle_assigned([tp])
        await asyncio.wait_for(listener.wait_active([0]), 5)
    assert guard.next_offset(tp) == 7 and tp not in consumer.paused
    assert any("the fence of task 0 took more than" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


# ---------------------------------------------------------------------------------------------
# topic specs and the aiokafka pin
# ---------------------------------------------------------------------------------------------


def test_internal_topics_are_co_partitioned_and_the_changelog_is_compacted() -> None:
    topics = internal_topics("pizza", 6)
    assert [t.name for t in topics.all()] == [
        "pizza-events",
        "pizza-changelog",
        "pizza-correlation",
        "pizza-dead-letter",
    ]
    assert [t.partitions for t in topics.all()] == [6, 6, 6, 1]
    assert topics.changelog.cleanup_policy == "compact"
    assert {t.cleanup_policy for t in (topics.events, topics.correlation, topics.dead_letter)} == {"delete"}
    assert internal_topics("x").events.partitions == 12


def _kafka_runtime(engine: Any) -> Any:
    """The runtime the engine would start with (not started: no broker is needed)."""
    from daggerflow.pipeline.jobs import JobRunner
    from daggerflow.pipeline.notify import CommitObserver

    return engine._build_runtime(JobRunner(None, 1), CommitObserver(lambda instance: instance))


def test_dead_letter_topic_is_the_option_or_the_runtimes_default() -> None:
    """``Dagger(dead_letter_topic=...)`` names the topic on both runtimes; unset, each runtime
    has its own default. On Kafka it is one of the internal topics (created at start and
    watched by the hanging-transaction check)."""
    from daggerflow import Dagger

    assert Dagger(web_port=None).dead_letter_topic == "daggerflow-dead-letter"
    assert Dagger(web_port=None, dead_letter_topic="letters").dead_letter_topic == "letters"
    kafka = Dagger(broker="kafka://127.0.0.1:9092", application_name="pizza", web_port=None)
    assert kafka.dead_letter_topic == "pizza-dead-letter"
    assert _kafka_runtime(kafka).topics.dead_letter.name == "pizza-dead-letter"
    custom = Dagger(broker="kafka://127.0.0.1:9092", application_name="pizza", dead_letter_topic="letters")
    topics = _kafka_runtime(custom).topics
    assert topics.dead_letter.name == "letters" and topics.dead_letter in topics.all()
    assert internal_topics("pizza", 6, dead_letter="letters").dead_letter.partitions == 1


@pytest.mark.parametrize(
    ("name", "partitions", "rf"),
    [("bad name", 1, 1), ("x" * 250, 1, 1), ("..", 1, 1), ("ok", 0, 1), ("ok", 1, 0)],
)
def test_invalid_topic_specs_are_refused(name: str, partitions: int, rf: int) -> None:
    with pytest.raises(ConfigurationError):
        TopicSpec(name, partitions, replication_factor=rf)


def test_the_aiokafka_pin_matches_the_verified_version_and_the_backoff_patch_applies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (requirement,) = [
        r for r in pyproject["project"]["optional-dependencies"]["kafka"] if r.startswith("aiokafka")
    ]
    minor = VERIFIED_AIOKAFKA.rstrip(".")
    assert re.fullmatch(rf"aiokafka>={re.escape(minor)}(\.0)?,<0\.\d+", requirement), requirement
    assert str(aiokafka.__version__).startswith(VERIFIED_AIOKAFKA)
    tune_aiokafka()
    assert aiokafka.producer.sender.BACKOFF_OVERRIDE == 0.002


def test_create_topics_refusals_name_the_topic_and_accept_a_concurrent_creation() -> None:
    specs = {n: TopicSpec(n, 4) for n in ("made", "raced", "refused")}
    # (topic, error_code, error_message): 0 created, 36 TopicAlreadyExists, 17 InvalidTopic
    errors = [("made", 0, None), ("raced", 36, "Topic 'raced' already exists."), ("refused", 17, "collides")]
    (message,) = refusals(errors, specs)
    assert message.startswith("Kafka refused to create topic 'refused' (4 partitions, cleanup.policy=delete")
    assert message.endswith(": collides")
    assert refusals([("other", 17)], specs) == [
        "Kafka refused to create topic 'other' (?, replication factor ?): InvalidTopicError"
    ]


async def test_partition_states_follow_the_lifecycle_and_refuse_illegal_moves() -> None:
    tp = TopicPartition("events", 4)
    manager, consumer, _, _ = make_listener({tp: 3})
    consumer.assigned = {tp}
    assert manager.state(4) is None
    await manager.handle_assigned([tp])
    assert manager.state(4) in (PartitionState.ASSIGNED, PartitionState.RESTORING)
    await manager.wait_active([4])
    assert manager.state(4) is PartitionState.RUNNING and manager.owned == {4}
    with pytest.raises(IllegalTransition):
        manager._transition(4, PartitionState.RESTORING)  # RUNNING -> RESTORING skips the fence
    consumer.assigned = set()
    await manager.handle_revoked([tp])
    assert manager.state(4) is PartitionState.REVOKED and manager.owned == frozenset()
    await manager.handle_migrated(4)  # a late TaskMigrated of a revoked task: nothing to do
    assert manager.state(4) is PartitionState.REVOKED
    await manager.close()
    assert manager.state(4) is PartitionState.CLOSED


async def test_the_rebalance_listener_only_forwards_to_the_task_manager() -> None:
    calls: list[tuple[str, list[TopicPartition]]] = []

    class Handler:
        async def handle_assigned(self, assigned: Any) -> None:
            calls.append(("assigned", list(assigned)))

        async def handle_revoked(self, revoked: Any) -> None:
            calls.append(("revoked", list(revoked)))

    listener = RebalanceListener(Handler())
    await listener.on_partitions_revoked([TP])
    await listener.on_partitions_assigned([TP])
    assert calls == [("revoked", [TP]), ("assigned", [TP])]


async def test_a_second_revocation_of_the_same_partitions_is_harmless() -> None:
    # A consumer that fails to rejoin (a broker restart) revokes its assignment again.
    tp = TopicPartition("events", 5)
    revoked: list[frozenset[int]] = []

    async def on_revoked(partitions: frozenset[int]) -> None:
        revoked.append(partitions)

    manager, consumer, transactions, _ = make_listener({tp: 1}, on_revoked=on_revoked)
    consumer.assigned = {tp}
    await manager.handle_assigned([tp])
    await manager.wait_active([5])
    await manager.handle_revoked([tp])
    await manager.handle_revoked([tp])
    assert manager.state(5) is PartitionState.REVOKED
    assert revoked == [frozenset({5}), frozenset({5})] and transactions.stopped == [5, 5]
