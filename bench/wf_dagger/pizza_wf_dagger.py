"""The README pizza workflow on wf-dagger 0.2.6 (Wayfair's Dagger, from PyPI) against a real
Kafka broker: the baseline that daggerflow's ``bench/pizza.py`` is compared with (issue #3 §4).

Run it with the interpreter of the separate virtualenv that ``bench/wf_dagger/setup.sh``
builds (never with the repo's ``.venv``: wf-dagger's package is called ``dagger`` and needs
its own set of undeclared dependencies)::

    bash bench/wf_dagger/setup.sh                      # once: /tmp/wfd-venv
    tools/kafka/broker start                           # or reuse a running broker
    /tmp/wfd-venv/bin/python bench/wf_dagger/pizza_wf_dagger.py --workflows 2000

The workflow is the README's, verbatim where it can be: ``Order`` (``OrderCommandTask``, a
``KafkaCommandTask`` that sends ``{"order_id", "customer_id", "pizza_type"}`` to
``pizza_order_topic``, then ``PizzaWaitForReadyListener``, a ``KafkaListenerTask`` on the topic
``PizzaWaitForReadyListener`` correlated on ``order_id``), then ``Delivery`` (an
``ExecutorTask``). Two things differ from the README, as in daggerflow's bench: the delivery
task records a timestamp instead of POSTing to www.deliverysvc.com (no network here), and an
order-service agent on ``pizza_order_topic`` in the same worker answers READY at once.

What runs is Dagger's own engine on faust-streaming: its faust agents consume real topics on
the broker (the listener agent Dagger registers for ``PizzaWaitForReadyListener``, our
order-service agent, our creation agent), its command task produces to Kafka, and every
workflow write goes through Dagger's ``IStore.insert_key_value`` (which publishes the
jsonpickled workflow to ``task_update_topic``, as the README configures, and awaits it).

Stores (``--store``):

- ``rocksdb`` (default): Dagger's own ``RocksDBStore`` (``store="rocksdb://"``), i.e. faust
  Tables on rocksdict with their Kafka changelog topics. faust only writes a table from
  inside an event, so workflows are created by an agent on a creation topic (as Dagger's
  integration-test app creates OrderWorkflows from ``orders_topic``). As shipped it cannot
  store a workflow: Dagger's Records are declared ``serializer="raw"``, which encodes a Record
  to a dict, and rocksdict (``ValueError: raw mode only support bytes``) and the changelog
  producer (``TypeError: a bytes-like object is required, not 'dict'``) want bytes.
  ``--rocksdb-serializer`` (default ``pickle``, a codec faust ships) sets that option on every
  Dagger Record class and on the three tables at start-up (no Dagger file is edited); ``raw``
  keeps Dagger's setting and shows the failure.
- ``memory``: ``MemoryStore`` below, an ``IStore`` subclass of ours that keeps the three
  "tables" in Python dicts (no serialization, no durability, no changelog): Dagger's best
  case, with Dagger's Records untouched.

Completion is observed through Dagger's ``task_update_callbacks`` (awaited by the store on
every workflow write): a workflow counts as completed at the write whose root status is
COMPLETED. The timed run starts after a warm-up, when the first creation request is sent,
and ends at the last completion. Every topic and the faust app id carry a per-run prefix, so
runs never see each other's data and never touch daggerflow's topics; they are deleted at
the end unless ``--keep-topics``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncGenerator, Mapping
from typing import Any

# wf-dagger's engine and its faust/mode (installed from PyPI into the separate venv).
import faust
import mode
from dagger.modeler.builder_helper import DAGBuilderHelper
from dagger.service.services import Dagger
from dagger.store.stores import IStore
from dagger.tasks.task import (
    TERMINAL_STATUSES,
    ExecutorTask,
    ITask,
    ITemplateDAGInstance,
    KafkaCommandTask,
    KafkaListenerTask,
    TaskLookupKey,
    TaskStatusEnum,
    Trigger,
)
from dagger.templates.template import IProcessTemplateDAGBuilder, ITemplateDAG

log = logging.getLogger("pizza_wf_dagger")


# ---------------------------------------------------------------------------------------------
# An in-memory IStore (our code, Dagger's interface): used only with --store memory.
# ---------------------------------------------------------------------------------------------


class _DictTable(dict):
    """What IStore's generic table helpers need from a "table": get, [k] = v, pop, values."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class MemoryStore(IStore):
    """Dagger's ``IStore`` over three Python dicts. Workflows are kept as live objects (no
    serialization, no durability): the least work a store can do, so Dagger's best case."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.kv_table = _DictTable("kv_table")  # type: ignore[assignment]
        self.triggers_table = _DictTable("triggers_table")  # type: ignore[assignment]
        self.correletable_keys_table = _DictTable("correletable_keys_table")  # type: ignore[assignment]

    async def insert_trigger(self, value: Trigger) -> None:
        self.triggers_table[value.get_trigger_key()] = value

    async def remove_trigger(self, value: Trigger) -> None:
        self.triggers_table.pop(value.get_trigger_key(), None)

    async def get_value_for_key(self, key: str) -> Any:
        return self.kv_table.get(key, None)

    async def get_trigger(self, key: Any, use_partition: bool = False) -> Trigger:
        return self.triggers_table.get(key, None)

    async def get_valid_triggers(self) -> AsyncGenerator[Trigger, None]:
        now = int(time.time())
        for trigger in list(self.triggers_table.values()):
            if trigger.trigger_time and trigger.trigger_time <= now:
                yield trigger

    def initialize(self, *args: Any) -> None:
        # Same timer as Dagger's stores register (the pizza workflow has no triggers).
        self.app.faust_app.timer(interval=self.app.trigger_interval, on_leader=False)(  # type: ignore
            self.app._process_system_timer_task  # type: ignore
        )

    def get_db_options(self) -> Mapping[str, Any]:
        return {}


# ---------------------------------------------------------------------------------------------
# README step 2 and 3: the leaf tasks. At module level, like the README's, because faust
# Records are looked up (and pickled) by their import path. They reach the engine through the
# module global ``workflow_engine`` as in the README.
# ---------------------------------------------------------------------------------------------

workflow_engine: Any = None  # the Dagger instance, set by Bench.build()
BENCH: Any = None  # the running Bench (timestamps)


class OrderCommandTask(KafkaCommandTask[str, str]):
    async def execute(
        self, runtime_parameters: dict[str, str], workflow_instance: ITemplateDAGInstance
    ) -> None:
        payload = {
            "order_id": runtime_parameters["order_id"],
            "customer_id": runtime_parameters["customer_id"],
            "pizza_type": runtime_parameters["pizza_type"],
        }
        await workflow_engine.topics[self.topic].send(value=json.dumps(payload))


class PizzaWaitForReadyListener(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        tpayload = json.loads(payload)
        key = tpayload[self.correlatable_key]
        return [(self.correlatable_key, key)]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


class DeliveryCommandTask(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: ITask = None) -> None:
        # The README POSTs to http://www.deliverysvc.com; here: a timestamp (no network).
        BENCH.delivery_started.setdefault(runtime_parameters["order_id"], time.perf_counter())


# ---------------------------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = args.run_id or f"wfd{uuid.uuid4().hex[:8]}"
        p = self.run_id + "_"
        self.order_topic = p + "pizza_order_topic"
        self.ready_topic = p + "PizzaWaitForReadyListener"
        self.create_topic = p + "pizza_create"
        self.update_topic = p + "task_update_topic"
        self.tasks_topic = p + "dagger_task_topic"
        self.bootstrap_topic = p + "dagger_bootstrap"
        self.app_id = p + "pizza"
        self.created_at: dict[str, float] = {}
        self.completed_at: dict[str, float] = {}
        self.ready_sent: dict[str, float] = {}
        self.delivery_started: dict[str, float] = {}
        self.writes = 0
        self.workflow_ids: dict[str, str] = {}
        self.errors: list[str] = []
        self.result: dict | None = None
        self.all_done = asyncio.Event()
        self.expected = 0
        self.datadir = tempfile.mkdtemp(prefix="wfd-bench-")

    # -- topics (aiokafka admin: faust's own dependency) -------------------------------------

    def our_topics(self) -> list[str]:
        topics = [
            self.order_topic,
            self.ready_topic,
            self.create_topic,
            self.tasks_topic,
            self.bootstrap_topic,
        ]
        if not self.args.no_update_topic:
            topics.append(self.update_topic)
        return topics

    async def create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.args.broker)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(t, num_partitions=self.args.partitions, replication_factor=1)
                    for t in self.our_topics()
                ]
            )
        finally:
            await admin.close()

    async def delete_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.args.broker)
        await admin.start()
        try:
            existing = await admin.list_topics()
            mine = [t for t in existing if t.startswith(self.run_id + "_")]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    # -- the engine and the README workflow ----------------------------------------------------

    def build(self) -> Dagger:
        args = self.args
        bench = self

        async def on_update(workflow: ITemplateDAGInstance) -> None:
            bench.writes += 1
            if workflow.status.code == TaskStatusEnum.COMPLETED.name:
                order_id = workflow.runtime_parameters.get("order_id")
                if order_id not in bench.completed_at:
                    bench.completed_at[order_id] = time.perf_counter()
                    bench.workflow_ids[order_id] = str(workflow.id)
                    if bench.expected and len(bench.completed_at) >= bench.expected:
                        bench.all_done.set()
            elif workflow.status.code in TERMINAL_STATUSES:
                bench.errors.append(
                    f"{workflow.runtime_parameters.get('order_id')} ended {workflow.status.code}"
                )

        store = "rocksdb://" if args.store == "rocksdb" else "memory://"
        global workflow_engine, BENCH
        BENCH = self
        workflow_engine = Dagger(
            broker=f"kafka://{args.broker}",
            store=store,
            datadir=self.datadir,
            application_name=self.app_id,
            package_name="pizza_wf_dagger",
            kafka_partitions=args.partitions,
            task_update_topic=None if args.no_update_topic else self.update_topic,
            tasks_topic=self.tasks_topic,
            bootstrap_topic=self.bootstrap_topic,
            trigger_interval=600,
            enable_changelog=False,
            task_update_callbacks=[on_update],
            # faust App settings (README: consumer_auto_offset_reset="latest", web_port=6066,
            # serializer="raw"): topics are fresh per run, so "earliest" loses nothing.
            consumer_auto_offset_reset="earliest",
            web_port=free_port(),
            web_host="127.0.0.1",
        )
        if args.store == "memory":
            # Dagger builds a store only for "aerospike://" and "rocksdb://"; any other value
            # leaves it without one. Give it ours, as its constructor would have.
            workflow_engine._store = MemoryStore(workflow_engine)
            workflow_engine._store.initialize()
            workflow_engine._store.enable_changelog = False
        elif args.rocksdb_serializer != "raw":
            # Dagger forces "raw" on its tables and Records; see set_record_serializer.
            changed = set_record_serializer(args.rocksdb_serializer)
            print(
                f"serializer of {len(changed)} faust Record classes (Dagger's and this script's) set to "
                f"{args.rocksdb_serializer!r} (Dagger declares 'raw'); tables too"
            )
            for table in (
                workflow_engine._store.kv_table,
                workflow_engine._store.triggers_table,
                workflow_engine._store.correletable_keys_table,
            ):
                table.value_serializer = args.rocksdb_serializer

        # --- README step 2: the Order process (task classes at module level, see above) ----
        order_topic, ready_topic = self.order_topic, self.ready_topic

        def pizza_ordering_process(process_name: str = "Order") -> IProcessTemplateDAGBuilder:
            dag_builder = DAGBuilderHelper(dagger_app=workflow_engine)
            root_task = dag_builder.build_and_link_tasks(
                [
                    dag_builder.generic_command_task_builder(
                        topic=order_topic, task_type=OrderCommandTask, process_name=process_name
                    ),
                    dag_builder.generic_listener_task_builder(
                        topic=ready_topic,
                        task_type=PizzaWaitForReadyListener,
                        process_name=process_name,
                        concurrency=args.listener_concurrency,
                    ),
                ]
            )
            return dag_builder.generic_process_builder(process_name=process_name, root_task=root_task)

        # --- README step 3: the Delivery process --------------------------------------------
        def pizza_delivery_process(process_name: str = "Delivery") -> IProcessTemplateDAGBuilder:
            dag_builder = DAGBuilderHelper(dagger_app=workflow_engine)
            root_task = dag_builder.build_and_link_tasks(
                [dag_builder.generic_executor_task_builder(task_type=DeliveryCommandTask, name=process_name)]
            )
            return dag_builder.generic_process_builder(process_name=process_name, root_task=root_task)

        # --- README step 4: register the workflow ------------------------------------------

        @Dagger.register_template("PizzaWorkflow")
        def register_pizza_workflow(template_name: str) -> ITemplateDAG:
            dag_builder_helper = DAGBuilderHelper(workflow_engine)
            order_process = dag_builder_helper.build_and_link_processes(
                [
                    pizza_ordering_process(process_name="Order"),
                    pizza_delivery_process(process_name="Delivery"),
                ]
            )
            return dag_builder_helper.generic_template(
                template_name=template_name, root_process=order_process
            )

        # --- README step 5, with the partition_key_lookup its call lacks -------------------

        async def create_and_submit_pizza_delivery_workflow(
            order_id: str, customer_id: str, pizza_type: int
        ) -> None:
            pizza_workflow_template = workflow_engine.template_dags["PizzaWorkflow"]
            pizza_workflow_instance = await pizza_workflow_template.create_instance(
                uuid.uuid1(),
                partition_key_lookup="order_id",
                repartition=False,  # Create this instance on the current worker
                order_id=order_id,
                customer_id=customer_id,
                pizza_type=pizza_type,
            )
            await workflow_engine.submit(pizza_workflow_instance, repartition=False)

        async def create_via_tasks_topic(order_id: str, customer_id: str, pizza_type: int) -> None:
            # Dagger's repartition path: the NOT_STARTED-then-SUBMITTED instance goes to
            # tasks_topic, whose agent (_process_tasks_create_event) starts and stores it.
            template = workflow_engine.template_dags["PizzaWorkflow"]
            instance = await template.create_instance(
                uuid.uuid1(),
                partition_key_lookup="order_id",
                repartition=False,
                submit_task=False,
                order_id=order_id,
                customer_id=customer_id,
                pizza_type=pizza_type,
            )
            await workflow_engine.submit(instance, repartition=True)

        create = (
            create_via_tasks_topic
            if args.create == "tasks-topic"
            else create_and_submit_pizza_delivery_workflow
        )
        self.create_fn = create

        # --- the order service and the creation agent (ours) -------------------------------
        app = workflow_engine.faust_app
        ready = workflow_engine.topics[ready_topic]

        @app.agent(
            app.topic(order_topic, value_type=str),
            name=self.run_id + "_order_service",
            concurrency=args.order_concurrency,
        )
        async def order_service(stream: Any) -> None:
            async for value in stream:
                order_id = json.loads(value)["order_id"]
                # Keyed by order id, like the creation request: with several partitions the READY
                # then lands on the partition whose RocksDB holds the workflow and its
                # correlation entry (Dagger's listener reads only the event's partition).
                await ready.send(key=order_id, value=json.dumps({"order_id": order_id, "status": "READY"}))
                bench.ready_sent.setdefault(order_id, time.perf_counter())

        self.create_requests = app.topic(self.create_topic, value_type=str)

        @app.agent(self.create_requests, name=self.run_id + "_creator", concurrency=args.create_concurrency)
        async def creator(stream: Any) -> None:
            async for value in stream:
                request = json.loads(value)
                try:
                    await create(request["order_id"], request["customer_id"], request["pizza_type"])
                except Exception as exc:
                    bench.errors.append(f"create {request['order_id']}: {exc!r}")
                    if len(bench.errors) < 5:
                        log.exception("creating %s failed", request["order_id"])

        @app.task
        async def driver() -> None:
            try:
                await bench.drive(workflow_engine)
            except Exception as exc:
                log.exception("driver failed")
                bench.result = {"error": repr(exc)}
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # mode.Worker stops gracefully on SIGTERM

        self.engine = workflow_engine
        return workflow_engine

    async def request(self, n: int, prefix: str) -> None:
        order_id = f"{prefix}-{n}"
        self.created_at[order_id] = time.perf_counter()
        await self.create_requests.send(
            key=order_id,
            value=json.dumps(
                {"order_id": order_id, "customer_id": f"customer-{n % 1000}", "pizza_type": n % 7}
            ),
        )

    async def wait_ready(self, engine: Dagger) -> None:
        app = engine.faust_app
        want = {self.order_topic, self.ready_topic, self.create_topic}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assigned = {tp.topic for tp in app.consumer.assignment()} if app.consumer else set()
            if want <= assigned and not app.rebalancing:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"no partition assignment for {sorted(want)} within 120 s")

    async def phase(self, count: int, prefix: str, timeout: float) -> tuple[float, float]:
        """Send `count` creation requests and wait for `count` completions more."""
        self.expected = len(self.completed_at) + count
        self.all_done.clear()
        start = time.perf_counter()
        cpu_start = time.process_time()
        if self.args.create == "direct":
            # README step 5 called straight from the driver (no creation topic): only the
            # memory store allows it, faust's RocksDB tables write only inside an event.
            numbers = iter(range(count))

            async def creator() -> None:
                for n in numbers:
                    order_id = f"{prefix}-{n}"
                    self.created_at[order_id] = time.perf_counter()
                    try:
                        await self.create_fn(order_id, f"customer-{n % 1000}", n % 7)
                    except Exception as exc:
                        self.errors.append(f"create {order_id}: {exc!r}")

            await asyncio.gather(*(creator() for _ in range(self.args.create_concurrency)))
        else:
            for n in range(count):
                await self.request(n, prefix)
        try:
            await asyncio.wait_for(self.all_done.wait(), timeout)
        except TimeoutError:
            pass
        return start, cpu_start

    async def drive(self, engine: Dagger) -> None:
        args = self.args
        await self.wait_ready(engine)
        if args.warmup:
            await self.phase(args.warmup, "warmup", 60)
            if len(self.completed_at) < args.warmup:
                raise RuntimeError(
                    f"warm-up: {len(self.completed_at)} of {args.warmup} workflows completed in 60 s; "
                    f"errors: {self.errors[:3]}"
                )
        done_before = len(self.completed_at)
        busy_start, _ = cpu_ticks()
        start, cpu_start = await self.phase(args.workflows, "order", args.timeout)
        timed = [k for k in self.completed_at if k.startswith("order-")]
        end = max((self.completed_at[k] for k in timed), default=time.perf_counter())
        elapsed = end - start
        cpu = time.process_time() - cpu_start
        busy_end, _ = cpu_ticks()
        wall = time.perf_counter() - start
        others = max(0.0, (busy_end - busy_start) - cpu) / wall if wall > 0 else 0.0
        lat = sorted(
            (self.delivery_started[k] - t) * 1000.0
            for k, t in self.ready_sent.items()
            if k.startswith("order-") and k in self.delivery_started
        )
        e2e = sorted((self.completed_at[k] - self.created_at[k]) * 1000.0 for k in timed)
        # Check the store too: every completed workflow must read back COMPLETED.
        # (the callback runs inside insert_key_value, before the table write; read them back
        # after a moment: RocksDB through faust's table, decoding each stored value)
        await asyncio.sleep(0.5)
        stored_completed = 0
        for k in timed:
            wf = engine._store.kv_table.get(self.workflow_ids[k])
            if wf is not None and wf.status.code == TaskStatusEnum.COMPLETED.name:
                stored_completed += 1
        self.result = {
            "workflows": args.workflows,
            "completed": len(timed),
            "elapsed_s": elapsed,
            "throughput": len(timed) / elapsed if elapsed > 0 else 0.0,
            "cpu_s": cpu,
            "workflows_per_cpu_s": len(timed) / cpu if cpu > 0 else 0.0,
            "other_cpus_busy": others,
            "writes": self.writes,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "ready_to_delivery_ms": (pct(lat, 50), pct(lat, 99), lat[-1] if lat else float("nan"), len(lat)),
            "create_to_completed_ms": (pct(e2e, 50), pct(e2e, 99), e2e[-1] if e2e else float("nan")),
            "warmup_completed": done_before,
            "stored_completed": stored_completed,
        }


def set_record_serializer(codec: str) -> list[str]:
    """Make Dagger's faust Records (declared ``serializer="raw"``) encode with ``codec``.

    faust encodes a Record with the Record class's own serializer, whatever the table's is,
    and ``raw`` turns a Record into a dict, which neither rocksdict (``raw mode only support
    bytes``) nor the changelog producer accept. Setting the class option is the smallest
    change that lets Dagger's own RocksDBStore hold a workflow: no Dagger source is edited,
    but it does change how Dagger's records are encoded (documented in
    docs/wf-dagger-baseline.md). Every Record subclass defined by dagger or by this script.
    """
    changed = []
    todo = list(faust.Record.__subclasses__())
    seen = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("dagger.") or cls.__module__ == __name__:
            cls._options.serializer = codec
            changed.append(f"{cls.__module__}.{cls.__qualname__}")
    return sorted(changed)


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def cpu_speed() -> float:
    """Million iterations/s of a fixed pure-Python loop (same index as bench/pizza.py prints:
    this VM's speed varies from run to run)."""
    start = time.process_time()
    x = 0
    for i in range(2_000_000):
        x += i
    return 2.0 / (time.process_time() - start)


def cpu_ticks() -> tuple:
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - fields[3] - fields[4]) / hz, sum(fields[:8]) / hz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.platform()}"


def versions() -> str:
    from importlib.metadata import version

    names = [
        "wf-dagger",
        "faust-streaming",
        "mode-streaming",
        "aiokafka",
        "rocksdict",
        "aerospike",
        "jsonpickle",
        "python-schema-registry-client",
        "aiohttp",
    ]
    out = []
    for name in names:
        try:
            out.append(f"{name} {version(name)}")
        except Exception:
            out.append(f"{name} -")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--workflows", type=int, default=2000, help="timed workflows (default 2000)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed workflows first (default 20)")
    parser.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb")
    parser.add_argument(
        "--rocksdb-serializer",
        default="pickle",
        help="value serializer of Dagger's three RocksDB tables (Dagger sets 'raw', which fails)",
    )
    parser.add_argument(
        "--create",
        choices=["agent", "tasks-topic", "direct"],
        default="agent",
        help="agent: README create_instance(repartition=False) + submit(repartition=False) in an "
        "agent on a creation topic; tasks-topic: submit(repartition=True) through Dagger's "
        "tasks_topic; direct: the README call from the driver (memory store only)",
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of every topic and table (default 1)"
    )
    parser.add_argument("--listener-concurrency", type=int, default=1, help="README default: 1")
    parser.add_argument("--order-concurrency", type=int, default=1)
    parser.add_argument("--create-concurrency", type=int, default=1)
    parser.add_argument("--no-update-topic", action="store_true", help="omit the README's task_update_topic")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the timed run")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--run-id", help="prefix of topics and app id (default: random)")
    parser.add_argument("--loglevel", default="warning")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.create == "direct" and args.store != "memory":
        parser.error(
            "--create direct needs --store memory (faust's RocksDB tables write only inside an event)"
        )

    # The pickle codec (see set_record_serializer) warns on every decode; say it once here.
    import faust.exceptions

    warnings.filterwarnings("ignore", category=getattr(faust.exceptions, "SecurityWarning", Warning))
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"wf-dagger pizza benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}")
    print(f"packages: {versions()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    speed_before = cpu_speed()
    bench = Bench(args)
    print(
        f"store: {args.store}"
        + (f" (table serializer {args.rocksdb_serializer})" if args.store == "rocksdb" else "")
        + f", create: {args.create}, partitions: {args.partitions}, update topic: {not args.no_update_topic}, "
        f"listener concurrency: {args.listener_concurrency}, broker: {args.broker}, run id: {bench.run_id}"
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(bench.create_topics())
    asyncio.set_event_loop(loop)
    try:
        engine = bench.build()
        worker = mode.Worker(engine, loglevel=args.loglevel, daemon=True, override_logging=False, loop=loop)
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        if not args.keep_topics:
            cleanup = asyncio.new_event_loop()
            try:
                cleanup.run_until_complete(bench.delete_topics())
            except Exception as exc:
                print(f"(topic cleanup failed: {exc!r})")
            finally:
                cleanup.close()
        shutil.rmtree(bench.datadir, ignore_errors=True)

    r = bench.result
    speed_after = cpu_speed()
    if not r or "error" in r:
        print(f"FAILED: {r.get('error') if r else 'no result'}; errors: {bench.errors[:3]}")
        return 1
    lat, e2e = r["ready_to_delivery_ms"], r["create_to_completed_ms"]
    print(
        f"  workflows completed:       {r['completed']} of {r['workflows']} in {r['elapsed_s']:.2f} s "
        f"(process CPU {r['cpu_s']:.2f} s = {100 * r['cpu_s'] / r['elapsed_s']:.0f}% of one core)"
    )
    print(f"  workflows per CPU second:  {r['workflows_per_cpu_s']:,.1f} (this process only)")
    print(
        f"  other processes meanwhile: {r['other_cpus_busy']:.2f} of {os.cpu_count()} CPUs busy (the Kafka broker "
        f"included); CPU speed index before/after: {speed_before:.1f}/{speed_after:.1f} M loop iterations/s"
    )
    print(f"  completed workflows/s:     {r['throughput']:,.1f}")
    print(
        f"  workflow writes:           {r['writes']} (incl. warm-up), errors: {r['errors']} {r['first_errors']}"
    )
    print(
        f"  READY -> delivery start:   p50 {lat[0]:.2f} ms, p99 {lat[1]:.2f} ms, max {lat[2]:.2f} ms (n={lat[3]})"
    )
    print(
        f"  create -> COMPLETED:       p50 {e2e[0]:.2f} ms, p99 {e2e[1]:.2f} ms, max {e2e[2]:.2f} ms "
        "(closed burst: all requests sent at once)"
    )
    print(
        f"  store check:               {r['stored_completed']} of {r['completed']} read back from "
        f"Dagger's kv_table as COMPLETED"
    )
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "machine": machine(),
                    "packages": versions(),
                    "cpu_speed": [speed_before, speed_after],
                    **r,
                },
                f,
                indent=2,
            )
    return 0 if r["completed"] == r["workflows"] == r["stored_completed"] else 1


if __name__ == "__main__":
    # Run as the importable module `pizza_wf_dagger`, not `__main__`: the pickled workflows
    # name their task classes by module path, which must resolve in any process.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pizza_wf_dagger

    sys.exit(pizza_wf_dagger.main())
