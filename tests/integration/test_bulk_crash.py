"""A bulk retry survives a SIGKILL of the embedded worker mid-job (``bulk_worker.py``, a real
``daggerflow worker`` process on one SQLite file): restarted on the same file, the worker
resumes the job after its last committed step, and every matched workflow is retried exactly
once (each COMPLETED, each command sent once, the job counts none failed)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
N = 80


class Worker:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.log = tmp / "worker.log"
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> str:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daggerflow", "worker", "tests.integration.bulk_worker:engine"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"started \(store .*, web (http://\S+)\)", self.log.read_bytes()[offset:].decode())
            if found:
                return found.group(1)
            assert self.proc.poll() is None, self.log.read_text()
            await asyncio.sleep(0.05)
        raise AssertionError(f"the worker did not start:\n{self.log.read_text()}")

    def kill(self, sig: int = 9) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


async def poll(http: httpx.AsyncClient, path: str, check: Any, timeout: float = 60.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            r = await http.get(path)
            if r.status_code == 200 and check(r.json()):
                return r.json()
            await asyncio.sleep(0.02)


async def test_a_bulk_retry_resumes_after_a_sigkill_and_retries_each_workflow_once(tmp_path: Path) -> None:
    flag = tmp_path / "gate-closed"
    flag.write_text("closed")
    db = tmp_path / "bulk.db"
    worker = Worker(tmp_path, {"BULK_DB": str(db), "BULK_FLAG": str(flag), "BULK_KILL_AT": "5"})
    ids = [f"w{n:03d}" for n in range(N)]
    try:
        url = await worker.start()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for iid in ids:
                assert (await http.post("/api/v1/templates/Ship/instances", json={"id": iid})).status_code == 201
            await poll(http, "/api/v1/instances?status=FAILURE&limit=1", lambda page: page["total"] == N)
            flag.unlink()
            body = {"action": "retry", "filter": {"template": "Ship", "status": "FAILURE"}, "batch_size": 1}
            started = (await http.post("/api/v1/instances/bulk", json=body)).json()
            assert started["matched"] == N, started
            job = started["job"]
        # The worker kills itself when the fifth retried workflow passes the gate.
        assert worker.proc is not None and await asyncio.to_thread(worker.proc.wait, 60) == -9
        store = SQLiteStore(str(db))
        try:
            at_kill = store.bulk_share(job)
        finally:
            store.close()
        assert at_kill is not None and 0 < at_kill.done and at_kill.remaining > 0, at_kill
        worker.env.pop("BULK_KILL_AT")
        url = await worker.start()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            done = await poll(http, f"/api/v1/bulk/{job}", lambda p: p["state"] == "done")
            assert (done["matched"], done["done"], done["failed"], done["remaining"]) == (N, N, 0, 0), done
            await poll(http, "/api/v1/instances?status=COMPLETED&limit=1", lambda page: page["total"] == N)
            sent = (await http.get("/topics/bulk.shipped/messages", params={"limit": 1000})).json()["messages"]
        counts = Counter(m["key"] for m in sent)
        assert counts == Counter(ids), {k: v for k, v in counts.items() if v != 1}
    finally:
        worker.kill(15)
        worker.kill()
