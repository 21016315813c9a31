"""The test of examples/refund.py that docs/getting-started.md shows: the README-style
workflow of the getting-started page, tested with daggerflow.testing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from daggerflow import Dagger
from daggerflow.testing import WorkflowEnvironment

# examples/ is not a package: load the file the page shows.
_spec = importlib.util.spec_from_file_location(
    "refund_example", Path(__file__).resolve().parents[2] / "examples" / "refund.py"
)
assert _spec is not None and _spec.loader is not None
refund = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refund)
ANSWERS, REQUESTS, build_engine = refund.ANSWERS, refund.REQUESTS, refund.build_engine


@pytest.fixture
def workflow_engine_factory(tmp_path: Path) -> Any:
    def factory(**options: Any) -> Dagger:
        return build_engine(store=f"sqlite:///{tmp_path}/refunds.db", web_port=None, **options)

    return factory


async def test_an_approved_refund_is_paid(workflow_env: WorkflowEnvironment) -> None:
    refund = await workflow_env.start_workflow("Refund", "r-1", refund_id="r-1", amount=25)
    assert workflow_env.sent_json(REQUESTS) == [{"refund_id": "r-1", "amount": 25}]

    await workflow_env.send(ANSWERS, {"refund_id": "r-1", "approved": True})

    done = await workflow_env.wait_for_status(refund, "COMPLETED")
    assert done.runtime_parameters["paid"] == 25


async def test_a_refund_nobody_answers_fails_after_two_days(workflow_env: WorkflowEnvironment) -> None:
    refund = await workflow_env.start_workflow("Refund", "r-2", refund_id="r-2", amount=40)

    await workflow_env.sleep(2 * 24 * 3600)  # two days, in no time

    await workflow_env.wait_for_status(refund, "FAILURE")
    await workflow_env.wait_for_status(refund, "FAILURE", task="Approval_listener_task")
