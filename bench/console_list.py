"""Console list benchmark (issue #11): ``GET /ui/instances`` of a real worker (API and console on
uvicorn, 127.0.0.1) over a store of 100,000 instances; the issue wants the page under 300 ms.

    .venv/bin/python bench/console_list.py                        # SQLite, 100,000 instances
    .venv/bin/python bench/console_list.py --store rocksdb --requests 30

The store is filled directly with commits of 1,000 instances (record, search rows, profile, as the
processor writes them): pizza-sized records of seven nodes, ``order_id`` and ``customer_id``
declared search attributes, 2% in FAILURE, 1% STOPPED, the rest COMPLETED (none running, so nothing changes while it is timed). Timed, each over
``--requests`` requests with httpx: the first page (50 rows, newest first), a status filter
(FAILURE), a ``param.`` filter on a declared search attribute (10 matches), the dashboard (the
overview, the workers and the dead letters behind it) and the Workers page. Printed: median and
p95 ms per page.
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
from daggerflow.model.instance import Instance, Node
from daggerflow.model.query import search_names, search_rows
from daggerflow.store.base import Store, WriteBatch
from daggerflow.store.factory import open_store

KEYS = ("order_id", "customer_id")
PAGES = {
    "first page": "/ui/instances",
    "status=FAILURE": "/ui/instances?status=FAILURE",
    "param.customer_id (declared)": "/ui/instances?param.customer_id=customer-42",
    "dashboard": "/ui/",
    "workers": "/ui/workers",
}


def instance(n: int, now: float) -> Instance:
    iid = f"order-{n:07d}"
    status = "FAILURE" if n % 50 == 0 else ("STOPPED" if n % 100 == 1 else "COMPLETED")
    created = now - 1e5 + n
    nodes = {iid: Node(id=iid, name="PizzaWorkflow", kind="ROOT", status=status, time_created=created,
                       children=(f"{iid}.p1",))}  # fmt: skip
    for k in range(1, 7):
        nodes[f"{iid}.p{k}"] = Node(id=f"{iid}.p{k}", name=f"PizzaWorkflow.Order.task{k}", kind="EXECUTOR",
                                    parent=iid, status=status, type_name="OrderCommandTask",
                                    time_created=created, time_completed=created + 0.1)  # fmt: skip
    params = {"order_id": iid, "customer_id": f"customer-{n % 10_000}", "pizza_type": "margherita"}
    return Instance(id=iid, template_name="PizzaWorkflow", template_version="v1", nodes=nodes,
                    runtime_parameters=params, lastupdated=created + 0.1, search_keys=KEYS)  # fmt: skip


def fill(store: Store, count: int, now: float) -> float:
    started = time.perf_counter()
    for start in range(0, count, 1000):
        batch = WriteBatch()
        for n in range(start, min(count, start + 1000)):
            inst = instance(n, now)
            batch.instances[inst.id] = inst
            batch.search_put.extend((inst.id, k, v, inst.root.time_created) for k, v in search_rows(inst).items())
            batch.search_profiles.append((inst.template_name, search_names(inst)))
        store.commit(batch, now)
    return time.perf_counter() - started


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def measure(client: httpx.AsyncClient, path: str, requests: int) -> tuple[list[float], str]:
    out = []
    text = ""
    for _ in range(requests):
        started = time.perf_counter()
        r = await client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {path} answered {r.status_code}: {r.text[:300]}")
        text = r.text
    return out, text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "rocksdb"), default="sqlite")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db" if args.store == "sqlite" else f"rocksdb:///{tmp}/bench"
        now = time.time()
        store = open_store(url, datadir=tmp, application_name="bench")
        seconds = fill(store, args.instances, now)
        store.close()
        print(f"filled {args.instances} instances in {seconds:.1f} s", file=sys.stderr)
        engine = Dagger(store=url, web_port=0)
        async with engine:
            assert engine.web_url is not None
            async with httpx.AsyncClient(base_url=engine.web_url, timeout=60) as client:
                for label, path in PAGES.items():
                    ms, text = await measure(client, path, args.requests)
                    rows = text.count('<tr data-instance="')
                    print(f"GET {path} [{label}]: median {statistics.median(ms):.1f} ms, p95 {p95(ms):.1f} ms "
                          f"({rows} rows; {args.requests} requests) [{args.store}, {os.cpu_count()} CPUs]")


if __name__ == "__main__":
    asyncio.run(main())
