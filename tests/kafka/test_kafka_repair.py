"""Operators' actions on the Kafka runtime: a retry applied by the owner of the instance, and
one asked of a ``role="client"`` engine, which sends the event to the owner through the
events topic (codec) for the owner's pipeline to apply."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("aiokafka")

from daggerflow import Dagger, TaskInvalidState

from ..integration.test_repair import add_flaky
from .cluster import delete_app_topics

pytestmark = pytest.mark.timeout(180)


async def test_retry_on_the_owner_and_from_a_client_completes_failed_workflows(
    broker: str, tmp_path: Path
) -> None:
    app = f"repair-{uuid.uuid4().hex[:8]}"
    options = dict(broker=f"kafka://{broker}", application_name=app, kafka_partitions=1)
    # The worker serves REST so that the client can read the instances it owns.
    worker = Dagger(**options, datadir=str(tmp_path / "w"), web_port=0)  # type: ignore[arg-type]
    client = Dagger(**options, datadir=str(tmp_path / "c"), web_port=None, role="client")  # type: ignore[arg-type]
    for engine in (worker, client):
        add_flaky(engine)
    await worker.start()
    await client.start()
    try:
        for iid in ("on-owner", "from-client"):
            await worker.template_dags["flaky"].create_instance(iid, submit_task=True)
            assert (await worker.wait_for(iid, timeout=60)).status.code == "FAILURE"
        await worker.retry("on-owner", {"fixed": True})
        done = await worker.wait_for("on-owner", timeout=60)
        assert done.status.code == "COMPLETED" and done.runtime_parameters["fixed"] is True

        with pytest.raises(TaskInvalidState):
            await client.retry("on-owner")  # refused in the client's words: it is COMPLETED
        sent = await client.retry("from-client", {"fixed": True})
        assert sent.id == "from-client"
        # The event travels through the events topic: wait for the owner to have applied it.
        done = await worker.wait_for("from-client", lambda i: i.status == "COMPLETED", timeout=60)
        assert done.status.code == "COMPLETED" and done.runtime_parameters["fixed"] is True
    finally:
        await client.stop()
        await worker.stop()
        await delete_app_topics(broker, app)
