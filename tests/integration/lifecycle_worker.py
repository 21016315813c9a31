"""A worker for the lifecycle log tests (``test_lifecycle_log.py``):

    LIFECYCLE_DB=... python -m daggerflow worker tests.integration.lifecycle_worker:engine

Template ``Chore``: one executor task, ``Chore``, that completes, or raises
``ValueError("asked to fail")`` when the runtime parameter ``fail`` is set.
"""

from __future__ import annotations

import os
from typing import Any

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask


class Chore(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        if runtime_parameters.get("fail"):
            raise ValueError("asked to fail")
        runtime_parameters["done"] = True


def build(**options: Any) -> Dagger:
    engine = Dagger(**options)
    helper = DAGBuilderHelper(engine)
    task = helper.generic_executor_task_builder(task_type=Chore, name="Chore")
    process = helper.generic_process_builder(process_name="P", root_task=helper.build_and_link_tasks([task]))
    engine.add_template("Chore", helper.generic_template(template_name="Chore", root_process=process))
    return engine


engine = build(store=f"sqlite:///{os.environ.get('LIFECYCLE_DB', 'lifecycle.db')}", web_port=0,
               application_name="lifecycle")  # fmt: skip
