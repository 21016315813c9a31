"""Kafka pizza benchmark (issue #3 §4): the pizza workflow on the Kafka runtime, with worker processes.

    .venv/bin/python bench/kafka_pizza.py                          # {1, 2} workers x {exactly_once, at_least_once}
    .venv/bin/python bench/kafka_pizza.py --workers 1 --guarantees exactly_once --workflows 5000
    .venv/bin/python bench/kafka_pizza.py --with-wf-dagger --json /tmp/kafka_pizza.json

For each configuration the benchmark uses a fresh application name (fresh topics, groups and
state), starts the worker processes

    python -m daggerflow worker daggerflow.demo.kafka_app:engine --broker ... --datadir <tmp> --no-web

(``DAGGERFLOW_APP`` / ``DAGGERFLOW_GUARANTEE`` / ``DAGGERFLOW_PARTITIONS`` in their environment),
waits for ``worker ready`` in every worker's log and for every partition to be active, warms
up with one workflow per partition, then a driver in this process creates ``--workflows``
pizza workflows with ``--concurrency`` concurrent creators and waits until all of them are
COMPLETED.

The driver is a client engine (``kafka_app.build(role="client")``: it processes nothing, its
``create_instance`` produces the create event to the owner's partition). Completion is
observed on ``{app}.updates`` (the task-update topic, written in the workers' transactions)
by a ``read_committed`` consumer in this process, timestamped when seen: so a workflow counts
when its COMPLETED snapshot is committed *and* visible to a reader, which is what a user of
the topic sees.

Figures per configuration:

- completed workflows/s: workflows / (last COMPLETED seen - first create);
- create -> COMPLETED seen: p50 / p99 / max. In the default closed burst (every creator
  creates as fast as its ``create_instance`` returns) this is mostly queueing; ``--rate R``
  creates open-loop at R/s instead, which gives the latency at that load;
- CPU, from ``/proc/<pid>/stat`` over the timed window, in cores: each worker, the broker
  (``tools/kafka``'s pid file), this process (driver + observer: it must stay well below
  one core, else the driver is the bottleneck) and the whole machine (``/proc/stat``);
- workflows per worker CPU second (less sensitive to the VM's speed swings).

``--with-wf-dagger`` also runs the wf-dagger 0.2.6 baseline (``bench/wf_dagger``, in its own
virtualenv ``/tmp/wfd-venv``, run ``bench/wf_dagger/setup.sh`` first) against the same broker
in the same run and prints the ratio.

Environment: ``KAFKA_BENCH_PROFILE=py-spy:DIR`` (py-spy from ``$PYSPY``, default
``/tmp/pyspy-venv/bin/py-spy``: a sampler, raw flame-graph files) or ``cprofile:DIR`` (pstats
files, written when a worker exits on SIGTERM) runs every worker under that profiler;
``KAFKA_BENCH_NICE=-10`` runs the workers and this process at that nice value (the VM is
shared: it shows what the workers do when other sessions' processes wait for them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pizza import cpu_speed, cpu_ticks, machine, percentile

from daggerflow.kafka import codec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BROKER_PID_FILE = REPO / "tools" / "kafka" / ".cache" / "run" / "broker.pid"
WF_DAGGER_PYTHON = Path(os.environ.get("WFD_VENV", "/tmp/wfd-venv")) / "bin" / "python"
APP_MODULE = "daggerflow.demo.kafka_app:engine"
# KAFKA_BENCH_PROFILE=cprofile:DIR or py-spy:DIR runs every worker under that profiler.
PROFILE = os.environ.get("KAFKA_BENCH_PROFILE", "")
PYSPY = os.environ.get("PYSPY", "/tmp/pyspy-venv/bin/py-spy")
# KAFKA_BENCH_NICE=-10: run the workers (and this process) at that nice value (root only).
NICE = int(os.environ.get("KAFKA_BENCH_NICE", "0"))

TARGET_ONE_WORKER_EOS = 1000.0  # completed pizza workflows/s, one worker, exactly-once (issue #3 §4)
TARGET_RATIO = 10.0  # x wf-dagger 0.2.6

# Log lines of a worker (the runtime's interface, see /tmp/brief/common.md).
RE_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
RE_READY = re.compile(r"worker ready")
# "task 3 active at {'app-events:3': 0, ...}": one line per partition and per consumer group
# (the main group's events+correlation, each listener topic's group, each agent's group); the
# first topic named tells which group ("kind"). Revocations do not name their group, so the
# current owner of a (kind, partition) is the worker that logged its activation last.
RE_ACTIVE = re.compile(r"kafka\.rebalance: (\S+): task (\d+) active at \{")
RE_REBALANCE = re.compile(r"\b(?:revoked|assigned) tasks \[")
RE_RESTORED = re.compile(r"restored (\S+)/(\d+)\b.*?\b(\d+) records in ([0-9.]+) ?s")


def partition_of(instance_id: str, partitions: int) -> int:
    """The runtime's instance -> partition mapping."""
    return codec.partition_for(instance_id, partitions)


def ids_covering(partitions: int, prefix: str) -> list[str]:
    """One instance id per partition (the warm-up proves that every partition processes)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        oid = f"{prefix}{n}"
        found.setdefault(partition_of(oid, partitions), oid)
        n += 1
    return [found[p] for p in range(partitions)]


def bootstrap_of(broker: str) -> str:
    return broker.removeprefix("kafka://")


# CPU of processes ------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (``/proc/<pid>/stat``; psutil is not installed)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    try:
        pid = int(BROKER_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


@dataclass
class CpuWindow:
    """CPU seconds of named processes, this process and the machine between start() and stop()."""

    pids: dict[str, int]
    start_wall: float = 0.0
    start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0

    def begin(self) -> None:
        self.start_wall = time.time()
        self.start = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        self.start["driver"] = time.process_time()
        self.start["machine"] = cpu_ticks()[0]

    def end(self) -> None:
        self.elapsed = time.time() - self.start_wall
        for name, pid in self.pids.items():
            self.used[name] = proc_cpu(pid) - self.start[name]
        self.used["driver"] = time.process_time() - self.start["driver"]
        self.used["machine"] = cpu_ticks()[0] - self.start["machine"]

    def cores(self, name: str) -> float:
        return self.used.get(name, 0.0) / self.elapsed if self.elapsed > 0 else 0.0


# Worker processes and their logs ---------------------------------------------------------


def log_time(line: str, seen: float) -> float:
    """The timestamp of a worker's log line (``%(asctime)s``, local time), else when it was read."""
    m = RE_TIME.match(line)
    if not m:
        return seen
    try:
        return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return seen


@dataclass
class Restored:
    topic: str
    partition: int
    records: int
    seconds: float
    at: float


def group_kind(group: str) -> str:
    """The consumer group an activation line names: ``events`` for the main group (``{app}``:
    events, correlation and the listener topics it reads), else the rest of the group's name
    (``listener.<topic>``, ``agent.<name>``)."""
    return group.split(".", 1)[1] if "." in group else "events"


@dataclass
class WorkerLog:
    """What a worker's log says so far: ready, active partitions, restores (with times)."""

    path: Path
    offset: int = 0
    partial: str = ""
    lines: list[tuple[float, str]] = field(default_factory=list)
    ready_at: float | None = None
    active: dict[tuple[str, int], float] = field(default_factory=dict)  # (kind, p) -> last activation
    activations: list[tuple[float, int, str]] = field(default_factory=list)  # (time, p, kind)
    last_change: float = 0.0  # last assignment, revocation or activation line
    restores: list[Restored] = field(default_factory=list)

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        self.offset += len(data)
        now = time.time()
        text = self.partial + data.decode("utf-8", "replace")
        *complete, self.partial = text.split("\n")
        for line in complete:
            t = log_time(line, now)
            self.lines.append((t, line))
            if self.ready_at is None and RE_READY.search(line):
                self.ready_at = t
            if m := RE_ACTIVE.search(line):
                p, kind = int(m.group(2)), group_kind(m.group(1))
                self.active[(kind, p)] = t
                self.activations.append((t, p, kind))
                self.last_change = max(self.last_change, t)
            elif RE_REBALANCE.search(line):
                self.last_change = max(self.last_change, t)
            if m := RE_RESTORED.search(line):
                self.restores.append(
                    Restored(m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4)), t)
                )

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:]) + ("\n" + self.partial if self.partial else "")


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: WorkerLog
    datadir: Path
    started_at: float

    @property
    def pid(self) -> int:
        """The worker's Python process (under py-spy: its child, found once it exists)."""
        if PROFILE.startswith("py-spy:"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    children = f.read().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
        return self.proc.pid


def worker_env(
    app: str, broker: str, guarantee: str, partitions: int, datadir: Path, **extra: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DAGGERFLOW_BROKER=broker,
        DAGGERFLOW_APP=app,
        DAGGERFLOW_GUARANTEE=guarantee,
        DAGGERFLOW_PARTITIONS=str(partitions),
        DAGGERFLOW_DATA=str(datadir),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(
    name: str,
    app: str,
    broker: str,
    guarantee: str,
    partitions: int,
    datadir: Path,
    logdir: Path,
    extra_args: Iterable[str] = (),
    extra_env: dict[str, str] | None = None,
) -> Worker:
    datadir.mkdir(parents=True, exist_ok=True)
    log_path = logdir / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "daggerflow",
        "worker",
        APP_MODULE,
        "--broker",
        broker,
        "--datadir",
        str(datadir),
        "--no-web",
        *extra_args,
    ]
    if PROFILE:
        # Profile the workers: cProfile writes its file when the worker exits after SIGTERM;
        # py-spy (a sampler, no slow-down of the worker) when its child exits.
        kind, _, where = PROFILE.partition(":")
        Path(where).mkdir(parents=True, exist_ok=True)
        if kind == "cprofile":
            cmd[1:3] = ["-m", "cProfile", "-o", f"{where}/{name}.prof", "-m", "daggerflow"]
        else:
            cmd = [PYSPY, "record", "-r", "200", "-f", "raw", "-o", f"{where}/{name}.txt", "--", *cmd]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=worker_env(app, broker, guarantee, partitions, datadir, **(extra_env or {})),
            cwd=str(REPO),
        )
    if NICE:
        # The VM is shared with other sessions' test suites: a negative nice value gives the
        # workers the CPU first, to see what they do without that competition.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
    return Worker(name, proc, WorkerLog(log_path, offset=log_path.stat().st_size), datadir, time.time())


def poll_logs(workers: Iterable[Worker]) -> None:
    for w in workers:
        w.log.poll()


async def until(
    condition: Any, timeout: float, what: str, workers: Iterable[Worker] = (), step: float = 0.02
) -> None:
    """Poll ``condition()`` (after reading the workers' logs) until true, or raise with their tails."""
    workers = list(workers)
    deadline = time.monotonic() + timeout
    while True:
        poll_logs(workers)
        if condition():
            return
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(
                    f"{w.name} exited ({w.proc.returncode}) while waiting for {what}:\n{w.log.tail()}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.name} ---\n{w.log.tail()}" for w in workers)
            raise TimeoutError(f"no {what} after {timeout:.0f} s\n{tails}")
        await asyncio.sleep(step)


def owners(workers: Iterable[Worker], kind: str = "events") -> dict[int, str]:
    """partition -> the worker that logged its activation (in the group ``kind``) last."""
    latest: dict[int, tuple[float, str]] = {}
    for w in workers:
        for (k, p), since in w.log.active.items():
            if k == kind and (p not in latest or since >= latest[p][0]):
                latest[p] = (since, w.name)
    return {p: name for p, (_, name) in latest.items()}


def kinds(workers: Iterable[Worker]) -> set[str]:
    return {k for w in workers for (k, _) in w.log.active}


async def wait_cluster_ready(
    workers: list[Worker], partitions: int, timeout: float, quiet: float = 1.5
) -> None:
    """Every worker logged ``worker ready``; in every consumer group every partition has been
    activated; and no worker logged an assignment, revocation or activation for ``quiet``
    seconds (the groups have settled: with two workers the first one's assignment of all
    partitions is followed by a rebalance when the second joins)."""
    await until(lambda: all(w.log.ready_at for w in workers), timeout, "'worker ready' in every log", workers)

    def settled() -> bool:
        groups = kinds(workers)
        if "events" not in groups:
            return False
        if any(set(owners(workers, k)) != set(range(partitions)) for k in groups):
            return False
        if len(workers) <= partitions and set(owners(workers).values()) != {w.name for w in workers}:
            return False
        return time.time() - max(w.log.last_change for w in workers) >= quiet

    await until(settled, timeout, f"all {partitions} partitions active and settled", workers)


async def stop_worker(w: Worker, timeout: float = 30.0) -> float:
    """SIGTERM (drain) and wait; SIGKILL after ``timeout``. Returns the seconds it took."""
    t0 = time.monotonic()
    if w.proc.poll() is None:
        os.kill(w.pid, signal.SIGTERM)
        deadline = t0 + timeout
        while w.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if w.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
            w.proc.kill()
            w.proc.wait()
    w.log.poll()
    return time.monotonic() - t0


# Completions on {app}.updates ------------------------------------------------------------


@dataclass
class Seen:
    instance_id: str
    at: float
    tp: TopicPartition
    offset: int


class Completions:
    """A read_committed consumer of the task-update topic: the first COMPLETED snapshot of each
    instance, with the wall time at which it was seen. With ``deliveries=True`` the topic is
    ``{app}.deliveries`` instead (one message per workflow, keyed by order id, written by the
    delivery task in the transaction of its outcome), for runs without the update topic."""

    def __init__(self, bootstrap: str, topic: str, deliveries: bool = False) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.deliveries = deliveries
        self.seen: dict[str, Seen] = {}
        self.records = 0
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None  # read_uncommitted, for high watermarks
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60.0) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        deadline = time.monotonic() + timeout
        parts: set[int] | None = None
        while not parts:
            parts = consumer.partitions_for_topic(self.topic)
            if parts:
                break
            if time.monotonic() > deadline:
                await consumer.stop()
                raise TimeoutError(f"topic {self.topic} does not exist after {timeout:.0f} s")
            await consumer._client.force_metadata_update()  # no public metadata refresh
            await asyncio.sleep(0.2)
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        probe = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, isolation_level="read_uncommitted"
        )
        await probe.start()
        probe.assign(tps)
        self._probe = probe
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=20000)
            now = time.time()
            fresh = False
            for tp, records in batches.items():
                self.records += len(records)
                for r in records:
                    value = r.value
                    if self.deliveries:
                        iid = r.key.decode() if r.key else str(json.loads(value)["order_id"])
                        if iid not in self.seen:
                            self.seen[iid] = Seen(iid, now, tp, r.offset)
                            fresh = True
                        continue
                    # Cheap filter first: most snapshots are not the final one.
                    if value is None or b"COMPLETED" not in value:
                        continue
                    snap = json.loads(value)
                    status = snap.get("status")
                    if isinstance(status, dict):
                        status = status.get("code")
                    if status != "COMPLETED":
                        continue
                    iid = r.key.decode() if r.key else str(snap.get("id"))
                    if iid not in self.seen:
                        self.seen[iid] = Seen(iid, now, tp, r.offset)
                        fresh = True
            if fresh:
                self._changed.set()

    async def wait(self, ids: Iterable[str], timeout: float) -> None:
        missing = {i for i in ids if i not in self.seen}
        deadline = time.monotonic() + timeout
        while missing:
            if self._task is not None and self._task.done():
                self._task.result()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{len(missing)} workflows not COMPLETED after {timeout:.0f} s (e.g. {sorted(missing)[:3]})"
                )
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            missing = {i for i in missing if i not in self.seen}

    async def high_watermarks(self) -> dict[TopicPartition, int]:
        """End offsets including uncommitted records: anything at or beyond was written later."""
        assert self._probe is not None
        return dict(await self._probe.end_offsets(list(self._probe.assignment())))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for consumer in (self._consumer, self._probe):
            if consumer is not None:
                await consumer.stop()
        self._consumer = self._probe = None


# The driver ------------------------------------------------------------------------------


class Driver:
    """Creates pizza workflows through a client engine (``kafka_app.build(role="client")``)."""

    def __init__(self, app: str, broker: str, guarantee: str, partitions: int, datadir: Path) -> None:
        # kafka_app reads its configuration from the environment when it builds the engine.
        os.environ.update(worker_env(app, broker, guarantee, partitions, datadir))
        from daggerflow.demo import kafka_app

        self.engine = kafka_app.build(role="client")
        self.template: Any = None
        self.created: dict[str, float] = {}

    async def __aenter__(self) -> Driver:
        await self.engine.__aenter__()
        self.template = self.engine.get_template("PizzaWorkflow")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.__aexit__(*exc)

    async def create(self, oid: str) -> None:
        self.created[oid] = time.time()
        params = {"order_id": oid, "customer_id": f"c{len(self.created) % 1000}", "pizza_type": "margherita"}
        await self.engine.create_instance(self.template, oid, params, submit_task=True)

    async def burst(self, ids: list[str], concurrency: int) -> None:
        """Closed loop: ``concurrency`` creators, each moving on when its create returned."""
        it: Iterator[str] = iter(ids)

        async def creator() -> None:
            for oid in it:
                await self.create(oid)

        await asyncio.gather(*(creator() for _ in range(concurrency)))

    async def open_loop(self, ids: list[str], rate: float, stop: asyncio.Event | None = None) -> int:
        """Create at ``rate``/s on a fixed schedule, whether or not earlier creates returned."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending: set[asyncio.Task[None]] = set()
        n = 0
        for n, oid in enumerate(ids, 1):
            if stop is not None and stop.is_set():
                n -= 1
                break
            delay = t0 + (n - 1) / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.create(oid))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return n


# Topics ----------------------------------------------------------------------------------


async def delete_app_topics(bootstrap: str, app: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith((f"{app}-", f"{app}."))]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


# One configuration -----------------------------------------------------------------------


@dataclass
class Result:
    workers: int
    guarantee: str
    app: str
    workflows: int
    elapsed: float
    latency_ms: list[float]
    cpu: dict[str, float]
    cores: dict[str, float]
    speed: tuple[float, float]
    create_elapsed: float
    rate: float | None = None
    update_records: int = 0
    ready_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.workflows / self.elapsed

    @property
    def others(self) -> float:
        """Cores that processes other than the workers, the broker and this one used meanwhile."""
        ours = sum(v for k, v in self.cores.items() if k != "machine")
        return max(0.0, self.cores.get("machine", 0.0) - ours)

    @property
    def worker_cpu(self) -> float:
        return sum(v for k, v in self.cpu.items() if k.startswith("worker"))

    def as_json(self) -> dict[str, Any]:
        lat = self.latency_ms
        return {
            "workers": self.workers,
            "guarantee": self.guarantee,
            "app": self.app,
            "workflows": self.workflows,
            "elapsed_s": self.elapsed,
            "throughput": self.throughput,
            "rate": self.rate,
            "create_elapsed_s": self.create_elapsed,
            "latency_ms": {
                "p50": percentile(lat, 50),
                "p99": percentile(lat, 99),
                "max": lat[-1] if lat else None,
            },
            "cpu_s": self.cpu,
            "cores": self.cores,
            "other_processes_cores": self.others,
            "workflows_per_worker_cpu_s": self.workflows / self.worker_cpu if self.worker_cpu else None,
            "cpu_speed": list(self.speed),
            "update_records": self.update_records,
            "startup_s": self.ready_s,
        }


async def run_config(args: argparse.Namespace, n_workers: int, guarantee: str, root: Path) -> Result:
    bootstrap = bootstrap_of(args.broker)
    short = {"exactly_once": "eos", "at_least_once": "alo"}[guarantee]
    app = f"kb{uuid.uuid4().hex[:6]}_{n_workers}w_{short}"
    logdir = root / app
    logdir.mkdir(parents=True)
    print(f"\n== {n_workers} worker(s), {guarantee}: app {app}, logs {logdir}", flush=True)
    if args.wait_idle:
        await wait_idle(args.wait_idle, args.idle_below)
    speed_before = cpu_speed()
    t_start = time.time()
    workers = [
        start_worker(
            f"worker{i}",
            app,
            args.broker,
            guarantee,
            args.partitions,
            logdir / f"data{i}",
            logdir,
            extra_env={"DAGGERFLOW_UPDATES": "off"} if args.observe == "deliveries" else None,
        )
        for i in range(n_workers)
    ]
    deliveries = args.observe == "deliveries"
    completions = Completions(bootstrap, f"{app}.deliveries" if deliveries else f"{app}.updates", deliveries)
    try:
        await wait_cluster_ready(workers, args.partitions, args.start_timeout)
        ready_s = time.time() - t_start
        print(f"   cluster ready in {ready_s:.1f} s: owners {summarise_owners(owners(workers))}", flush=True)
        async with Driver(app, args.broker, guarantee, args.partitions, logdir / "client") as driver:
            await completions.start()
            warm = ids_covering(args.partitions, "warm-")
            await driver.burst(warm, len(warm))
            await completions.wait(warm, args.start_timeout)
            print(f"   warm-up: {len(warm)} workflows, one per partition, completed", flush=True)

            ids = [f"order-{n}" for n in range(args.workflows)]
            pids = {w.name: w.pid for w in workers}
            if (bp := broker_pid()) is not None:
                pids["broker"] = bp
            window = CpuWindow(pids)
            window.begin()
            first = time.time()
            if args.rate:
                await driver.open_loop(ids, args.rate)
            else:
                await driver.burst(ids, args.concurrency)
            create_elapsed = time.time() - first
            await completions.wait(ids, args.timeout)
            window.end()
            last = max(completions.seen[i].at for i in ids)
            latency = sorted((completions.seen[i].at - driver.created[i]) * 1000.0 for i in ids)
            owner_view = owners(workers)
        result = Result(
            n_workers,
            guarantee,
            app,
            len(ids),
            last - first,
            latency,
            dict(window.used),
            {k: window.cores(k) for k in window.used},
            (speed_before, cpu_speed()),
            create_elapsed,
            args.rate,
            completions.records,
            ready_s,
        )
        print(report(result, owner_view), flush=True)
        return result
    finally:
        await completions.stop()
        for w in workers:
            await stop_worker(w)
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                await delete_app_topics(bootstrap, app)


def code_version() -> str:
    """The commit, and the runtime files that differ from it: the workers run the working tree
    (editable install), which others may be editing while a benchmark runs."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--short", "--untracked-files=no", "src"], capture_output=True, text=True, cwd=REPO
    ).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    return commit + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


async def wait_idle(max_wait: float, busy_below: float = 0.5, window: float = 2.0) -> None:
    """Wait (at most ``max_wait`` s) until the machine, the broker excluded, is nearly idle: the
    VM is shared, and other sessions' test suites change the figures by several times."""
    deadline = time.monotonic() + max_wait
    bp = broker_pid()
    while True:
        busy0, b0 = cpu_ticks()[0], proc_cpu(bp) if bp else 0.0
        await asyncio.sleep(window)
        busy = (cpu_ticks()[0] - busy0 - ((proc_cpu(bp) - b0) if bp else 0.0)) / window
        if busy < busy_below or time.monotonic() > deadline:
            print(
                f"   machine busy (broker excluded): {busy:.2f} CPUs{' (gave up waiting)' if busy >= busy_below else ''}"
            )
            return


def summarise_owners(view: dict[int, str]) -> str:
    by: dict[str, list[int]] = {}
    for p, name in sorted(view.items()):
        by.setdefault(name, []).append(p)
    return "; ".join(f"{name}: {len(ps)} {ps}" for name, ps in sorted(by.items()))


def report(r: Result, owner_view: dict[int, str]) -> str:
    lat = r.latency_ms
    workers = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.cores.items()) if k.startswith("worker"))
    mode = f"open loop at {r.rate:.0f}/s" if r.rate else "closed burst"
    return "\n".join(
        [
            f"   {r.workflows} workflows ({mode}) completed in {r.elapsed:.2f} s "
            f"(creates took {r.create_elapsed:.2f} s): {r.throughput:,.0f} workflows/s",
            f"   create -> COMPLETED seen: p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
            f"max {lat[-1]:.1f} ms",
            f"   CPU in cores: workers [{workers}], broker {r.cores.get('broker', 0):.2f}, "
            f"driver+observer {r.cores.get('driver', 0):.2f}, machine {r.cores.get('machine', 0):.2f} of "
            f"{os.cpu_count()} (other processes {r.others:.2f})",
            f"   workflows per worker CPU second: {r.workflows / r.worker_cpu:,.0f}; "
            f"update records read: {r.update_records}; CPU speed index {r.speed[0]:.1f}/{r.speed[1]:.1f}",
            f"   owners at the end: {summarise_owners(owner_view)}",
        ]
    )


# wf-dagger -------------------------------------------------------------------------------


def run_wf_dagger(args: argparse.Namespace, root: Path, tag: str) -> dict[str, Any] | None:
    """The wf-dagger 0.2.6 pizza baseline (README configuration) in its own venv, same broker."""
    if not WF_DAGGER_PYTHON.exists():
        print(f"\n== wf-dagger: {WF_DAGGER_PYTHON} missing; running bench/wf_dagger/setup.sh", flush=True)
        subprocess.run(["bash", str(HERE / "wf_dagger" / "setup.sh")], check=True)
    out = root / f"wf_dagger_{tag}.json"
    cmd = [
        str(WF_DAGGER_PYTHON),
        str(HERE / "wf_dagger" / "pizza_wf_dagger.py"),
        "--workflows",
        str(args.wf_dagger_workflows),
        "--broker",
        bootstrap_of(args.broker),
        "--json",
        str(out),
    ]
    print(f"\n== wf-dagger 0.2.6 baseline ({tag}): {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    for line in proc.stdout.splitlines():
        if line.startswith("  "):
            print(f"   {line.strip()}")
    if proc.returncode != 0 or not out.exists():
        print(f"   wf-dagger run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return None
    data: dict[str, Any] = json.loads(out.read_text())
    return data


# main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("DAGGERFLOW_BROKER", "kafka://127.0.0.1:9092"))
    parser.add_argument("--workflows", type=int, default=5000, help="timed workflows per configuration")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent creators (closed burst)")
    parser.add_argument("--rate", type=float, help="create open-loop at this many workflows/s instead")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    parser.add_argument("--guarantees", default="exactly_once,at_least_once")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument(
        "--observe",
        choices=["updates", "deliveries"],
        default="updates",
        help="completion seen as the COMPLETED snapshot on {app}.updates (default, the README's "
        "task_update_topic on), or as the delivery message on {app}.deliveries with the workers' "
        "update topic off (DAGGERFLOW_UPDATES=off)",
    )
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the timed workflows"
    )
    parser.add_argument("--with-wf-dagger", action="store_true", help="also run the wf-dagger 0.2.6 baseline")
    parser.add_argument("--wf-dagger-workflows", type=int, default=2000)
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each configuration wait up to S s for the machine (broker excluded) to be idle",
    )
    parser.add_argument(
        "--idle-below",
        type=float,
        default=0.5,
        metavar="CPUS",
        help="--wait-idle: idle means fewer than this many CPUs busy, the broker excluded (default 0.5)",
    )
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep worker logs and state (printed path)")
    parser.add_argument("--json", help="write all results to this file")
    args = parser.parse_args(argv)

    commit = code_version()
    print(f"daggerflow Kafka pizza benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if NICE:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
        print(f"workers and this process at nice {NICE} (KAFKA_BENCH_NICE); the broker unchanged")
    root = Path(tempfile.mkdtemp(prefix="kafka-pizza-"))
    results: list[Result] = []
    wfd_runs: list[dict[str, Any]] = []
    try:
        # wf-dagger runs before and after daggerflow: the VM's speed drifts by up to 2x within
        # minutes, and the ratio should not hinge on which phase one run fell into.
        if args.with_wf_dagger and (before := run_wf_dagger(args, root, "before")) is not None:
            wfd_runs.append(before)
        for n in (int(x) for x in args.workers.split(",")):
            for g in args.guarantees.split(","):
                results.append(asyncio.run(run_config(args, n, g.strip(), root)))
        if args.with_wf_dagger and (after := run_wf_dagger(args, root, "after")) is not None:
            wfd_runs.append(after)
    finally:
        if not args.keep_logs:
            subprocess.run(["rm", "-rf", str(root)], check=False)
        else:
            print(f"logs and state kept in {root}")

    print(
        "\n| workers | guarantee | workflows/s | p50 ms | p99 ms | worker CPU (cores) | broker | driver | others | per worker CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.workers} | {r.guarantee} | {r.throughput:,.0f} | {percentile(r.latency_ms, 50):.0f} | "
            f"{percentile(r.latency_ms, 99):.0f} | {sum(v for k, v in r.cores.items() if k.startswith('worker')):.2f} | "
            f"{r.cores.get('broker', 0):.2f} | {r.cores.get('driver', 0):.2f} | {r.others:.2f} | "
            f"{r.workflows / r.worker_cpu:,.0f} |"
        )
    one_eos = next((r for r in results if r.workers == 1 and r.guarantee == "exactly_once"), None)
    if one_eos is not None:
        met = one_eos.throughput >= TARGET_ONE_WORKER_EOS
        print(
            f"target >= {TARGET_ONE_WORKER_EOS:,.0f}/s (1 worker, exactly-once): {one_eos.throughput:,.0f} -> {'met' if met else 'NOT met'}"
        )
    if wfd_runs:
        base = sum(float(w["throughput"]) for w in wfd_runs) / len(wfd_runs)
        base_cpu = sum(float(w["workflows_per_cpu_s"]) for w in wfd_runs) / len(wfd_runs)
        runs = ", ".join(
            f"{w['throughput']:,.1f}/s (speed index {w['cpu_speed'][0]:.0f}/{w['cpu_speed'][1]:.0f})"
            for w in wfd_runs
        )
        print(
            f"wf-dagger 0.2.6 (RocksDB, README configuration): {runs}; mean {base:,.1f} workflows/s, "
            f"{base_cpu:,.1f} per CPU s"
        )
        for r in results:
            print(
                f"  ratio {r.workers} worker(s) {r.guarantee}: {r.throughput / base:,.1f}x (target >= {TARGET_RATIO:.0f}x); "
                f"per worker CPU second {r.workflows / r.worker_cpu / base_cpu:,.1f}x"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "commit": commit,
                    "machine": machine(),
                    "args": vars(args),
                    "results": [r.as_json() for r in results],
                    "wf_dagger": wfd_runs,
                },
                f,
                indent=2,
            )
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
