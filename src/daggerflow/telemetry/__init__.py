"""Traces and metrics of the engine (docs/observability.md).

The pipeline calls a ``pipeline.observe.PipelineObserver``; ``Telemetry`` is the one the
engine builds (``build``): Prometheus instruments always (``/metrics``), OpenTelemetry
metrics when the application installed a meter provider, spans when it installed a tracer
provider. Only the OpenTelemetry API is used; with no SDK installed, tracing costs one
check at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .metrics import Metrics
from .metrics import meter_provider as global_meter_provider
from .observer import Telemetry
from .tracing import Tracing
from .tracing import tracer_provider as global_tracer_provider

log = logging.getLogger(__name__)


def build(
    now: Callable[[], float],
    *,
    system: str,
    tracing: bool | None,
    group: str = "",
    tracer_provider: Any = None,
    meter_provider: Any = None,
    metrics: bool = True,
) -> Telemetry:
    """The engine's telemetry. ``tracing``: None, on when a tracer provider is installed;
    False, off; True, on (a warning if no provider is installed: nothing to emit into).
    The providers default to the global ones (``opentelemetry.trace``/``.metrics``).
    ``metrics`` False: every instrument records nothing."""
    provider = None
    if tracing is not False:
        provider = tracer_provider if tracer_provider is not None else global_tracer_provider()
    if tracing is True and provider is None:
        log.warning("tracing=True but no OpenTelemetry tracer provider is installed: no spans are emitted")
    spans = Tracing(provider, system, group) if provider is not None else None
    if spans is not None and spans.seeded is None:
        log.warning("the tracer provider has no id_generator to seed: spans get random ids, so a step re-run "
                    "after a crash is emitted twice and task spans may name a parent never emitted")  # fmt: skip
    meters = meter_provider if meter_provider is not None else global_meter_provider()
    return Telemetry(now, Metrics(now, meters if metrics else None, metrics), spans)


__all__ = ["Metrics", "Telemetry", "Tracing", "build"]
