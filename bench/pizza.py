"""Pizza benchmark (issue #2): the README's pizza workflow through the embedded runtime.

    .venv/bin/python bench/pizza.py --workflows 5000                 # throughput, then latency at half of it
    .venv/bin/python bench/pizza.py --mode throughput --workflows 5000 --concurrency 64
    .venv/bin/python bench/pizza.py --mode latency --rate 1000 --workflows 5000

Each workflow is: ``OrderCommandTask`` sends ``{"order_id": ...}`` to ``pizza_order_topic``;
``PizzaWaitForReadyListener`` waits for READY on its topic, correlated on ``order_id``;
``DeliveryCommandTask`` (an executor) runs. The order service answers instantly: it is an
agent on ``pizza_order_topic`` in the same process. State lives in a SQLite file (``--store
rocksdb``: a RocksDB directory) in a fresh temp dir with the default durability (WAL,
``synchronous=NORMAL``: every commit survives a killed process); ``--durability full`` adds
an fsync per commit.

Reported figures:

- completed workflows/s: workflows that reached COMPLETED / wall time from the first
  creation to the last completion;
- state transitions/s: ``engine.stats()["transitions"]`` / the same wall time;
- READY -> delivery latency: from the moment the order service sends its READY answer
  (``time.perf_counter()`` in the agent, keyed by order id; the message is appended when the
  agent's outbox commits, so this includes that commit) to the start of
  ``DeliveryCommandTask.execute``: p50, p99, max;
- create -> completed latency (end to end, in latency mode).

``--mode throughput`` creates the workflows as fast as ``--concurrency`` concurrent creators
can (each awaits its ``create_instance``, i.e. the durable commit) and waits for all to
complete. ``--mode latency --rate R`` starts workflows open-loop at R per second (a creation
is due at ``t0 + i / R`` whether or not earlier ones have finished). ``--mode both`` (the
default) runs the throughput mode, then the latency mode at half the measured throughput
unless ``--rate`` is given. Each mode uses a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from daggerflow import Dagger
from daggerflow.demo.pizza import register_pizza_workflow
from daggerflow.demo.services import ORDER_TOPIC, READY_TOPIC

TARGET_THROUGHPUT = 2000.0  # completed workflows/s with durable commits (issue #2)
TARGET_P99_MS = 20.0  # READY -> delivery p99 at half that load


@dataclass
class Probe:
    """Timestamps the workflow's user code records, keyed by order id."""

    ready_sent: dict[str, float] = field(default_factory=dict)
    delivery_started: dict[str, float] = field(default_factory=dict)

    def ready_to_delivery_ms(self) -> list[float]:
        return sorted(
            (self.delivery_started[k] - t) * 1000.0
            for k, t in self.ready_sent.items()
            if k in self.delivery_started
        )


def store_url(kind: str, directory: str) -> str:
    """A fresh store in ``directory``: a SQLite file, or a RocksDB directory."""
    if kind == "rocksdb":
        return f"rocksdb:///{os.path.join(directory, 'bench')}"
    return f"sqlite:///{os.path.join(directory, 'bench.db')}"


#: ``--no-metrics``: the engine records no metrics (``metrics=False``), for their cost.
METRICS = True


def build_engine(store: str, probe: Probe, durability: str, agent_concurrency: int) -> Dagger:
    """The demo's PizzaWorkflow (the README's tasks); the delivery records when it started."""
    engine = Dagger(store=store, web_port=None, durability=durability, metrics=METRICS)

    async def deliver(payload: dict[str, Any]) -> None:
        probe.delivery_started.setdefault(payload["order_id"], time.perf_counter())

    register_pizza_workflow(engine, deliver=deliver)

    @engine.agent(ORDER_TOPIC, name="order-service", concurrency=agent_concurrency)
    async def order_service(value: Any) -> None:
        order_id = json.loads(value)["order_id"]
        await engine.topics[READY_TOPIC].send(value=json.dumps({"order_id": order_id, "status": "READY"}))
        probe.ready_sent.setdefault(order_id, time.perf_counter())

    return engine


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


@dataclass
class Result:
    mode: str
    workflows: int
    elapsed: float
    cpu: float
    others: float
    transitions: int
    batches: int
    ready_to_delivery_ms: list[float]
    end_to_end_ms: list[float]
    rate: float | None = None
    speed: tuple[float, float] = (0.0, 0.0)

    @property
    def throughput(self) -> float:
        return self.workflows / self.elapsed

    def report(self) -> str:
        lines = [
            f"mode: {self.mode}" + (f" (open loop at {self.rate:.0f} workflows/s)" if self.rate else ""),
            f"  workflows completed:       {self.workflows} in {self.elapsed:.2f} s "
            f"(process CPU time {self.cpu:.2f} s = {100 * self.cpu / self.elapsed:.0f}% of one core)",
            f"  workflows per CPU second:  {self.workflows / self.cpu:,.0f} "
            "(the single-core ceiling, independent of other load on the machine)",
            f"  other processes meanwhile: {self.others:.2f} of {os.cpu_count()} CPUs busy; "
            f"CPU speed index before/after: {self.speed[0]:.1f}/{self.speed[1]:.1f} M loop iterations/s",
            f"  completed workflows/s:     {self.throughput:,.0f}",
            f"  state transitions/s:       {self.transitions / self.elapsed:,.0f} "
            f"({self.transitions} transitions, {self.batches} commits, "
            f"{self.transitions / max(1, self.batches):.1f} transitions/commit)",
        ]
        lat = self.ready_to_delivery_ms
        lines.append(
            f"  READY -> delivery start:   p50 {percentile(lat, 50):.2f} ms, p99 {percentile(lat, 99):.2f} ms, "
            f"max {lat[-1] if lat else float('nan'):.2f} ms (n={len(lat)})"
        )
        e2e = self.end_to_end_ms
        if e2e:
            lines.append(
                f"  create -> COMPLETED:       p50 {percentile(e2e, 50):.2f} ms, p99 {percentile(e2e, 99):.2f} ms, "
                f"max {e2e[-1]:.2f} ms"
            )
        return "\n".join(lines)


async def run(
    mode: str,
    workflows: int,
    concurrency: int,
    rate: float | None,
    durability: str,
    agent_concurrency: int,
    store: str = "sqlite",
) -> Result:
    with tempfile.TemporaryDirectory(prefix="daggerflow-bench-") as tmp:
        probe = Probe()
        engine = build_engine(store_url(store, tmp), probe, durability, agent_concurrency)
        template = engine.template_dags["PizzaWorkflow"]
        created: dict[str, float] = {}
        completed: dict[str, float] = {}
        async with engine:

            async def create(n: int) -> str:
                order_id = f"order-{n}"
                created[order_id] = time.perf_counter()
                await template.create_instance(
                    order_id,
                    submit_task=True,
                    order_id=order_id,
                    customer_id=f"customer-{n % 1000}",
                    pizza_type=str(n % 7),
                )
                return order_id

            async def until_completed(order_id: str) -> None:
                view = await engine.wait_for(order_id, timeout=600)
                completed[order_id] = time.perf_counter()
                if view.status.code != "COMPLETED":
                    raise RuntimeError(f"{order_id} ended {view.status.code}")

            async def one(n: int) -> None:
                await until_completed(await create(n))

            waits: list[asyncio.Task[None]] = []
            start = time.perf_counter()
            cpu_start = time.process_time()
            busy_start, total_start = cpu_ticks()
            if mode == "throughput":
                numbers = iter(range(workflows))

                async def creator() -> None:
                    # Each creator moves on once its instance is durable (created and submitted).
                    for n in numbers:
                        waits.append(asyncio.create_task(until_completed(await create(n))))

                await asyncio.gather(*(creator() for _ in range(concurrency)))
            else:
                assert rate is not None and rate > 0
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                for n in range(workflows):
                    delay = t0 + n / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)  # the open-loop schedule
                    waits.append(asyncio.create_task(one(n)))
            await asyncio.gather(*waits)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            busy_end, total_end = cpu_ticks()
            # CPU that other processes used meanwhile, in cores (the machine is shared).
            others = max(0.0, (busy_end - busy_start) - cpu) / elapsed if total_end > total_start else 0.0
            stats = engine.stats()
        e2e = sorted((completed[k] - created[k]) * 1000.0 for k in completed)
        return Result(
            mode,
            len(completed),
            elapsed,
            cpu,
            others,
            int(stats["transitions"]),
            int(stats["batches"]),
            probe.ready_to_delivery_ms(),
            e2e if mode == "latency" else [],
            rate if mode == "latency" else None,
        )


def cpu_speed() -> float:
    """Million iterations/s of a fixed pure-Python loop: this VM's speed varies from run to
    run (by up to 2x here), so each figure is printed with the speed it was measured at."""
    start = time.process_time()
    x = 0
    for i in range(2_000_000):
        x += i
    return 2.0 / (time.process_time() - start)


def cpu_ticks() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux ``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8]) / hz  # user nice system idle iowait irq softirq steal
    idle = (fields[3] + fields[4]) / hz
    return total - idle, total


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["throughput", "latency", "both"], default="both")
    parser.add_argument("--workflows", type=int, default=5000, help="workflows per mode (default 5000)")
    parser.add_argument("--rate", type=float, help="latency mode: workflows/s (default: half the throughput)")
    parser.add_argument("--concurrency", type=int, default=64, help="throughput mode: concurrent creators")
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument(
        "--store",
        choices=["sqlite", "rocksdb"],
        default="sqlite",
        help="state store: a SQLite file (default) or a RocksDB directory (the rocksdb extra)",
    )
    parser.add_argument(
        "--agent-concurrency",
        type=int,
        default=64,
        help="order-service agent: messages handled (and committed) together",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target of issue #2 is not met")
    parser.add_argument("--no-metrics", action="store_true", help="engine option metrics=False (their cost)")
    args = parser.parse_args(argv)
    global METRICS
    METRICS = not args.no_metrics
    if args.mode == "latency" and args.rate is None:
        parser.error("--mode latency needs --rate (or use --mode both)")
    print(f"daggerflow pizza benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"store: {args.store}, durability: {args.durability}, agent concurrency: {args.agent_concurrency}")

    def measure(mode: str, rate: float | None) -> Result:
        before = cpu_speed()
        result = asyncio.run(
            run(
                mode,
                args.workflows,
                args.concurrency,
                rate,
                args.durability,
                args.agent_concurrency,
                args.store,
            )
        )
        result.speed = (before, cpu_speed())
        print(result.report())
        return result

    ok = True
    throughput: Result | None = None
    if args.mode in ("throughput", "both"):
        throughput = measure("throughput", None)
        target_met = throughput.throughput >= TARGET_THROUGHPUT
        ok &= target_met
        print(f"  target >= {TARGET_THROUGHPUT:,.0f} workflows/s: {'met' if target_met else 'NOT met'}")
    if args.mode in ("latency", "both"):
        latency = measure(
            "latency",
            args.rate if args.rate is not None else (throughput.throughput / 2 if throughput else 0.0),
        )
        p99 = percentile(latency.ready_to_delivery_ms, 99)
        target_met = p99 <= TARGET_P99_MS
        ok &= target_met
        print(f"  target p99 <= {TARGET_P99_MS:.0f} ms: {'met' if target_met else 'NOT met'}")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
