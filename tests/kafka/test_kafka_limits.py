"""Size limits on the Kafka runtime: an instance whose task grows it past what one producer
record can carry fails that task with ``TooLarge`` (never a transaction that fails and restarts
forever), while the other instances on the same partition keep completing; parameters over
the limit are refused at the call site."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

pytest.importorskip("aiokafka")

from daggerflow import Dagger
from daggerflow.errors import TooLarge
from daggerflow.kafka.config import RECORD_LIMIT

from ..integration.test_input_limits import register
from .cluster import delete_app_topics

pytestmark = pytest.mark.timeout(180)


async def test_a_too_large_instance_fails_its_task_and_the_partition_goes_on(
    broker: str, tmp_path: Path
) -> None:
    app = f"limits-{uuid.uuid4().hex[:8]}"
    # One partition: the large instance and the others share it (and its transactions).
    engine = Dagger(broker=f"kafka://{broker}", application_name=app, kafka_partitions=1, datadir=str(tmp_path),
                    web_port=None)  # fmt: skip
    register(engine)
    assert engine.config.limits().instance == RECORD_LIMIT < 1024 * 1024
    await engine.start()
    try:
        with pytest.raises(TooLarge, match="max_parameters_bytes"):
            await engine.template_dags["quick"].create_instance(
                "refused", submit_task=True, blob="x" * RECORD_LIMIT
            )
        grow = engine.template_dags["grow"]
        await asyncio.gather(
            grow.create_instance("huge", submit_task=True, grow=2 * 1024 * 1024),
            *(grow.create_instance(f"ok{i}", submit_task=True, grow=1000) for i in range(5)),
        )
        huge = await engine.wait_for("huge", timeout=60)
        assert huge.status.code == "FAILURE"
        state = await engine.get_instance_state("huge")
        assert state is not None
        assert any("TooLarge" in (n.error or "") for n in state.nodes.values())
        for i in range(5):
            assert (await engine.wait_for(f"ok{i}", timeout=60)).status.code == "COMPLETED"
        await engine.template_dags["quick"].create_instance("after", submit_task=True)
        assert (await engine.wait_for("after", timeout=60)).status.code == "COMPLETED"
        assert await engine.get_instance("refused") is None
    finally:
        await engine.stop()
        await delete_app_topics(broker, app)
