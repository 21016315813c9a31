"""The engine's metrics: Prometheus instruments in a registry of the engine's own (served at
``/metrics``), mirrored to OpenTelemetry instruments when the application installed a meter
provider.

Labels are template, task and topic names only (and an outcome), never instance ids,
correlation values or offsets: their number is bounded by the application's templates.
Each label combination is bound once (``Family.child``) and kept, so recording costs a
dictionary look-up and the instruments' own work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import metrics as otel
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Seconds, from a fast commit to a day-long wait.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)  # fmt: skip
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def meter_provider() -> Any | None:
    """The application's meter provider, or None if it installed none."""
    provider = otel.get_meter_provider()
    if isinstance(provider, otel.NoOpMeterProvider) or type(provider).__name__ == "_ProxyMeterProvider":
        return None
    return provider


class Child:
    """One label combination of a family, in both systems."""

    __slots__ = ("attributes", "otel", "prom")

    def __init__(self, prom: Any, otel_instrument: Any, attributes: dict[str, str]) -> None:
        self.prom = prom
        self.otel = otel_instrument
        self.attributes = attributes

    def inc(self, amount: float = 1.0) -> None:
        self.prom.inc(amount)
        if self.otel is not None:
            self.otel.add(amount, self.attributes)

    def observe(self, value: float) -> None:
        self.prom.observe(value)
        if self.otel is not None:
            self.otel.record(value, self.attributes)

    def set(self, value: float) -> None:
        self.prom.set(value)
        if self.otel is not None:
            self.otel.set(value, self.attributes)


class Family:
    def __init__(self, prom: Any, otel_instrument: Any, labels: Sequence[str]) -> None:
        self._prom = prom
        self._otel = otel_instrument
        self._labels = tuple(labels)
        self._children: dict[tuple[str, ...], Child] = {}

    def child(self, *values: str) -> Child:
        found = self._children.get(values)
        if found is None:
            prom = self._prom.labels(*values) if self._labels else self._prom
            found = self._children[values] = Child(prom, self._otel, dict(zip(self._labels, values, strict=True)))
        return found


class _Waiting(Collector):
    """Open listeners and their oldest wait, from what ``Metrics.open_listeners`` holds."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["template", "task", "topic"]
        count = GaugeMetricFamily("daggerflow_listeners_open", "listeners waiting for a message", labels=labels)
        oldest = GaugeMetricFamily("daggerflow_listener_oldest_wait_seconds",
                                   "how long the longest-waiting listener has waited", labels=labels)  # fmt: skip
        for key, (n, age) in self._metrics.waiting().items():
            count.add_metric(list(key), n)
            oldest.add_metric(list(key), age)
        yield count
        yield oldest


class Metrics:
    def __init__(self, now: Callable[[], float], meter_provider: Any | None = None) -> None:
        self.registry = CollectorRegistry()
        self._now = now
        self._meter = meter_provider.get_meter("daggerflow") if meter_provider is not None else None
        # Open listeners: (instance, node) -> ((template, task, topic), waiting since).
        self.open_listeners: dict[tuple[str, str], tuple[tuple[str, str, str], float]] = {}
        self.workflows_started = self._counter("workflows_started", "workflow instances started", ["template"])
        self.workflows_completed = self._counter("workflows_completed", "workflow instances ended, by outcome",
                                                 ["template", "outcome"])  # fmt: skip
        self.workflow_duration = self._histogram("workflow_duration_seconds", "from creation to the end",
                                                 ["template", "outcome"])  # fmt: skip
        self.task_duration = self._histogram("task_duration_seconds", "a task's run, from start to its end",
                                             ["template", "task", "outcome"])  # fmt: skip
        self.schedule_to_start = self._histogram("task_schedule_to_start_seconds",
                                                 "from a task becoming ready to its first attempt starting",
                                                 ["template", "task"])  # fmt: skip
        self.retries = self._counter("task_retries", "failed attempts that will be retried", ["template", "task"])
        self.commands_sent = self._counter("commands_sent", "messages sent by tasks",
                                           ["template", "task", "topic"])  # fmt: skip
        self.listener_wait = self._histogram("listener_wait_duration_seconds", "from a listener starting to wait to its end",
                                             ["template", "task", "topic"])  # fmt: skip
        self.correlation = self._counter("correlation_messages", "listener messages by correlation result",
                                         ["topic", "result"])  # fmt: skip
        self.timer_lateness = self._histogram("timer_lateness_seconds", "how late timers fire", ["purpose"])
        self.commit_duration = self._histogram("commit_duration_seconds", "one batch's commit", [])
        self.batch_size = self._histogram("commit_batch_size", "inputs per committed batch", [], SIZE_BUCKETS)
        self.consumer_lag = self._gauge("kafka_consumer_lag", "records behind the end of the partitions this worker reads",
                                        ["topic"])  # fmt: skip
        self.rebalances = self._counter("kafka_rebalances", "partition assignments changed", ["change"])
        self.http_duration = self._histogram("http_request_duration_seconds", "REST requests",
                                             ["method", "route", "status"])  # fmt: skip
        self.registry.register(_Waiting(self))
        if self._meter is not None:
            self._meter.create_observable_gauge("daggerflow.listeners.open", [self._observe_open], "{listener}")
            self._meter.create_observable_gauge("daggerflow.listener.oldest_wait", [self._observe_oldest], "s")

    def _counter(self, name: str, help_text: str, labels: list[str]) -> Family:
        prom = Counter(f"daggerflow_{name}", help_text, labels, registry=self.registry)
        inst = self._meter.create_counter(f"daggerflow.{name}".replace("_", "."), "1", help_text) if self._meter else None
        return Family(prom, inst, labels)

    def _gauge(self, name: str, help_text: str, labels: list[str]) -> Family:
        prom = Gauge(f"daggerflow_{name}", help_text, labels, registry=self.registry)
        create = getattr(self._meter, "create_gauge", None) if self._meter is not None else None
        inst = create(f"daggerflow.{name}".replace("_", "."), "{record}", help_text) if create is not None else None
        return Family(prom, inst, labels)

    def _histogram(self, name: str, help_text: str, labels: list[str], buckets: Sequence[float] = DURATION_BUCKETS) -> Family:
        prom = Histogram(f"daggerflow_{name}", help_text, labels, registry=self.registry, buckets=buckets)
        inst = None
        if self._meter is not None:
            unit = "s" if name.endswith("_seconds") else "1"
            inst = self._meter.create_histogram(f"daggerflow.{name.removesuffix('_seconds')}".replace("_", "."),
                                                unit, help_text)  # fmt: skip
        return Family(prom, inst, labels)

    def waiting(self) -> dict[tuple[str, str, str], tuple[int, float]]:
        """(template, task, topic) -> (open listeners, the oldest one's wait in seconds)."""
        now = self._now()
        out: dict[tuple[str, str, str], tuple[int, float]] = {}
        for key, since in self.open_listeners.values():
            n, age = out.get(key, (0, 0.0))
            out[key] = (n + 1, max(age, now - since))
        return out

    def _observe_open(self, options: Any) -> list[Any]:
        return [otel.Observation(n, dict(zip(("template", "task", "topic"), k, strict=True)))
                for k, (n, _) in self.waiting().items()]  # fmt: skip

    def _observe_oldest(self, options: Any) -> list[Any]:
        return [otel.Observation(age, dict(zip(("template", "task", "topic"), k, strict=True)))
                for k, (_, age) in self.waiting().items()]  # fmt: skip
