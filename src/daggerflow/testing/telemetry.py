"""Capture the spans and metrics a test produces, to assert on them.

OpenTelemetry lets a process install its global tracer and meter providers once, so the
first capture installs an SDK ``TracerProvider`` and ``MeterProvider`` for the whole test
session (or joins an SDK ``TracerProvider`` the application installed already) and every
capture after it reuses them:

- spans: each capture has its own ``InMemorySpanExporter``, fed while the capture is open;
- metrics: one ``InMemoryMetricReader`` reads cumulative values, and a capture answers with
  the change since it opened, so tests do not see each other's counts.

The OpenTelemetry SDK is imported only here, when a capture is made; without it the
capture fails with the command that installs it (``pip install 'daggerflow[testing]'``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

Attributes = Mapping[str, Any]
_Key = tuple[str, frozenset[tuple[str, Any]]]


def _require_sdk() -> None:
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "daggerflow.testing's telemetry capture needs the OpenTelemetry SDK: "
            "pip install 'daggerflow[testing]' (or opentelemetry-sdk)"
        ) from exc


@dataclass(frozen=True)
class HistogramSummary:
    """What a histogram recorded: how many values, and their sum."""

    count: int
    sum: float


class _Gauge(float):
    """A gauge's last value (not a sum: nothing to subtract)."""


class _Session:
    """The providers installed once per process, and the captures open now."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        self.open: list[TelemetryCapture] = []
        self.lock = threading.Lock()
        session = self

        class FanOut(SpanProcessor):
            def on_end(self, span: ReadableSpan) -> None:
                with session.lock:
                    captures = list(session.open)
                for capture in captures:
                    capture.exporter.export([span])

        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            self.tracer_provider = current  # the application's: capture alongside its exporters
        else:
            self.tracer_provider = TracerProvider()
            trace.set_tracer_provider(self.tracer_provider)
            if trace.get_tracer_provider() is not self.tracer_provider:
                raise RuntimeError(
                    f"a tracer provider that is not the SDK's is installed already ({type(current).__name__}): "
                    "spans cannot be captured"
                )
        self.tracer_provider.add_span_processor(FanOut())

        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        # A MeterProvider takes its readers when it is made: if the application installed
        # one first, only instruments made from capture.meter_provider are seen.
        metrics.set_meter_provider(self.meter_provider)


_session: _Session | None = None
_session_lock = threading.Lock()


def _the_session() -> _Session:
    global _session
    with _session_lock:
        if _session is None:
            _session = _Session()
        return _session


class TelemetryCapture:
    """Spans and metrics recorded while the capture is open (``with`` or start/stop).

    The providers are global, so code that takes its tracer and meter from
    ``opentelemetry.trace`` / ``opentelemetry.metrics`` (as daggerflow does) is captured
    with nothing to pass; :attr:`tracer_provider` and :attr:`meter_provider` are there for
    code that takes a provider explicitly.
    """

    def __init__(self) -> None:
        _require_sdk()
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter: InMemorySpanExporter = InMemorySpanExporter()
        self._baseline: dict[_Key, Any] = {}
        self._session: _Session | None = None

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> TelemetryCapture:
        session = _the_session()
        with session.lock:
            if self in session.open:
                return self  # (``with capture_telemetry():`` starts it twice)
        self._baseline = self._read()
        with session.lock:
            session.open.append(self)
        self._session = session
        return self

    def stop(self) -> None:
        session = self._session
        if session is not None:
            with session.lock:
                if self in session.open:
                    session.open.remove(self)

    def __enter__(self) -> TelemetryCapture:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def tracer_provider(self) -> TracerProvider:
        return self._opened().tracer_provider

    @property
    def meter_provider(self) -> MeterProvider:
        return self._opened().meter_provider

    @property
    def metric_reader(self) -> InMemoryMetricReader:
        return self._opened().reader

    def _opened(self) -> _Session:
        if self._session is None:
            raise RuntimeError("the capture is not open: use `with TelemetryCapture() as capture:`")
        return self._session

    # Spans ------------------------------------------------------------------------------------

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """The spans that ended while the capture was open, in the order they ended;
        only those called ``name`` if given."""
        found = list(self.exporter.get_finished_spans())
        return found if name is None else [s for s in found if s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one span called ``name`` (``AssertionError`` if there are none or several)."""
        found = self.spans(name)
        if len(found) != 1:
            names = sorted({s.name for s in self.spans()})
            raise AssertionError(f"{len(found)} spans named {name!r}, expected one (spans seen: {names})")
        return found[0]

    def span_names(self) -> list[str]:
        return [s.name for s in self.spans()]

    def clear(self) -> None:
        """Forget the spans so far, and count metrics from now on."""
        self.exporter.clear()
        self._baseline = self._read()

    # Metrics ----------------------------------------------------------------------------------

    def metric_names(self) -> list[str]:
        return sorted({name for name, _ in self._read()})

    def counter(self, name: str, attributes: Attributes | None = None) -> float:
        """How much counter (or up-down counter) ``name`` grew while the capture was open,
        over the series whose attributes include ``attributes``."""
        total = 0.0
        for key, value in self._matching(name, attributes):
            if isinstance(value, HistogramSummary):
                raise TypeError(f"{name!r} is a histogram: use histogram()")
            if isinstance(value, _Gauge):
                raise TypeError(f"{name!r} is a gauge: use gauge()")
            total += value - self._baseline.get(key, 0.0)
        return total

    def histogram(self, name: str, attributes: Attributes | None = None) -> HistogramSummary:
        """How many values histogram ``name`` recorded while the capture was open, and their
        sum, over the series whose attributes include ``attributes``."""
        count, total = 0, 0.0
        for key, value in self._matching(name, attributes):
            if not isinstance(value, HistogramSummary):
                raise TypeError(f"{name!r} is not a histogram: use counter()")
            before = self._baseline.get(key, HistogramSummary(0, 0.0))
            count += value.count - before.count
            total += value.sum - before.sum
        return HistogramSummary(count, total)

    def gauge(self, name: str, attributes: Attributes | None = None) -> float:
        """The last value of gauge ``name`` in the one series whose attributes include
        ``attributes`` (``AssertionError`` if none or several match)."""
        found = list(self._matching(name, attributes))
        if len(found) != 1:
            raise AssertionError(f"{len(found)} series of {name!r} match {dict(attributes or {})}, expected one")
        return float(found[0][1])

    def series(self, name: str) -> list[dict[str, Any]]:
        """The attribute sets metric ``name`` has been recorded with (all time)."""
        return [dict(attrs) for metric, attrs in self._read() if metric == name]

    def _matching(self, name: str, attributes: Attributes | None) -> Iterator[tuple[_Key, Any]]:
        wanted = set((attributes or {}).items())
        for key, value in self._read().items():
            if key[0] == name and wanted <= key[1]:
                yield key, value

    def _read(self) -> dict[_Key, Any]:
        session = self._session or _the_session()
        data = session.reader.get_metrics_data()
        values: dict[_Key, Any] = {}
        if data is None:
            return values
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points: Sequence[Any] = getattr(metric.data, "data_points", ())
                    for point in points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        if hasattr(point, "count") and hasattr(point, "sum"):
                            values[key] = HistogramSummary(int(point.count), float(point.sum))
                        elif type(metric.data).__name__ == "Gauge":
                            values[key] = _Gauge(point.value)
                        else:
                            values[key] = float(point.value)
        return values


def capture_telemetry() -> TelemetryCapture:
    """A started :class:`TelemetryCapture` (``with capture_telemetry() as capture:``)."""
    return TelemetryCapture().start()
