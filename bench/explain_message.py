"""Message explanation benchmark (issue #11, the console's Messages view): how long an on-call
engineer waits for ``GET /api/v1/messages/{topic}/{offset}`` (what became of a message) and for
the Messages and Dead letters pages, on a real worker (API and console on uvicorn, 127.0.0.1)
whose store holds 100,000 instances and whose dead-letter topic holds 1,000 letters.

    .venv/bin/python bench/explain_message.py
    .venv/bin/python bench/explain_message.py --store rocksdb

The store is filled directly as ``bench/console_list.py`` fills it (``order_id`` indexed), then
the worker runs a listener template on topic ``kitchen``: 20 instances wait, one gets its
message (matched), one message names an order nobody waits for (key mismatch), and 1,000
messages that are not JSON are dead-lettered by the listener's mapping. Timed over
``--requests`` requests each: median and p95 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import httpx
from console_list import fill, measure, p95

from daggerflow import DAGBuilderHelper, Dagger, KafkaListenerTask
from daggerflow.store.factory import open_store

TOPIC = "kitchen"
LETTERS = 1000


class Ready(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[tuple[str, str]]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


def register(engine: Dagger) -> None:
    h = DAGBuilderHelper(engine)
    chain = h.build_and_link_tasks([h.generic_listener_task_builder(topic=TOPIC, task_type=Ready, process_name="Wait")])
    process = h.generic_process_builder(process_name="Wait", root_task=chain)
    engine.add_template("meal", h.generic_template(template_name="meal", root_process=process))


async def settled(engine: Dagger) -> None:
    runtime: Any = engine.runtime
    async with asyncio.timeout(600):
        while not runtime.idle():
            await asyncio.sleep(0.05)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "rocksdb"), default="sqlite")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db" if args.store == "sqlite" else f"rocksdb:///{tmp}/bench"
        store = open_store(url, datadir=tmp, application_name="bench")
        fill(store, args.instances, time.time())
        store.close()
        engine = Dagger(store=url, web_port=0)
        register(engine)
        async with engine:
            assert engine.web_url is not None
            for n in range(20):
                await engine.template_dags["meal"].create_instance(f"meal-{n}", submit_task=True, order_id=f"M-{n}")
            matched = await engine.append(TOPIC, None, json.dumps({"order_id": "M-0"}))
            mismatch = await engine.append(TOPIC, None, json.dumps({"order_id": "M-99"}))
            for n in range(LETTERS):
                await engine.append(TOPIC, None, f"not json {n}")
            await settled(engine)
            print(f"{args.instances} instances, {LETTERS} dead letters [{args.store}, {os.cpu_count()} CPUs]",
                  file=sys.stderr)  # fmt: skip
            pages = {
                "explain: matched": f"/api/v1/messages/{TOPIC}/{matched}",
                "explain: key mismatch": f"/api/v1/messages/{TOPIC}/{mismatch}",
                "explain: dead-lettered": f"/api/v1/messages/{TOPIC}/{mismatch + 1}",
                "console: messages page": f"/ui/messages?topic={TOPIC}",
                "console: message page": f"/ui/messages/{TOPIC}/{matched}",
                "console: dead letters page": "/ui/dead-letters",
            }
            async with httpx.AsyncClient(base_url=engine.web_url, timeout=60) as client:
                for label, path in pages.items():
                    ms, text = await measure(client, path, args.requests)
                    if path.startswith("/api/"):
                        verdict = json.loads(text)["verdict"]
                        label += f" ({verdict})"
                    print(f"GET {path} [{label}]: median {statistics.median(ms):.1f} ms, p95 {p95(ms):.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
