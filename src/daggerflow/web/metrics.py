"""Prometheus metrics, one registry per engine (no global state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .api import EngineAPI


def render(engine: EngineAPI) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    stats = engine.stats()
    for name, help_text in (
        ("transitions", "state transitions committed"),
        ("batches", "batches committed"),
        ("queued", "inputs waiting for the processor"),
        ("jobs_running", "user-code calls in flight"),
        ("timers", "armed timers"),
    ):
        Gauge(f"daggerflow_{name}", help_text, registry=registry).set(float(stats[name]))
    by_status = Gauge("daggerflow_instances", "workflow instances by status", ["status"], registry=registry)
    for status in ("NOT_STARTED", "SUBMITTED", "EXECUTING", "COMPLETED", "FAILURE", "SKIPPED", "STOPPED"):
        by_status.labels(status).set(engine.count_instances(status=status))
    text = generate_latest(registry)
    telemetry = engine.telemetry
    if telemetry is not None:  # the counters and histograms (``telemetry.metrics``)
        text += generate_latest(telemetry.metrics.registry)
    return text, CONTENT_TYPE_LATEST
