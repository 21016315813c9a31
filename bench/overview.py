"""Overview benchmark (issue #11): ``GET /api/v1/overview`` of a real worker (uvicorn on
127.0.0.1) on a store of 100,000 instances.

    .venv/bin/python bench/overview.py                      # SQLite, 100,000 instances
    .venv/bin/python bench/overview.py --store rocksdb --waiting 5000

The store is filled directly with commits of 1,000 instances (records, correlation index
entries and timers, as the processor writes them): pizza-sized records of seven nodes, of
which ``--waiting`` wait on a listener (with a timeout timer each), 2% ended in FAILURE and
the rest COMPLETED. Then an engine starts on it and the route is called ``--calls`` times;
reported: ms per call (median and best), and ``GET /api/v1/listeners`` for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import httpx

from daggerflow import Dagger
from daggerflow.model.instance import Correlation, Instance, Node
from daggerflow.store.base import Store, WriteBatch
from daggerflow.store.factory import open_store

TOPIC = "pizza_ready"


def instance(n: int, waiting: bool, now: float) -> Instance:
    iid = f"order-{n:07d}"
    status = "EXECUTING" if waiting else ("FAILURE" if n % 50 == 0 else "COMPLETED")
    nodes = {iid: Node(id=iid, name="PizzaWorkflow", kind="root", status=status, time_created=now - 1e5 + n,
                       children=(f"{iid}.p1",))}  # fmt: skip
    for k in range(1, 7):
        kind = "listener" if k == 3 else "executor"
        node_status = "EXECUTING" if waiting and k == 3 else ("NOT_STARTED" if waiting and k > 3 else status)
        nodes[f"{iid}.p{k}"] = Node(id=f"{iid}.p{k}", name=f"PizzaWorkflow.Order.task{k}", kind=kind, parent=iid,
                                    status=node_status, time_created=now - 1e5 + n, time_submitted=now - 1e5 + n,
                                    topic=TOPIC if kind == "listener" else None)  # fmt: skip
    inst = Instance(id=iid, template_name="PizzaWorkflow", template_version="v1", nodes=nodes,
                    runtime_parameters={"order_id": iid, "pizza_type": "margherita"},
                    lastupdated=now - 1e5 + n + 0.1)  # fmt: skip
    if waiting:
        inst.correlations[f"{iid}.p3"] = Correlation(TOPIC, "order_id", iid)
        inst.timers[f"{iid}.p3:timeout"] = now + 3600.0
    return inst


def fill(store: Store, count: int, waiting: int, now: float) -> float:
    started = time.perf_counter()
    every = max(1, count // waiting) if waiting else 0
    for start in range(0, count, 1000):
        batch = WriteBatch()
        for n in range(start, min(count, start + 1000)):
            inst = instance(n, bool(every) and n % every == 0, now)
            batch.instances[inst.id] = inst
            for nid, at in inst.correlations.items():
                batch.index_put.append((at, inst.id, nid, False))
            for key, due in inst.timers.items():
                batch.set_timer(inst.id, key, due)
        store.commit(batch, now)
    return time.perf_counter() - started


async def measure(url: str, path: str, calls: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(calls):
            started = time.perf_counter()
            r = await client.get(path)
            out.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, r.text
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=1_000, help="instances waiting on a listener")
    parser.add_argument("--store", choices=("sqlite", "rocksdb"), default="sqlite")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db" if args.store == "sqlite" else f"rocksdb:///{tmp}/bench"
        now = time.time()
        store = open_store(url, datadir=tmp, application_name="bench")
        seconds = fill(store, args.instances, args.waiting, now)
        store.close()
        print(f"filled {args.instances} instances ({args.waiting} waiting) in {seconds:.1f} s", file=sys.stderr)
        engine = Dagger(store=url, web_port=0)
        async with engine:
            assert engine.web_url is not None
            async with httpx.AsyncClient(timeout=60) as client:
                body = (await client.get(engine.web_url + "/api/v1/overview")).json()
            print(f"overview: {sum(c['count'] for c in body['counts'])} instances, "
                  f"{body['listeners_open']} listeners open, {body['failed_last_hour']} failed in the last hour")
            for path in ("/api/v1/overview", "/api/v1/listeners?limit=100"):
                ms = await measure(engine.web_url, path, args.calls)
                print(f"GET {path}: {statistics.median(ms):.1f} ms per call (median of {args.calls}; "
                      f"best {min(ms):.1f} ms) [{args.store}, {os.cpu_count()} CPUs]")


if __name__ == "__main__":
    asyncio.run(main())
