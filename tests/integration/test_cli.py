"""The ``daggerflow`` command line, run for real in subprocesses (``python -m daggerflow``).

- ``demo pizza`` runs N orders end to end into the store it is given and reports
  ``completed N/N``; it exits 1 and says so when orders do not finish.
- ``worker examples.pizza:workflow_engine`` serves the README example with the overrides
  applied; the REST client commands (``templates``, ``create``, ``instances``,
  ``instance``, ``send``) drive it; SIGTERM drains and exits 0.
- ``python examples/pizza.py`` (the README's Step 6) runs the same workflow, delivering to
  the service named by ``PIZZA_DELIVERY_URL``.

Waiting on another process has no event to await, so the tests read its log for the
"started" line and poll the REST API with a deadline for workflow states.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow import Dagger
from daggerflow.demo.services import DeliveryService

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "daggerflow"]


def run_cli(*args: str, timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_log(proc: subprocess.Popen[str], needle: str, timeout: float = 20.0) -> list[str]:
    """Read the process's merged output until a line contains ``needle``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process exited ({proc.poll()}) before {needle!r}:\n{''.join(lines)}")
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} within {timeout} s:\n{''.join(lines)}")


def wait_for_status(url: str, instance_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/api/v1/instances/{instance_id}")
        if response.status_code == 200:
            body = response.json()
            if body["status"]["code"] == status:
                return body
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} not {status} within {timeout} s: {body}")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a long-running process from the repository root, output merged into stdout."""
    return subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop_process(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("no exit within 5 s of SIGTERM") from None


def committed_pizzas(db: Path) -> tuple[int, int]:
    """(COMPLETED PizzaWorkflow instances, all instances) in a store, read by a fresh engine."""
    import asyncio

    async def count() -> tuple[int, int]:
        async with Dagger(store=f"sqlite:///{db}", web_port=None) as engine:
            return (
                engine.count_instances(status="COMPLETED", template="PizzaWorkflow"),
                engine.count_instances(),
            )

    return asyncio.run(count())


# demo --------------------------------------------------------------------------------------


def test_demo_pizza_completes_every_order_into_the_given_store(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    result = run_cli("demo", "pizza", "--orders", "20", "--store", f"sqlite:///{db}", "--web-port", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "completed 20/20" in out
    assert "20 deliveries received" in out
    assert "workflows/s" in out and "p50" in out and "p99" in out
    assert "REST API was at http://127.0.0.1:" in out
    assert f"store: sqlite:///{db}" in out
    # The store option was honoured: the 20 workflows are durable there, all COMPLETED.
    assert committed_pizzas(db) == (20, 20)


def test_demo_pizza_reports_unfinished_orders_and_exits_1() -> None:
    # A tiny timeout gives up on every order long before the kitchen answers.
    result = run_cli("demo", "pizza", "--orders", "5", "--timeout", "0.001", "--kitchen-delay", "5", "--web-port", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "completed 0/5" in result.stdout
    assert "unfinished 5" in result.stdout
    assert "store: sqlite:///" in result.stdout and "(temporary)" in result.stdout


# worker + REST client commands ----------------------------------------------------------------


def test_worker_runs_the_readme_example_and_drains_on_sigterm(
    tmp_path: Path, delivery: DeliveryService
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "w.db"
    env = {"PIZZA_KITCHEN_DELAY": "0", "PIZZA_DELIVERY_URL": str(delivery.url)}
    target = "examples.pizza:workflow_engine"
    proc = start([*CLI, "worker", target, "--web-port", str(port), "--store", f"sqlite:///{db}"], env)
    try:
        log = wait_for_log(proc, "started")
        assert f"web {url}" in log[-1] and str(db) in log[-1]  # both overrides applied
        assert httpx.get(f"{url}/service/ready").json() == {"is_ready": True}

        client_env = {**os.environ, "DAGGERFLOW_URL": url}
        templates = run_cli("templates", "--json", env=client_env)
        assert templates.returncode == 0, templates.stderr
        assert [t["name"] for t in json.loads(templates.stdout)] == ["PizzaWorkflow"]

        created = run_cli(
            "create", "PizzaWorkflow", "--id", "pizza-1", "-p", "order_id=o-1", "-p", "customer_id=c-1",
            "--params", '{"pizza_type": 3}', env=client_env,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert "created pizza-1" in created.stdout
        done = wait_for_status(url, "pizza-1", "COMPLETED")
        assert done["runtime_parameters"] == {"order_id": "o-1", "customer_id": "c-1", "pizza_type": 3}
        assert delivery.deliveries == [{"order_id": "o-1", "customer_id": "c-1"}]

        # A NOT_STARTED instance is listed as such and filtered by status.
        run_cli(
            "create", "PizzaWorkflow", "--id", "pizza-2", "--no-submit", "-p", "order_id=o-2", env=client_env
        )
        listed = run_cli("instances", "--status", "COMPLETED", "--json", env=client_env)
        assert [i["id"] for i in json.loads(listed.stdout)["items"]] == ["pizza-1"]
        table = run_cli("instances", "--url", url)
        assert "pizza-1" in table.stdout and "pizza-2" in table.stdout and "NOT_STARTED" in table.stdout
        assert "1-2 of 2" in table.stdout

        shown = run_cli("instance", "pizza-2", "--url", url)
        assert json.loads(shown.stdout)["status"]["code"] == "NOT_STARTED"

        sent = run_cli("send", "pizza_order_topic", '{"order_id": "x", "customer_id": "y", "pizza_type": 1}',
                       "--key", "x", "--url", url)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "sent to pizza_order_topic at offset 1" in sent.stdout  # offset 0 was pizza-1's order
        messages = httpx.get(f"{url}/topics/pizza_order_topic/messages").json()["messages"]
        assert [(m["key"], json.loads(m["value"])["order_id"]) for m in messages] == [
            (None, "o-1"),
            ("x", "x"),
        ]

        missing = run_cli("instance", "nope", "--url", url)
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr and "nope" in missing.stderr
    finally:
        code = stop_process(proc)
    assert code == 0
    assert committed_pizzas(db) == (1, 2)


def test_worker_takes_a_file_path_and_finds_the_only_engine(
    tmp_path: Path, delivery: DeliveryService
) -> None:
    env = {"PIZZA_STORE": f"sqlite:///{tmp_path}/f.db", "PIZZA_DELIVERY_URL": str(delivery.url)}
    proc = start([*CLI, "worker", "examples/pizza.py", "--no-web"], env)
    try:
        log = wait_for_log(proc, "started")
        assert "web off" in log[-1] and "f.db" in log[-1]
    finally:
        code = stop_process(proc)
    assert code == 0


def test_demo_on_a_taken_port_fails_with_a_message() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "pizza", "--orders", "3", "--web-port", str(port))
    assert result.returncode == 1
    assert f"cannot serve the REST API on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_client_commands_fail_clearly_without_a_worker() -> None:
    result = run_cli("instances", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach a daggerflow worker" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["examples.pizza:no_such_engine"], "has no attribute 'no_such_engine'"),
        (["no_such_module_xyz"], "cannot import 'no_such_module_xyz'"),
        (["examples.pizza:order_service"], "is not a Dagger engine (it is a OrderService)"),
        (["examples.pizza", "--broker", "http://localhost:9092"], "expected kafka://host:port"),
        (["examples.pizza", "--store", "aerospike://"], "ConfigurationError"),
    ],
)
def test_worker_rejects_bad_targets_and_options(args: list[str], message: str, tmp_path: Path) -> None:
    env = {**os.environ, "PIZZA_STORE": f"sqlite:///{tmp_path}/x.db", "PIZZA_WEB_PORT": "0"}
    result = run_cli("worker", *args, env=env, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr


# python examples/pizza.py ------------------------------------------------------------------


def test_python_examples_pizza_runs_the_readme_workflow(tmp_path: Path, delivery: DeliveryService) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PIZZA_STORE": f"sqlite:///{tmp_path}/p.db",
        "PIZZA_WEB_PORT": str(port),
        "PIZZA_DELIVERY_URL": str(delivery.url),
        "PIZZA_KITCHEN_DELAY": "0.05",  # the scheduled (non-durable) answer path
    }
    proc = start([sys.executable, "examples/pizza.py"], env)
    try:
        wait_for_log(proc, "started")
        for n in range(3):
            body = {
                "id": f"p{n}",
                "runtime_parameters": {"order_id": f"o{n}", "customer_id": "c", "pizza_type": n},
            }
            assert httpx.post(f"{url}/api/v1/templates/PizzaWorkflow/instances", json=body).status_code == 201
        for n in range(3):
            done = wait_for_status(url, f"p{n}", "COMPLETED")
            names = {t["task_name"]: t["status"]["code"] for t in done["tasks"].values()}
            assert names == {
                "PizzaWorkflow.Order": "COMPLETED",
                "PizzaWorkflow.Order.Order_command_task": "COMPLETED",
                "PizzaWorkflow.Order.Order_listener_task": "COMPLETED",
                "PizzaWorkflow.Delivery": "COMPLETED",
                "PizzaWorkflow.Delivery.Delivery_executor_task": "COMPLETED",
            }
        assert sorted(d["order_id"] for d in delivery.deliveries) == ["o0", "o1", "o2"]
    finally:
        code = stop_process(proc)
    assert code == 0
