"""pytest fixtures for daggerflow applications. Enable them in the top-level ``conftest.py``::

    pytest_plugins = ["daggerflow.testing.pytest_plugin"]

(or ``pytest -p daggerflow.testing.pytest_plugin``). The plugin is not registered
automatically when daggerflow is installed: an installed plugin would load in every pytest
run of every project in that environment, and these fixtures need pytest-asyncio.

Fixtures (none is autouse):

- ``workflow_env``: a started :class:`~daggerflow.testing.WorkflowEnvironment`, stopped
  after the test. Its engine comes from ``workflow_engine_factory``;
- ``workflow_engine_factory``: ``None`` by default (a fresh engine on a SQLite file in the
  test's ``tmp_path``); override it to build your application's engine::

      @pytest.fixture
      def workflow_engine_factory():
          def build(**options):  # options include clock=: pass them on
              engine = Dagger(store="memory://", web_port=None, **options)
              register_my_workflows(engine)
              return engine
          return build

- ``telemetry_capture``: an open :class:`~daggerflow.testing.TelemetryCapture` (needs the
  OpenTelemetry SDK).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

try:
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover - a missing test dependency
    raise ImportError(
        "daggerflow.testing.pytest_plugin needs pytest-asyncio: pip install 'daggerflow[testing]'"
    ) from exc

from .environment import EngineFactory, WorkflowEnvironment
from .telemetry import TelemetryCapture


@pytest.fixture
def workflow_engine_factory() -> EngineFactory | None:
    """What ``workflow_env`` builds its engine with; None: a plain engine. Override it."""
    return None


@pytest_asyncio.fixture
async def workflow_env(
    workflow_engine_factory: EngineFactory | None, tmp_path: Path
) -> AsyncIterator[WorkflowEnvironment]:
    """A started WorkflowEnvironment (its store under ``tmp_path``, kept for inspection)."""
    if workflow_engine_factory is None:
        env = WorkflowEnvironment(store=f"sqlite:///{tmp_path}/workflow-env.db")
    else:
        env = WorkflowEnvironment(workflow_engine_factory)
    async with env:
        yield env


@pytest.fixture
def telemetry_capture() -> Iterator[TelemetryCapture]:
    """The spans and metrics recorded during the test."""
    with TelemetryCapture() as capture:
        yield capture
