"""A harness for the Kafka runtime's integration tests: worker processes, a private broker
that can be restarted with its data, and read_committed readers of whole topics.

- :class:`Worker` runs ``python -m daggerflow worker TARGET --broker ...`` as a subprocess
  with its own datadir; its stdout and stderr go to a log file (appended across restarts),
  which :meth:`Worker.wait_log` polls and :meth:`Cluster.dump_logs` prints when a test fails.
- :class:`Cluster` is a group of workers of one application, each with its own datadir.
- :class:`TopicReader` keeps a ``read_committed`` consumer on every partition of a topic and
  reads, on each :meth:`~TopicReader.catch_up`, up to the end offsets of that moment.
- :class:`PrivateBroker` is a broker of ``tools/kafka/broker`` on free ports with its state
  in a temp dir, for the test that restarts the broker (the shared one serves other tests,
  and ``broker start`` formats a fresh data dir, which a restart test must not do).

Every test uses a fresh application name (:func:`unique_app`), so no two runs share topics,
consumer groups or transactional ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[2]
PIZZA = "daggerflow.demo.kafka_app:engine"
BROKER_SCRIPT = REPO / "tools" / "kafka" / "broker"


def unique_app() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def kafka_url(bootstrap: str) -> str:
    return bootstrap if bootstrap.startswith("kafka://") else f"kafka://{bootstrap}"


def bootstrap_of(url: str) -> str:
    return url.removeprefix("kafka://")


async def wait_until(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float,
    interval: float = 0.2,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that.
    Raise AssertionError naming ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {text}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------


class Worker:
    """One ``daggerflow worker`` process. ``start()`` may be called again after it exited
    (same datadir, same log file: the log of each run starts at :attr:`run_offset`)."""

    def __init__(
        self,
        name: str,
        target: str,
        broker_url: str,
        datadir: Path,
        log_path: Path,
        env: dict[str, str],
        args: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.target = target
        self.broker_url = broker_url
        self.datadir = datadir
        self.log_path = log_path
        self.env = env
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.run_offset = 0
        self.runs = 0

    @property
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "daggerflow", "worker", self.target,
            "--broker", self.broker_url,
            "--datadir", str(self.datadir),
            "--web-port", "0",
            *self.args,
        ]  # fmt: skip

    def start(self) -> Worker:
        assert not self.alive, f"{self.name} is already running"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.run_offset = log.tell()
            self.runs += 1
            log.write(f"===== {self.name} run {self.runs}: {' '.join(self.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, whole: bool = False) -> str:
        """This run's log (``whole``: every run's)."""
        try:
            with self.log_path.open("rb") as f:
                if not whole:
                    f.seek(self.run_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 150) -> str:
        return "\n".join(self.log(whole=True).splitlines()[-lines:])

    async def wait_log(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until this run's log has ``count`` matches of ``pattern``; return them all.
        Fails at once if the process exits first."""
        regex = re.compile(pattern)

        def found() -> list[re.Match[str]] | None:
            matches = list(regex.finditer(self.log()))
            if len(matches) >= count:
                return matches
            if not self.alive:
                rc = self.proc.returncode if self.proc else None
                raise AssertionError(
                    f"{self.name} exited (rc={rc}) before logging {pattern!r} x{count}:\n{self.tail(60)}"
                )
            return None

        result: list[re.Match[str]] = await wait_until(
            found, timeout, 0.1, lambda: f"{pattern!r} x{count} in the log of {self.name}:\n{self.tail(60)}"
        )
        return result

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await self.wait_log(r"worker ready", timeout)

    def active_partitions(self) -> list[int]:
        """Partitions this run logged as activated (``task N active``), in order."""
        return [int(m.group(1)) for m in re.finditer(r"task (\d+) active", self.log())]

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def terminate_and_wait(self, timeout: float = 45.0) -> int:
        """SIGTERM, then wait for the exit (the worker drains first); its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        proc = self.proc
        try:
            await wait_until(
                lambda: proc.poll() is not None, timeout, 0.1, f"{self.name} to exit after SIGTERM"
            )
        except AssertionError:
            proc.kill()
            proc.wait(timeout=10)
            raise
        return proc.returncode

    def kill_quietly(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


class Cluster:
    """Workers of one application (``app``), each with its own datadir under ``root``."""

    def __init__(
        self,
        root: Path,
        broker_url: str,
        app: str | None = None,
        *,
        target: str = PIZZA,
        partitions: int = 12,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.broker_url = kafka_url(broker_url)
        self.bootstrap = bootstrap_of(self.broker_url)
        self.app = app or unique_app()
        self.target = target
        self.partitions = partitions
        self.extra_env = dict(env or {})
        self.workers: list[Worker] = []

    def env(self, datadir: Path) -> dict[str, str]:
        return {
            "DAGGERFLOW_BROKER": self.broker_url,
            "DAGGERFLOW_APP": self.app,
            "DAGGERFLOW_PARTITIONS": str(self.partitions),
            "DAGGERFLOW_DATA": str(datadir),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def add(self) -> Worker:
        name = f"w{len(self.workers)}"
        datadir = self.root / name / "data"
        worker = Worker(
            name, self.target, self.broker_url, datadir, self.root / name / "worker.log", self.env(datadir)
        )
        self.workers.append(worker)
        return worker

    async def start(self, n: int, timeout: float = 60.0) -> list[Worker]:
        """Add and start ``n`` workers at once; return when each logged ``worker ready``."""
        started = [self.add().start() for _ in range(n)]
        await asyncio.gather(*(w.wait_ready(timeout) for w in started))
        return started

    @property
    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    async def stop_all(self, timeout: float = 45.0) -> list[int]:
        return list(await asyncio.gather(*(w.terminate_and_wait(timeout) for w in self.running)))

    def kill_all(self) -> None:
        for w in self.workers:
            w.kill_quietly()

    def dump_logs(self, lines: int = 150) -> str:
        parts = []
        for w in self.workers:
            parts.append(f"----- {w.name} ({w.log_path}), last {lines} lines -----\n{w.tail(lines)}")
        return "\n".join(parts)

    def topic(self, name: str) -> str:
        """An application topic of the demo apps: ``{app}.{name}``."""
        return f"{self.app}.{name}"


# ---------------------------------------------------------------------------------------------
# reading topics
# ---------------------------------------------------------------------------------------------


def decode(value: bytes | None) -> Any:
    """A record value as JSON (a JSON string holding JSON is decoded once more)."""
    if value is None:
        return None
    data = json.loads(value)
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


class TopicReader:
    """read_committed reader of every partition of one topic, from the beginning; each
    :meth:`catch_up` reads up to the end offsets (last stable offsets) of that moment.

    The topic is looked up in the full metadata list before any per-topic call: a
    per-topic metadata request would auto-create a missing topic with the broker's default
    shape, which the runtime then refuses."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap_of(bootstrap)
        self.topic = topic
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []

    async def __aenter__(self) -> TopicReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _open(self) -> bool:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                isolation_level="read_committed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await self._consumer.start()
        if not self._tps:
            # The metadata of all topics (no per-topic request for a missing one).
            metadata = await self._consumer._client.fetch_all_metadata()
            partitions = metadata.partitions_for_topic(self.topic) or set()
            if not partitions:
                return False
            self._tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self._consumer.assign(self._tps)
            await self._consumer.seek_to_beginning(*self._tps)
        return True

    async def catch_up(self, timeout: float = 60.0) -> list[Any]:
        """Read every committed record up to the current end offsets; return the new ones
        (also appended to :attr:`records`). A topic that does not exist yet reads as empty."""
        if not await self._open():
            return []
        consumer = self._consumer
        assert consumer is not None
        ends = await consumer.end_offsets(self._tps)
        new: list[Any] = []
        async with asyncio.timeout(timeout):
            while True:
                pending = [tp for tp in self._tps if await consumer.position(tp) < ends[tp]]
                if not pending:
                    break
                batches = await consumer.getmany(*pending, timeout_ms=200)
                for tp in sorted(batches, key=lambda t: t.partition):
                    new.extend(batches[tp])
        self.records.extend(new)
        return new


async def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every committed record of ``topic`` (read_committed, from the beginning to the end)."""
    async with TopicReader(bootstrap, topic) as reader:
        return await reader.catch_up(timeout)


def status_of(snapshot: dict[str, Any]) -> str:
    status = snapshot.get("status")
    if isinstance(status, dict):
        return str(status.get("code"))
    return str(status)


@dataclass
class Progress:
    """Instance snapshots from the update topic, in log order per partition."""

    snapshots: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, records: Iterable[Any]) -> None:
        for r in records:
            snap = decode(r.value)
            if not isinstance(snap, dict):
                continue
            iid = str(snap.get("id") or (r.key.decode() if r.key else ""))
            self.snapshots[iid].append(snap)

    def last(self, iid: str) -> dict[str, Any] | None:
        found = self.snapshots.get(iid)
        return found[-1] if found else None

    def status(self, iid: str) -> str | None:
        snap = self.last(iid)
        return None if snap is None else status_of(snap)

    def with_status(self, status: str, ids: Iterable[str] | None = None) -> set[str]:
        keys = self.snapshots.keys() if ids is None else ids
        return {i for i in keys if self.status(i) == status}

    def update_count_problems(self) -> dict[str, list[int]]:
        """Instances whose snapshots' update_count values are not strictly increasing."""
        bad: dict[str, list[int]] = {}
        for iid, snaps in self.snapshots.items():
            counts = [int(s.get("update_count", -1)) for s in snaps]
            if any(b <= a for a, b in itertools.pairwise(counts)):
                bad[iid] = counts
        return bad


class UpdatesWatcher:
    """The application's update topic, followed: ``await watcher.poll()`` reads what is new."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.reader = TopicReader(bootstrap, topic)
        self.progress = Progress()

    async def poll(self) -> Progress:
        self.progress.add(await self.reader.catch_up())
        return self.progress

    async def close(self) -> None:
        await self.reader.close()

    async def wait_completed(self, ids: Iterable[str], timeout: float) -> None:
        wanted = set(ids)

        async def done() -> bool:
            progress = await self.poll()
            return wanted <= progress.with_status("COMPLETED", wanted)

        def why() -> str:
            missing = wanted - self.progress.with_status("COMPLETED", wanted)
            sample = sorted(missing)[:5]
            states = {i: self.progress.status(i) for i in sample}
            return f"{len(wanted)} instances COMPLETED; {len(missing)} are not, e.g. {states}"

        await wait_until(done, timeout, 0.25, why)

    async def wait_for(
        self, ids: Iterable[str], predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, dict[str, Any]]:
        """Wait until the last snapshot of each of ``ids`` satisfies ``predicate``; return them."""
        wanted = set(ids)

        async def check() -> dict[str, dict[str, Any]] | None:
            progress = await self.poll()
            last = {i: progress.last(i) for i in wanted}
            if all(s is not None and predicate(s) for s in last.values()):
                return {i: s for i, s in last.items() if s is not None}
            return None

        def why() -> str:
            bad = [i for i in sorted(wanted) if (s := self.progress.last(i)) is None or not predicate(s)]
            return f"{what}: {len(bad)} of {len(wanted)} not yet, e.g. {bad[:5]}"

        result: dict[str, dict[str, Any]] = await wait_until(check, timeout, 0.2, why)
        return result

    async def wait_count(self, ids: Iterable[str], n: int, timeout: float) -> int:
        """Wait until at least ``n`` of ``ids`` are COMPLETED; return how many are."""
        wanted = set(ids)

        async def enough() -> int:
            k = len((await self.poll()).with_status("COMPLETED", wanted))
            return k if k >= n else 0

        result: int = await wait_until(enough, timeout, 0.1, f"{n} of {len(wanted)} instances COMPLETED")
        return result


def waiting_on_listener(snapshot: dict[str, Any]) -> bool:
    """Is a listener task of this instance snapshot waiting (EXECUTING, with a topic)?"""
    tasks = snapshot.get("tasks") or {}
    return any(
        status_of(t) == "EXECUTING" and t.get("topic") and t.get("correlatable_key") for t in tasks.values()
    )


def field_counts(records: Iterable[Any], name: str = "order_id") -> Counter[str]:
    """How many records carry each value of field ``name`` (JSON values)."""
    counts: Counter[str] = Counter()
    for r in records:
        data = decode(r.value)
        if isinstance(data, dict) and name in data:
            counts[str(data[name])] += 1
    return counts


def exactly_once(counts: Counter[str], expected: Iterable[str], what: str) -> None:
    """Assert that ``counts`` holds each of ``expected`` exactly once and nothing else."""
    wanted = set(expected)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    missing = wanted - set(counts)
    extra = set(counts) - wanted
    assert not duplicates and not missing and not extra, (
        f"{what}: {len(counts)} distinct, {sum(counts.values())} records; "
        f"{len(duplicates)} duplicated (e.g. {dict(list(duplicates.items())[:5])}), "
        f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(extra)} unexpected (e.g. {sorted(extra)[:5]})"
    )


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, Any]]) -> None:
    """Send (key, JSON value) pairs with a plain idempotent producer and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_of(bootstrap), enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=key, value=json.dumps(value).encode()) for key, value in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def delete_app_topics(bootstrap: str, app: str) -> None:
    """Remove the topics of one test application (``{app}-...`` and ``{app}....``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_of(bootstrap), request_timeout_ms=10000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith((f"{app}-", f"{app}."))]
        if names:
            await admin.delete_topics(names, timeout_ms=10000)
    finally:
        await admin.close()


def run_in_thread(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> None:
    """Run a coroutine on a fresh loop in another thread (from sync fixture teardown),
    best effort: errors are printed, not raised."""

    def target() -> None:
        try:
            asyncio.run(asyncio.wait_for(coro_fn(), timeout))  # type: ignore[arg-type]
        except Exception as exc:  # teardown cleanup must not mask the test's own result
            print(f"cleanup failed: {exc!r}")

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout + 5)


def in_flight_creator(
    create: Callable[[str], Awaitable[Any]], ids: list[str], per_tick: int, tick: float
) -> asyncio.Task[None]:
    """Create ``ids`` in the background, ``per_tick`` at a time every ``tick`` seconds, so
    workflows keep arriving while a test kills, adds or restarts something (a pacing
    interval, not synchronisation: nothing waits on it to become true)."""

    async def run() -> None:
        for i in range(0, len(ids), per_tick):
            started = time.monotonic()
            await asyncio.gather(*(create(x) for x in ids[i : i + per_tick]))
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))

    return asyncio.create_task(run(), name="create-in-flight")


# ---------------------------------------------------------------------------------------------
# a private broker that can be restarted with its data
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class PrivateBroker:
    """A single-node broker of ``tools/kafka/broker`` on free ports, state under ``root``.

    :meth:`restart` stops it cleanly (SIGTERM, with ``KAFKA_KEEP_DATA`` so the data dir
    stays) and starts the same java command line again, without the ``format`` step that
    ``broker start`` always runs: the topics, offsets and transactions survive, as they
    would on a real broker restart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.state_dir = root / "kafka"
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_STATE_DIR": str(self.state_dir),
            # the SASL_SSL listener's fixed port would clash with the shared broker's
            "KAFKA_SASL": "0",
        }
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def _script(self, *args: str, extra: dict[str, str] | None = None, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(BROKER_SCRIPT), *args],
            env={**self.env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"tools/kafka/broker {' '.join(args)} failed:\n{result.stderr}\n{self.log_tail()}"
            )
        return result.stdout

    def start(self) -> None:
        self._script("start")

    def pid(self) -> int:
        return int((self.state_dir / "broker.pid").read_text().strip())

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.state_dir / "broker.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, keep_data: bool = False) -> None:
        """Stop the broker: cleanly (SIGTERM) keeping its data, or, when the data goes
        anyway, at once (SIGKILL: a clean shutdown of a busy broker takes up to 30 s)."""
        if not keep_data:
            try:
                os.kill(self.pid(), signal.SIGKILL)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass
        self._script("stop", extra={"KAFKA_KEEP_DATA": "1"} if keep_data else None)
        if self._proc is not None:  # a broker restarted by this object is its child: reap it
            self._proc.wait(timeout=30)
            self._proc = None

    async def restart(self, timeout: float = 90.0, *, hard: bool = False) -> None:
        """Stop and start again on the same data. ``hard``: SIGKILL instead of a clean stop
        (a crash). Either way this single-node broker can leave *hanging transactions* when
        transactions were in flight: during its controlled shutdown, or while it loads its
        transaction state at start-up, the coordinator finds no leader for some partitions and
        skips their markers ("Couldn't find leader endpoint ... these partitions are likely
        deleted already and hence can be skipped" in broker.log), so their last stable offset
        would never move again (KIP-664). docs/kafka-runtime-notes.md has the evidence."""
        command = Path(f"/proc/{self.pid()}/cmdline").read_bytes().split(b"\0")
        command = [c.decode() for c in command if c]
        if hard:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid(), signal.SIGKILL)
        await asyncio.to_thread(self.stop, True)

        async def closed() -> bool:  # a killed process's socket goes with it, a moment later
            return not port_open(self.port)

        await wait_until(closed, 30, 0.1, lambda: "the broker still listens after stop")
        with (self.state_dir / "broker.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # like the script's nohup: it outlives no one's terminal
            )
        self._proc = proc
        (self.state_dir / "broker.pid").write_text(f"{proc.pid}\n")
        await wait_until(self.answers, timeout, 0.5, lambda: f"the broker back:\n{self.log_tail()}")

    async def answers(self) -> bool:
        """Does it answer a metadata request (``broker status``, run off the event loop)?"""
        if not port_open(self.port):
            return False

        def status() -> int:
            return subprocess.run(
                [str(BROKER_SCRIPT), "status"], env=self.env, capture_output=True, timeout=30
            ).returncode

        return await asyncio.to_thread(status) == 0
