"""``commit_interval``: a processor under load starts a batch at most once per interval,
so inputs arriving meanwhile share one commit (Kafka: one transaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from daggerflow import Dagger, ManualClock
from daggerflow.machine import Create
from daggerflow.model.template import instantiate
from daggerflow.pipeline.items import InstanceEvent, Settings
from daggerflow.pipeline.processor import Processor
from daggerflow.store.sqlite import SQLiteStore

from .test_inline_jobs import _engine  # a template to instantiate


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_inputs_within_the_interval_share_a_batch(make_engine: Callable[..., Dagger], tmp_path: Path) -> None:
    engine = _engine(make_engine)
    spec = engine.template_dags["Chain"].spec
    clock = ManualClock()
    store = SQLiteStore(str(tmp_path / "interval.db"))
    processor = Processor(store, clock, Settings(commit_interval=1.0))
    processor.start()
    try:
        def create(iid: str) -> None:
            inst = instantiate(spec, iid, {"order_id": iid}, now=clock.now())
            processor.submit(InstanceEvent(iid, Create(inst)))

        create("a")
        await processor.wait_idle()
        assert processor.batches == 1  # the first input after a quiet spell: at once
        for iid in ("b", "c", "d"):
            create(iid)
            await _settle()
        assert processor.batches == 1  # waiting for the interval to pass
        clock.advance(1.0)
        await processor.wait_idle()
        assert processor.batches == 2  # b, c and d in one batch
        assert all(processor.committed_instance(i) is not None for i in "abcd")
    finally:
        await processor.stop()
        store.close()
