"""Search benchmark (issue #10 §3): a parameter search on a store of 100,000 instances,
through an indexed parameter (a declared search attribute) and an undeclared one.

    .venv/bin/python bench/search.py                    # SQLite, 100,000 instances
    .venv/bin/python bench/search.py --store rocksdb --instances 100000

The store is filled directly with commits of 1,000 instances (as the processor would write
them: record, search rows, profile), each instance a pizza-sized record of seven nodes with
``order_id`` and ``customer_id`` declared searchable and ``note`` not. Reported: the time of
one page (limit 20) and of the count, for ``param.customer_id`` (indexed, 10 matches),
``param.note`` (undeclared: every instance of the template is read; 10 matches), and the
indexed one ANDed with the undeclared one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from daggerflow.model.instance import Instance, Node
from daggerflow.model.query import InstanceQuery, query_from_pairs, search_names, search_rows
from daggerflow.store.base import Store, WriteBatch
from daggerflow.store.factory import open_store

KEYS = ("order_id", "customer_id")


def instance(n: int) -> Instance:
    iid = f"order-{n:07d}"
    nodes = {iid: Node(id=iid, name="PizzaWorkflow", kind="ROOT", status="COMPLETED", time_created=float(n),
                       children=(f"{iid}.p1",))}  # fmt: skip
    for k in range(1, 7):
        nodes[f"{iid}.p{k}"] = Node(id=f"{iid}.p{k}", name=f"PizzaWorkflow.Order.task{k}", kind="EXECUTOR",
                                    parent=iid, status="COMPLETED", type_name="OrderCommandTask",
                                    time_created=float(n), time_completed=float(n) + 0.1)  # fmt: skip
    params = {"order_id": iid, "customer_id": f"customer-{n % 10_000}", "pizza_type": "margherita",
              "note": f"note-{n % 10_000}"}  # fmt: skip
    return Instance(id=iid, template_name="PizzaWorkflow", template_version="v1", nodes=nodes,
                    runtime_parameters=params, lastupdated=float(n) + 0.1, search_keys=KEYS)  # fmt: skip


def fill(store: Store, count: int) -> float:
    started = time.perf_counter()
    for start in range(0, count, 1000):
        batch = WriteBatch()
        for n in range(start, min(count, start + 1000)):
            inst = instance(n)
            batch.instances[inst.id] = inst
            batch.search_put.extend((inst.id, k, v, inst.root.time_created) for k, v in search_rows(inst).items())
            batch.search_profiles.append((inst.template_name, search_names(inst)))
        store.commit(batch, 0.0)
    return time.perf_counter() - started


def timed(store: Store, query: InstanceQuery, repeat: int) -> tuple[float, float, int, int]:
    """Best-of-``repeat`` seconds for a page and for the count; the page size and count."""
    page_best = count_best = float("inf")
    page: list[Instance] = []
    total = 0
    for _ in range(repeat):
        t = time.perf_counter()
        page = store.query_instances(query, limit=20, offset=0)
        page_best = min(page_best, time.perf_counter() - t)
        t = time.perf_counter()
        total = store.count_query(query)
        count_best = min(count_best, time.perf_counter() - t)
    return page_best, count_best, len(page), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "rocksdb"), default="sqlite")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'search.db')}" if args.store == "sqlite" else f"rocksdb:///{tmp}/search"
        store = open_store(url, datadir=tmp, application_name="bench")
        try:
            seconds = fill(store, args.instances)
            print(f"{args.store}: {args.instances:,} instances written in {seconds:.1f} s")
            cases = [
                ("indexed    param.customer_id", [("param.customer_id", "customer-42")]),
                ("undeclared param.note", [("param.note", "note-42")]),
                ("indexed AND undeclared", [("param.customer_id", "customer-42"), ("param.note", "note-42")]),
            ]
            for label, pairs in cases:
                page, count, shown, total = timed(store, query_from_pairs(pairs), args.repeat)
                print(f"  {label:<30} page of {shown:>2}: {page * 1000:9.2f} ms   count ({total}): {count * 1000:9.2f} ms")
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
