"""The OpenAPI contract against a live worker: schemathesis (its CLI, in a subprocess) drives
every documented operation of an embedded worker served by uvicorn on a free port, with
schema-valid and invalid data, and fails on any 5xx, any undocumented status or content type,
and any response that does not match its schema. The worker must still work afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from daggerflow import Dagger

from .test_rest import register_templates

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
# Bounded in time: ~10 examples per operation and phase keeps the run near 30 s on 2 CPUs.
MAX_EXAMPLES = 10
RUN_TIMEOUT = 240.0


@pytest.fixture
async def worker(make_engine: Callable[..., Dagger]) -> AsyncIterator[Dagger]:
    engine = make_engine(web_port=0)
    register_templates(engine)
    async with engine:
        yield engine


async def test_schemathesis_finds_no_violation_and_the_worker_goes_on(worker: Dagger, tmp_path: Path) -> None:
    url = worker.web_url
    assert url is not None
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "20261201",
        # One worker: schemathesis' threads share Hypothesis state that is not thread-safe.
        "--workers", "1",
        "--request-timeout", "10",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        document = (await client.get("/openapi.json")).json()
    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert len(operations) >= 16
    env = {**os.environ, "NO_COLOR": "1"}
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path, env=env
    )
    # The worker runs in this event loop: wait for the subprocess without blocking it.
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, text[-20000:]
    # It really tested every operation (not a run that selected nothing); schemathesis leaves
    # out the document's own route.
    [report] = (tmp_path / "report").glob("junit*.xml")
    cases = ElementTree.parse(report).getroot().iter("testcase")
    tested = {c.get("name") for c in cases}
    assert operations - {"GET /openapi.json"} <= tested, text[-3000:]

    # The worker still serves and runs workflows.
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.get("/service/ready")).json() == {"is_ready": True}
        r = await client.post(
            "/api/v1/templates/quick/instances", json={"id": "after-schemathesis", "runtime_parameters": {"n": 1}}
        )
        assert r.status_code == 201, r.text
    done = await worker.wait_for("after-schemathesis", timeout=10)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters == {"n": 1, "done": True}
