"""A first workflow of your own (docs/getting-started.md): a refund that a manager approves.

    AskManager (command)  ->  ManagerAnswer (listener, 2 days at most)  ->  PayRefund (executor)

The command task sends the request to ``refund.approval-requests``; the manager's tool
answers on ``refund.approval-answers`` with ``{"refund_id": ..., "approved": true|false}``;
the listener finds the waiting workflow by ``refund_id``. Without an answer within two days
the listener, and so the workflow, ends as FAILURE. Its test is
``tests/integration/test_refund_example.py``.

Run it: ``python examples/refund.py``, then in another shell
``daggerflow create Refund -p refund_id=r-1 --params '{"amount": 25}'`` and
``daggerflow send refund.approval-answers '{"refund_id": "r-1", "approved": true}'``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    KafkaCommandTask,
    KafkaListenerTask,
    TaskLookupKey,
)

log = logging.getLogger(__name__)

REQUESTS = "refund.approval-requests"
ANSWERS = "refund.approval-answers"
TWO_DAYS = 2 * 24 * 3600.0


def register_refund_workflow(engine: Dagger) -> None:
    """Define the tasks for ``engine`` and register the template ``Refund``."""

    class AskManager(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            request = {"refund_id": runtime_parameters["refund_id"], "amount": runtime_parameters["amount"]}
            await engine.topics[REQUESTS].send(key=request["refund_id"], value=request)

    class ManagerAnswer(KafkaListenerTask[str, str]):
        correlatable_key = "refund_id"

        async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
            return [("refund_id", json.loads(payload)["refund_id"])]

        async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
            answer = json.loads(args[0])
            runtime_parameters["approved"] = bool(answer["approved"])
            return True  # the listener completes; the payment task runs next

    class PayRefund(ExecutorTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            if runtime_parameters["approved"]:
                log.info("paying refund %s", runtime_parameters["refund_id"])  # call your payment API here
                runtime_parameters["paid"] = runtime_parameters["amount"]
            else:
                runtime_parameters["paid"] = 0

    helper = DAGBuilderHelper(engine)
    approval = helper.build_and_link_tasks(
        [
            helper.generic_command_task_builder(topic=REQUESTS, task_type=AskManager, process_name="Approval"),
            helper.generic_listener_task_builder(
                topic=ANSWERS, task_type=ManagerAnswer, process_name="Approval"
            ).set_timeout(TWO_DAYS),
        ]
    )
    payment = helper.build_and_link_tasks([helper.generic_executor_task_builder(task_type=PayRefund, name="Pay")])
    template = helper.generic_template(
        template_name="Refund",
        root_process=helper.build_and_link_processes(
            [
                helper.generic_process_builder(process_name="Approval", root_task=approval),
                helper.generic_process_builder(process_name="Payment", root_task=payment),
            ]
        ),
    )
    engine.add_template("Refund", template)


def build_engine(**options: Any) -> Dagger:
    """The application's engine (a test passes ``clock=`` and a store through ``options``)."""
    options.setdefault("store", "sqlite:///refunds.db")
    engine = Dagger(application_name="refunds", **options)
    register_refund_workflow(engine)
    return engine


workflow_engine = build_engine()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    workflow_engine.main()
