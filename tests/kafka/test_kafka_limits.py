"""Size limits on the Kafka runtime: an instance whose task grows it past what one producer
record can carry fails that task with ``TooLarge`` (never a transaction that fails and restarts
forever), while the other instances on the same partition keep completing; parameters over
the limit are refused at the call site."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiokafka")

from daggerflow import Dagger
from daggerflow.errors import TooLarge
from daggerflow.kafka.config import RECORD_LIMIT
from daggerflow.model.history import FLUSH_BYTES

from ..integration.test_input_limits import register
from .cluster import decode, delete_app_topics, produce, read_topic

pytestmark = pytest.mark.timeout(180)


async def test_a_too_large_instance_fails_its_task_and_the_partition_goes_on(
    broker: str, tmp_path: Path
) -> None:
    app = f"limits-{uuid.uuid4().hex[:8]}"
    # One partition: the large instance and the others share it (and its transactions).
    engine = Dagger(broker=f"kafka://{broker}", application_name=app, kafka_partitions=1, datadir=str(tmp_path),
                    web_port=None)  # fmt: skip
    register(engine)
    # (less the room of the history's tail in the record)
    assert engine.config.limits().instance == RECORD_LIMIT - FLUSH_BYTES < 1024 * 1024
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


async def test_an_agent_message_over_the_limit_is_a_logged_dead_letter(
    broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent's messages are committed by its own loop, not the partition processor: an
    oversize one is turned into a dead letter there (nothing of that run is sent), and the
    lifecycle log reports it after the commit, as for the processor's dead letters."""
    caplog.set_level(logging.INFO, logger="daggerflow.lifecycle")
    app = f"agentlim-{uuid.uuid4().hex[:8]}"
    engine = Dagger(broker=f"kafka://{broker}", application_name=app, kafka_partitions=1, datadir=str(tmp_path),
                    web_port=None, max_message_bytes=2048)  # fmt: skip
    inbox, outbox = f"{app}.in", f"{app}.out"
    engine.create_topic(outbox)

    @engine.agent(inbox, name="relay")
    async def relay(value: Any) -> None:
        await engine.topics[outbox].send(value="small")
        await engine.topics[outbox].send(value="x" * 3000 if "big" in str(value) else "")

    await engine.start()
    try:
        await produce(broker, inbox, [(b"k", "big"), (b"k", "fits")])
        letters = [decode(r.value) for r in await read_topic(broker, f"{app}-dead-letter")]
        while not letters:  # read_topic reads to the end as it is now: wait for the commit
            letters = [decode(r.value) for r in await read_topic(broker, f"{app}-dead-letter")]
        assert len(letters) == 1
        assert letters[0]["consumer"] == "relay" and letters[0]["offset"] == 0
        assert letters[0]["error"].startswith(f"TooLarge: the message value for topic '{outbox}' is 3000 bytes")
        sent = [r.value.decode() for r in await read_topic(broker, outbox)]
        while len(sent) < 2:
            sent = [r.value.decode() for r in await read_topic(broker, outbox)]
        assert sent == ["small", ""]  # of the oversize run nothing; the other sent both
        logged = [r for r in caplog.records if getattr(r, "event", "") == "dead_letter"]
        assert len(logged) == 1 and logged[0].consumer == "relay" and logged[0].topic == inbox
    finally:
        await engine.stop()
        await delete_app_topics(broker, app)


async def test_a_create_sent_to_the_owner_is_refused_at_the_call_site_when_too_large(
    broker: str, tmp_path: Path
) -> None:
    """A client (or a worker that does not own the id) sends the whole new instance through
    the events topic: over the limit it is ``TooLarge`` at once, not a producer error."""
    app = f"fwdlim-{uuid.uuid4().hex[:8]}"
    client = Dagger(broker=f"kafka://{broker}", application_name=app, kafka_partitions=1, datadir=str(tmp_path),
                    web_port=None, role="client", max_instance_bytes=4096)  # fmt: skip
    register(client)
    await client.start()
    try:
        with pytest.raises(TooLarge, match="the new instance for 'big', sent to the worker that owns it"):
            await client.template_dags["quick"].create_instance("big", submit_task=True, blob="x" * 4000)
        # One that fits is sent (nobody processes it here: no worker runs).
        await client.template_dags["quick"].create_instance("fits", submit_task=True, blob="x" * 100)
    finally:
        await client.stop()
        await delete_app_topics(broker, app)
