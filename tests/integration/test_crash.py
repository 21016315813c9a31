"""Crash test (issue #2): kill -9 a worker at random moments while pizza workflows run.

A worker process (``crash_worker.py``) runs the pizza workflow on one SQLite file. The driver
feeds orders through the worker's REST API, half as workflow creations
(``POST /api/v1/templates/PizzaWorkflow/instances`` with an explicit id) and half as messages on
the durable ``orders_in`` topic (an agent creates the workflows). An order is *accepted* once
the API answered 2xx; a request cut off by a kill is retried on the next worker with the same
id. Meanwhile the driver SIGKILLs the worker several times, each time after some progress in
that life (a number of newly accepted orders drawn from a seeded RNG) plus a random delay, and
restarts it on the same file. The last worker runs until every order is COMPLETED and drains
on SIGTERM. Then the database is read directly (read-only) and must show:

- every accepted order has a workflow, and every workflow is COMPLETED; there are no others;
- ``pizza_order_topic`` holds exactly one command per order (none lost, none published twice),
  and so do the order service's answers and the delivery topic (all sent through outboxes);
- every accepted ``orders_in`` message was consumed (the agent's position is at the end);
- nothing is left behind: no pending jobs, no correlation entries, no timers.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = Path(__file__).with_name("crash_worker.py")
ORDERS = 240
KILLS = 5
FEED_CONCURRENCY = 4
FEED_INTERVAL = 1 / 120  # at most 120 orders/s: spreads the orders over all the lives
SEED = int(os.environ.get("DAGGERFLOW_CRASH_SEED", "20240602"))  # another seed: other kill moments


class Worker:
    """The current worker process; ``generation`` counts lives."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db = db
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.generation = 0
        self.in_flight_at_start: list[int] = []
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                str(self.db),
                f"{SEED}-{self.generation}",
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        assert line.startswith("READY "), f"worker did not start: {line!r}\n{self.log.read_text()}"
        _, url, in_flight = line.split()
        self.in_flight_at_start.append(int(in_flight))
        async with self.changed:
            self.url = url
            self.generation += 1
            self.changed.notify_all()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL
        await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()  # SIGTERM: drain and exit
        return await asyncio.wait_for(self.proc.wait(), 30)

    async def newer_than(self, generation: int) -> tuple[str, int]:
        async with self.changed:
            await self.changed.wait_for(lambda: self.generation > generation)
            return self.url, self.generation


class Feeder:
    """Posts every order until the API accepts it; an order cut off by a kill is retried."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.accepted: list[str] = []
        self.progress = asyncio.Condition()
        self.next_slot = 0.0

    async def _paced(self) -> None:
        loop = asyncio.get_running_loop()
        slot = max(self.next_slot, loop.time())
        self.next_slot = slot + FEED_INTERVAL
        await asyncio.sleep(slot - loop.time())  # load shaping, not synchronisation

    async def post(self, client: httpx.AsyncClient, n: int) -> None:
        order_id = f"order-{n:04d}"
        params = {"order_id": order_id, "customer_id": f"customer-{n % 17}"}
        url, generation = self.worker.url, self.worker.generation
        while True:
            await self._paced()
            try:
                if n % 2 == 0:
                    body = {"id": order_id, "runtime_parameters": params, "submit": True}
                    r = await client.post(f"{url}/api/v1/templates/PizzaWorkflow/instances", json=body)
                    assert r.status_code == 201, r.text
                    assert r.json()["id"] == order_id
                else:
                    r = await client.post(f"{url}/topics/orders_in/messages", json={"value": params})
                    assert r.status_code == 202, r.text
                break
            except httpx.TransportError:
                url, generation = await self.worker.newer_than(generation)  # killed: next life
        async with self.progress:
            self.accepted.append(order_id)
            self.progress.notify_all()

    async def run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(ORDERS):
            queue.put_nowait(n)

        async def lane(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                await self.post(client, queue.get_nowait())

        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(*(lane(client) for _ in range(FEED_CONCURRENCY)))

    async def wait_accepted(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: len(self.accepted) >= min(count, ORDERS))


async def wait_all_completed(worker: Worker, expected: int, timeout: float = 30.0) -> None:
    """Poll the final worker's REST API until ``expected`` workflows are COMPLETED."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            r = await client.get(f"{worker.url}/api/v1/instances", params={"status": "COMPLETED", "limit": 1})
            if r.json()["total"] >= expected:
                return
            assert loop.time() < deadline, f"not all {expected} workflows completed: {r.json()}"
            await asyncio.sleep(0.02)  # poll interval of a condition across processes


async def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "crash.db"
    worker = Worker(db, tmp_path / "worker.log")
    feeder = Feeder(worker)
    await worker.start()
    feeding = asyncio.create_task(feeder.run())
    kills_while_feeding = 0
    try:
        for _ in range(KILLS):
            # Progress in this life: some more orders accepted, then a random moment.
            await feeder.wait_accepted(len(feeder.accepted) + rng.randint(2, 30))
            await asyncio.sleep(rng.uniform(0.0, 0.25))
            kills_while_feeding += not feeding.done()
            await worker.kill()
            await worker.start()
        await asyncio.wait_for(feeding, 60)
        await wait_all_completed(worker, ORDERS)
        assert await worker.terminate() == 0, worker.log.read_text()
    finally:
        if worker.proc is not None and worker.proc.returncode is None:
            await worker.kill()
        if not feeding.done():
            feeding.cancel()

    print(f"kills while feeding: {kills_while_feeding}, in flight at each start: {worker.in_flight_at_start}")
    # The kills hit a running system: orders were still arriving, and restarts found
    # workflows in the middle of their run (recovered from the database).
    assert kills_while_feeding >= 3, kills_while_feeding
    assert sum(1 for n in worker.in_flight_at_start[1:] if n > 0) >= 3, worker.in_flight_at_start
    assert sorted(feeder.accepted) == [f"order-{n:04d}" for n in range(ORDERS)]

    db_ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        statuses = dict(db_ro.execute("SELECT id, status FROM instances").fetchall())
        assert set(statuses) == set(feeder.accepted), "a workflow is missing, or one too many exists"
        assert collections.Counter(statuses.values()) == {"COMPLETED": ORDERS}

        def per_order(topic: str) -> collections.Counter[str]:
            rows = db_ro.execute("SELECT value FROM messages WHERE topic = ?", (topic,)).fetchall()
            return collections.Counter(json.loads(v)["order_id"] for (v,) in rows)

        for topic in ("pizza_order_topic", "PizzaWaitForReadyListener", "pizza_delivery_topic"):
            counts = per_order(topic)
            duplicated = {k: c for k, c in counts.items() if c != 1}
            assert not duplicated, f"{topic}: published more than once: {duplicated}"
            assert set(counts) == set(feeder.accepted), (
                f"{topic}: missing {set(feeder.accepted) - set(counts)}"
            )

        # Every accepted input message was consumed: the agents' positions are at the end.
        # (orders_in may hold a few duplicates, sent again after a kill cut off the answer.)
        inputs = per_order("orders_in")
        assert set(inputs) == {f"order-{n:04d}" for n in range(1, ORDERS, 2)}
        positions = dict(db_ro.execute('SELECT consumer, "offset" FROM positions').fetchall())
        assert positions["agent:order-intake"] == sum(inputs.values())
        assert positions["agent:order-service"] == ORDERS
        assert positions["listener:PizzaWaitForReadyListener"] == ORDERS

        for table in ("jobs", "correlation", "timers"):
            assert db_ro.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        db_ro.close()
