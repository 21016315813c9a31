"""Shared by tests/unit/test_changelog.py and tests/kafka/test_changelog_kafka.py: a capture
of every committed WriteBatch of a store, dumps of a store's state, and an order workload
that leaves every table non-empty (waiting listeners with index entries and timers,
blocked executors with pending jobs, deleted instances, a buffered message, dedupe ids)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    KafkaCommandTask,
    KafkaListenerTask,
    TaskLookupKey,
)
from daggerflow.model.instance import Correlation, encode_instance
from daggerflow.store.base import Store, WriteBatch
from daggerflow.store.changelog import Record, batch_records
from daggerflow.store.sqlite import SQLiteStore

ORDERS = "cl_orders"
READY = "cl_ready"
TEMPLATE = "ClOrder"
LISTENER_TIMEOUT = 3600.0
BUFFER_TTL = 600.0


# Capture ----------------------------------------------------------------------------------------


@dataclass
class Probes:
    """What ``logical`` asks the store about: every correlation, consumer and dedupe id
    that some batch wrote."""

    correlations: set[Correlation] = field(default_factory=set)
    consumers: set[str] = field(default_factory=set)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, batch: WriteBatch) -> None:
        self.correlations.update(c for c, *_ in batch.index_put)
        self.correlations.update(c for c, _, _ in batch.index_del)
        self.correlations.update(c for c, _, _ in batch.buffer_put)
        self.consumers.update(batch.positions)
        self.seen.update(batch.seen)

    @classmethod
    def of(cls, batches: Iterable[WriteBatch]) -> Probes:
        probes = cls()
        for batch in batches:
            probes.add(batch)
        return probes


class Capture:
    """Wraps ``store.commit`` (on the instance, not in src): after each commit, the batch's
    changelog records go to ``batches`` (and to ``sink`` if given), and waiters wake up."""

    def __init__(self, store: Store, sink: Callable[[list[Record]], None] | None = None) -> None:
        self.store = store
        self.sink = sink
        self.batches: list[list[Record]] = []
        self.commits = 0
        self.probes = Probes()
        self._changed = asyncio.Event()
        self._commit = store.commit
        store.commit = self.commit  # type: ignore[method-assign]

    def commit(self, batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        appended = self._commit(batch, ts)
        self.commits += 1
        records = batch_records(batch, ts)
        if records:
            self.batches.append(records)
            if self.sink is not None:
                self.sink(records)
        self.probes.add(batch)
        self._changed.set()
        return appended

    def records(self) -> list[tuple[int, bytes, bytes | None]]:
        """All records as one log, with offsets."""
        flat = [r for batch in self.batches for r in batch]
        return [(n, k, v) for n, (k, v) in enumerate(flat)]

    async def until(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``check()`` holds; it is tested again after every commit."""
        deadline = time.monotonic() + timeout
        while not check():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached")
            await asyncio.wait_for(self._changed.wait(), remaining)


# Dumps ------------------------------------------------------------------------------------------


def dump(store: Store) -> dict[str, Any]:
    """Every row of the store's state tables, raw (derived data included: SQLite's status,
    template and created columns; RocksDB's listing, reverse-index and purge ranges).
    Topic messages, metadata, changelog checkpoints and the embedded runtime's catalogue of
    template versions (never changelogged) are left out."""
    if isinstance(store, SQLiteStore):
        out: dict[str, Any] = {}
        for table in ("instances", "correlation", "timers", "jobs", "positions", "seen", "buffered", "history",
                      "search", "search_profiles"):
            out[table] = sorted(store.db.execute(f"SELECT * FROM {table}").fetchall())
        return out
    from daggerflow.store.rocksdb import RocksDBStore

    assert isinstance(store, RocksDBStore)
    rows: dict[str, Any] = {}
    it = store.db.iter()
    it.seek_to_first()
    while it.valid():
        key: bytes = it.key()
        if key[:1] not in (b"m", b"q", b"L", b"v"):
            rows.setdefault(key[:1].decode(), []).append((key, it.value()))
        it.next()
    del it
    return rows


def logical(store: Store, probes: Probes, now: float = 0.0) -> dict[str, Any]:
    """The state as the Store protocol shows it: comparable across store kinds."""
    everything = store.list_instances(status=None, template=None, limit=1_000_000, offset=0)
    statuses = {i.root.status for i in everything}
    templates = {i.template_name for i in everything}
    return {
        "instances": [(i.id, encode_instance(i)) for i in everything],
        "by_status": {
            s: [i.id for i in store.list_instances(status=s, template=None, limit=1_000_000, offset=0)]
            for s in statuses
        },
        "by_both": {
            (s, t): [i.id for i in store.list_instances(status=s, template=t, limit=1_000_000, offset=0)]
            for s in statuses
            for t in templates
        },
        "counts": {s: store.count_instances(status=s, template=None) for s in statuses},
        "index": {c: sorted(store.lookup(c)) for c in probes.correlations},
        "timers": sorted(store.all_timers()),
        "jobs": sorted(store.pending_jobs(), key=lambda j: (j.instance, j.node, j.seq)),
        "positions": {c: store.position(c) for c in probes.consumers},
        "seen": {s: store.has_seen(*s) for s in probes.seen},
        "buffered": {c: store.buffered(c, now) for c in probes.correlations},
    }


# The order workload -----------------------------------------------------------------------------


class ReadyListener(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    def get_message_id(self, payload: Any) -> str | None:
        return str(json.loads(payload)["msg_id"])

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


def workload_engine_options() -> dict[str, Any]:
    return {"delete_workflow_on_complete": True, "unmatched_message_ttl": {READY: BUFFER_TTL}}


class OrderWorkload:
    """Order i: the command task sends it to ORDERS; an agent answers READY unless
    i % 3 == 0 (that listener keeps waiting: an index entry and a timeout timer); the
    delivery executor of i % 3 == 1 blocks on ``gate`` (a pending job); i % 3 == 2
    completes and is deleted (tombstones)."""

    def __init__(self, engine: Dagger, n: int) -> None:
        self.engine = engine
        self.n = n
        self.gate = asyncio.Event()
        self.blocked = 0
        self.all_blocked = asyncio.Event()
        self.ids: list[str] = []
        workload = self

        class OrderTask(KafkaCommandTask[str, str]):
            async def execute(
                self, runtime_parameters: dict[str, Any], workflow_instance: Any = None
            ) -> None:
                await engine.topics[ORDERS].send(
                    value=json.dumps({"order_id": runtime_parameters["order_id"]})
                )

        class DeliveryTask(ExecutorTask[str, str]):
            async def execute(
                self, runtime_parameters: dict[str, Any], workflow_instance: Any = None
            ) -> None:
                if int(runtime_parameters["order_id"][1:]) % 3 == 1:
                    workload.blocked += 1
                    if workload.blocked == workload.expected_blocked:
                        workload.all_blocked.set()
                    await workload.gate.wait()

        helper = DAGBuilderHelper(engine)
        ordering = helper.generic_process_builder(
            process_name="Order",
            root_task=helper.build_and_link_tasks(
                [
                    helper.generic_command_task_builder(
                        topic=ORDERS, task_type=OrderTask, process_name="Order"
                    ),
                    helper.generic_listener_task_builder(
                        topic=READY, task_type=ReadyListener, process_name="Order"
                    ).set_timeout(LISTENER_TIMEOUT, status="SKIPPED"),
                ]
            ),
        )
        delivery = helper.generic_process_builder(
            process_name="Delivery",
            root_task=helper.build_and_link_tasks(
                [helper.generic_executor_task_builder(task_type=DeliveryTask, name="Delivery")]
            ),
        )
        self.template = helper.generic_template(
            template_name=TEMPLATE, root_process=helper.build_and_link_processes([ordering, delivery])
        )
        engine.add_template(TEMPLATE, self.template)

        @engine.agent(ORDERS, name="cl-order-service")
        async def order_service(value: Any) -> None:
            order_id = json.loads(value)["order_id"]
            if int(order_id[1:]) % 3 != 0:
                await engine.topics[READY].send(
                    value=json.dumps({"order_id": order_id, "msg_id": f"ready-{order_id}"})
                )

    @property
    def expected_blocked(self) -> int:
        return len([i for i in range(self.n) if i % 3 == 1])

    async def run(self, capture: Capture) -> None:
        """Create and start every order, then wait until the state is quiescent: every
        i % 3 == 0 waits on its listener, every i % 3 == 1 is blocked in its delivery, every
        i % 3 == 2 is deleted; then a READY for an unknown order (buffered) and a duplicate
        READY (dedupe) are consumed."""
        engine = self.engine
        for i in range(self.n):
            inst = await engine.create_instance(
                self.template,
                f"order-{i:05d}",
                {"order_id": f"o{i}", "customer_id": f"c{i % 7}"},
                submit_task=True,
            )
            self.ids.append(str(inst.id))

        def listening(inst: Any) -> bool:
            return any(
                n.name.endswith("listener_task") and n.status == "EXECUTING" for n in inst.nodes.values()
            )

        def settled() -> bool:
            for i, iid in enumerate(self.ids):
                inst = engine.committed(iid)
                if i % 3 == 0 and (inst is None or not listening(inst)):
                    return False
                if i % 3 == 2 and inst is not None:  # completed, then deleted
                    return False
            return True

        # wait_for() cannot wait for a deletion that already happened: test after commits.
        await capture.until(settled, timeout=30)
        await asyncio.wait_for(self.all_blocked.wait(), 30)
        store = engine.runtime.store
        ghost = await engine.topics[READY].send(value=json.dumps({"order_id": "ghost", "msg_id": "m-ghost"}))
        again = await engine.topics[READY].send(value=json.dumps({"order_id": "o2", "msg_id": "ready-o2"}))
        assert ghost is not None and again is not None
        end = store.end_offset(READY)
        await capture.until(lambda: store.position(f"listener:{READY}") == end)
        await capture.until(lambda: store.position("agent:cl-order-service") == store.end_offset(ORDERS))

    async def finish(self) -> None:
        self.gate.set()
        await asyncio.gather(
            *(self.engine.wait_for(iid, timeout=30) for i, iid in enumerate(self.ids) if i % 3 == 1)
        )
