"""The job runner is shared by every partition of a Kafka worker: a bug in it (not in user
code) ends the worker, logged at ERROR, with a non-zero exit, rather than leave it holding
partitions whose jobs never report. (A partition whose processor fails is re-activated
instead: ``test_kafka_runtime.py``.) The worker is ``tests/integration/faulty_worker.py``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiokafka")

from .cluster import wait_until

pytestmark = pytest.mark.timeout(180)


async def test_a_job_runner_fault_ends_the_kafka_worker(make_cluster: Callable[..., Any]) -> None:
    cluster = make_cluster(
        target="tests.integration.faulty_worker:engine", partitions=2, env={"FAULTY_PART": "jobs"}
    )
    (worker,) = await cluster.start(1)
    (started,) = await worker.wait_log(r"started on Kafka as a worker \(web (http://\S+)\)")
    url = started.group(1)
    create = f"{url}/api/v1/templates/Chore/instances"
    body = {"id": "fine", "runtime_parameters": {}, "submit": True}
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(create, json=body)).status_code == 201

        async def fine_completed() -> bool:
            response = await http.get(f"{url}/api/v1/instances/fine")
            return response.status_code == 200 and response.json()["status"]["code"] == "COMPLETED"

        await wait_until(fine_completed, 60, message="fine COMPLETED")
        assert (await http.post(create, json={**body, "id": "boom"})).status_code == 201

    await wait_until(lambda: not worker.alive, 60, message="the worker to exit")
    assert worker.proc is not None and worker.proc.returncode != 0
    log = worker.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert any(
        re.search(r"the worker stops: daggerflow-job-runner failed: .*injected job runner fault", e) for e in errors
    ), log
    assert "was never retrieved" not in log
