"""daggerflow's test kit: run workflows in tests without waiting for real time.

- :class:`WorkflowEnvironment`: an embedded engine on a temporary store and a clock that
  moves when the test says so (``await env.sleep(3600)``), with helpers to start a
  workflow, send a message to a listener's topic, read what a command task sent and wait
  for a status;
- :class:`TelemetryCapture`: the spans and metrics a test produced, in memory (needs the
  OpenTelemetry SDK: ``pip install 'daggerflow[testing]'``);
- pytest fixtures (``workflow_env``, ``workflow_engine_factory``, ``telemetry_capture``):
  add ``pytest_plugins = ["daggerflow.testing.pytest_plugin"]`` to your top-level
  ``conftest.py``.

The engine never imports this package; it sits above the ``Dagger`` facade.
"""

from .environment import EngineFactory, WorkflowEnvironment
from .telemetry import HistogramSummary, TelemetryCapture, capture_telemetry

__all__ = ["EngineFactory", "HistogramSummary", "TelemetryCapture", "WorkflowEnvironment", "capture_telemetry"]
