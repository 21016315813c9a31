"""The engine's metrics: Prometheus instruments in a registry of the engine's own (served at
``/metrics``), mirrored to OpenTelemetry instruments when the application installed a meter
provider.

Labels are template, task and topic names only (and an outcome), never instance ids,
correlation values or offsets: their number is bounded by the application's templates.
Each label combination is bound once (``Family.child``) and kept; recording adds to plain
numbers (a histogram: one ``bisect`` and two additions), which the registry's collector
turns into the Prometheus text when ``/metrics`` is read.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import metrics as otel
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
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
    """One label combination of a family: its value(s) kept as plain numbers (the event
    loop is the only writer; a scrape reads them on the same loop), mirrored to its
    OpenTelemetry instrument when there is one."""

    __slots__ = ("attributes", "bounds", "counts", "otel", "sum", "value")

    def __init__(self, otel_instrument: Any, attributes: dict[str, str], bounds: Sequence[float] | None) -> None:
        self.otel = otel_instrument
        self.attributes = attributes
        self.value = 0.0
        self.sum = 0.0
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1) if bounds is not None else []

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount
        if self.otel is not None:
            self.otel.add(amount, self.attributes)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # type: ignore[arg-type]  # (a histogram's child)
        self.sum += value
        if self.otel is not None:
            self.otel.record(value, self.attributes)

    def set(self, value: float) -> None:
        self.value = value
        if self.otel is not None:
            self.otel.set(value, self.attributes)


class _Plain(Child):
    """A child with no OpenTelemetry instrument (none installed): the same numbers, one
    test fewer per recording."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # type: ignore[arg-type]  # (a histogram's child)
        self.sum += value

    def set(self, value: float) -> None:
        self.value = value


class _Off(Child):
    """What every family hands out when metrics are off (``metrics=False``, tracing on)."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        return None

    def observe(self, value: float) -> None:
        return None

    def set(self, value: float) -> None:
        return None


_OFF = _Off(None, {}, None)


class Family:
    """A metric and its children by label values; ``kind``: counter, gauge or histogram."""

    def __init__(self, name: str, help_text: str, kind: str, labels: Sequence[str], otel_instrument: Any,
                 bounds: Sequence[float] | None = None) -> None:  # fmt: skip
        self.name = name
        self.help = help_text
        self.kind = kind
        self.labels = tuple(labels)
        self._otel = otel_instrument
        self.bounds = tuple(bounds) if bounds is not None else None
        self.children: dict[tuple[str, ...], Child] = {}
        self.enabled = True

    def child(self, *values: str) -> Child:
        if not self.enabled:
            return _OFF
        found = self.children.get(values)
        if found is None:
            attributes = dict(zip(self.labels, values, strict=True))
            make = Child if self._otel is not None else _Plain
            found = self.children[values] = make(self._otel, attributes, self.bounds)
        return found

    def collect(self) -> Metric:
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name, self.help, labels=self.labels)
            for values, c in self.children.items():
                counter.add_metric(values, c.value)
            return counter
        if self.kind == "gauge":
            gauge = GaugeMetricFamily(self.name, self.help, labels=self.labels)
            for values, c in self.children.items():
                gauge.add_metric(values, c.value)
            return gauge
        assert self.bounds is not None
        histogram = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for values, c in self.children.items():
            buckets, total = [], 0
            for bound, n in zip((*self.bounds, math.inf), c.counts, strict=True):
                total += n
                buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), total))
            histogram.add_metric(values, buckets, c.sum)
        return histogram


class _Families(Collector):
    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.collect()


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
    def __init__(self, now: Callable[[], float], meter_provider: Any | None = None, enabled: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.enabled = enabled
        self._now = now
        self._meter = meter_provider.get_meter("daggerflow") if meter_provider is not None else None
        self._families: list[Family] = []
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
        self.registry.register(_Families(self._families))
        self.registry.register(_Waiting(self))
        if self._meter is not None:
            self._meter.create_observable_gauge("daggerflow.listeners.open", [self._observe_open], "{listener}")
            self._meter.create_observable_gauge("daggerflow.listener.oldest_wait", [self._observe_oldest], "s")

    def _counter(self, name: str, help_text: str, labels: list[str]) -> Family:
        inst = self._meter.create_counter(f"daggerflow.{name}".replace("_", "."), "1", help_text) if self._meter else None
        return self._add(Family(f"daggerflow_{name}", help_text, "counter", labels, inst))

    def _gauge(self, name: str, help_text: str, labels: list[str]) -> Family:
        create = getattr(self._meter, "create_gauge", None) if self._meter is not None else None
        inst = create(f"daggerflow.{name}".replace("_", "."), "{record}", help_text) if create is not None else None
        return self._add(Family(f"daggerflow_{name}", help_text, "gauge", labels, inst))

    def _histogram(self, name: str, help_text: str, labels: list[str], buckets: Sequence[float] = DURATION_BUCKETS) -> Family:
        inst = None
        if self._meter is not None:
            unit = "s" if name.endswith("_seconds") else "1"
            inst = self._meter.create_histogram(f"daggerflow.{name.removesuffix('_seconds')}".replace("_", "."),
                                                unit, help_text)  # fmt: skip
        return self._add(Family(f"daggerflow_{name}", help_text, "histogram", labels, inst, buckets))

    def _add(self, family: Family) -> Family:
        family.enabled = self.enabled
        self._families.append(family)
        return family

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
