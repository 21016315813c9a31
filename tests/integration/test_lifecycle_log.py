"""The lifecycle log (logger ``daggerflow.lifecycle``): each workflow start, completion,
failure (with the error), stop, task timeout, retried failure and dead letter is logged once,
after its commit, with the instance id, template and task as structured fields; and a real
worker with ``--log-format json`` writes every stderr line as one JSON object, lifecycle
events and uvicorn's access log included."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow import DAGBuilderHelper, Dagger, ExecutorTask, KafkaListenerTask, ManualClock, RetryPolicy
from daggerflow.tasks import TaskLookupKey
from tests.integration.lifecycle_worker import build

ROOT = Path(__file__).resolve().parents[2]
CHORE = "Chore.P.Chore_executor_task"  # a task's name: template.process.task


def events(caplog: pytest.LogCaptureFixture, instance_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for record in caplog.records:
        if record.name != "daggerflow.lifecycle":
            continue
        fields = {k: getattr(record, k, None) for k in ("instance_id", "template", "task", "status", "error")}
        fields["level"] = record.levelname
        if instance_id is None or fields["instance_id"] == instance_id:
            found.append((str(getattr(record, "event", "")), fields))
    return found


class Waits(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        if payload == "unreadable":
            raise ValueError("cannot read this payload")
        return [(self.correlatable_key, payload)]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        return True


FLAKY_FAILS: dict[str, int] = {}


class Flaky(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        key = str(runtime_parameters["key"])
        if FLAKY_FAILS.get(key, 0) < 1:
            FLAKY_FAILS[key] = FLAKY_FAILS.get(key, 0) + 1
            raise ConnectionError("flaky service")


def waiting_engine(tmp_path: Path, clock: ManualClock) -> Dagger:
    engine = Dagger(store=f"sqlite:///{tmp_path}/l.db", web_port=None, clock=clock)
    helper = DAGBuilderHelper(engine)
    listener = helper.generic_listener_task_builder(topic="ready", task_type=Waits, process_name="W")
    listener.set_timeout(5.0)
    process = helper.generic_process_builder(process_name="W", root_task=helper.build_and_link_tasks([listener]))
    engine.add_template("Waiting", helper.generic_template(template_name="Waiting", root_process=process))
    flaky = helper.generic_executor_task_builder(task_type=Flaky, name="Flaky")
    flaky.set_retry_policy(RetryPolicy(max_attempts=3, initial_interval=1.0))
    retried = helper.generic_process_builder(process_name="R", root_task=helper.build_and_link_tasks([flaky]))
    engine.add_template("Retried", helper.generic_template(template_name="Retried", root_process=retried))
    return engine


async def test_completion_and_failure_are_logged_once_with_their_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="daggerflow.lifecycle")
    engine = build(store=f"sqlite:///{tmp_path}/c.db", web_port=None)
    async with engine:
        template = engine.get_template("Chore")
        await template.create_instance("ok", submit_task=True)
        await template.create_instance("bad", fail=True, submit_task=True)
        await engine.wait_for("ok", timeout=5)
        await engine.wait_for("bad", timeout=5)
    ok = events(caplog, "ok")
    assert [e for e, _ in ok] == ["workflow_started", "workflow_completed"]
    assert all(f["template"] == "Chore" and f["level"] == "INFO" for _, f in ok)
    assert ok[1][1]["status"] == "COMPLETED"
    bad = events(caplog, "bad")
    assert [e for e, _ in bad] == ["workflow_started", "task_failed", "task_traceback", "workflow_failed"]
    failed = dict(bad)["task_failed"]
    assert failed["level"] == "WARNING" and failed["task"] == CHORE and failed["status"] == "FAILURE"
    assert failed["error"] == "ValueError: asked to fail"
    workflow = dict(bad)["workflow_failed"]
    assert workflow["task"] == CHORE and workflow["error"] == "ValueError: asked to fail"
    traceback_record = next(r for r in caplog.records if getattr(r, "event", "") == "task_traceback")
    assert traceback_record.levelname == "DEBUG" and "asked to fail" in traceback_record.traceback


async def test_timeout_stop_retry_and_dead_letter_are_logged(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daggerflow.lifecycle")
    engine = waiting_engine(tmp_path, clock)
    async with engine:
        waiting = engine.get_template("Waiting")
        await waiting.create_instance("late", order_id="o1", submit_task=True)
        await waiting.create_instance("stopped", order_id="o2", submit_task=True)
        await engine.stop_instance("stopped")
        await engine.append("ready", None, "unreadable")
        await engine.get_template("Retried").create_instance("flaky", key="k1", submit_task=True)
        await engine.wait_for("flaky", lambda i: any(k.endswith(":retry:execute") for k in i.timers), timeout=5)
        clock.advance(6.0)  # past the listener's 5 s timeout and the 1 s retry delay
        await engine.wait_for("late", timeout=5)
        await engine.wait_for("flaky", timeout=5)
        dead_letters = [e for e in events(caplog) if e[0] == "dead_letter"]
        assert not any(r.levelname == "DEBUG" for r in caplog.records if r.name == "daggerflow.lifecycle")
    late = events(caplog, "late")
    assert [e for e, _ in late] == ["workflow_started", "task_timeout", "workflow_failed"]
    timeout = dict(late)["task_timeout"]
    assert timeout["task"] == "Waiting.W.W_listener_task" and timeout["error"] == "timed out after 5 s"
    assert timeout["level"] == "WARNING"
    stopped = events(caplog, "stopped")
    assert [e for e, _ in stopped] == ["workflow_started", "workflow_stopped"]
    assert dict(stopped)["workflow_stopped"]["status"] == "STOPPED"
    flaky = events(caplog, "flaky")
    assert [e for e, _ in flaky] == ["workflow_started", "task_failed", "workflow_completed"]
    retry = next(r for r in caplog.records if getattr(r, "event", "") == "task_failed"
                 and r.instance_id == "flaky")  # fmt: skip
    assert retry.retrying is True and retry.attempts == 1 and retry.error == "ConnectionError: flaky service"
    assert len(dead_letters) == 1
    letter = next(r for r in caplog.records if getattr(r, "event", "") == "dead_letter")
    assert letter.levelname == "WARNING" and letter.topic == "ready" and letter.offset == 0
    assert letter.consumer == "listener:ready" and "cannot read this payload" in letter.error
    # Reported once: no other logger warns about the same message before its commit.
    others = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name != "daggerflow.lifecycle"]
    assert not [r for r in others if "unreadable" in r.getMessage() or "cannot read" in r.getMessage()]


async def test_an_agent_message_over_the_limit_is_a_dead_letter_and_nothing_is_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daggerflow.lifecycle")
    engine = Dagger(store=f"sqlite:///{tmp_path}/a.db", web_port=None, max_message_bytes=2048)
    engine.create_topic("out")

    @engine.agent("in", name="relay")
    async def relay(value: Any) -> None:
        await engine.topics["out"].send(value="small")
        await engine.topics["out"].send(value=str(value) * 3000)

    async with engine:
        await engine.append("in", None, "x")
        await engine.append("in", None, "")  # sends "small" and "": within the limit
        dead = engine.config.dead_letter

        async def settled() -> bool:
            return len(engine.read_topic(dead, 0, 10)) == 1 and len(engine.read_topic("out", 0, 10)) == 2

        for _ in range(500):
            if await settled():
                break
            await asyncio.sleep(0.01)
        letters = engine.read_topic(dead, 0, 10)
        assert len(letters) == 1
        letter = json.loads(letters[0].value)
        assert letter["consumer"] == "agent:relay" and letter["offset"] == 0
        assert letter["error"].startswith("TooLarge: the message value for topic 'out' is 3000 bytes")
        # Of the oversize message's run nothing went out; the second run sent both of its messages.
        assert [m.value for m in engine.read_topic("out", 0, 10)] == ["small", ""]
    logged = [r for r in caplog.records if getattr(r, "event", "") == "dead_letter"]
    assert len(logged) == 1 and logged[0].consumer == "agent:relay"


async def test_nothing_is_logged_below_warning_and_nothing_at_all_when_warning_is_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = build(store=f"sqlite:///{tmp_path}/q.db", web_port=None)
    logger = logging.getLogger("daggerflow.lifecycle")
    async with engine:
        template = engine.get_template("Chore")
        caplog.set_level(logging.WARNING, logger="daggerflow.lifecycle")
        await template.create_instance("a", submit_task=True)
        await template.create_instance("b", fail=True, submit_task=True)
        await engine.wait_for("b", timeout=5)
        await engine.wait_for("a", timeout=5)
        assert [e for e, _ in events(caplog)] == ["task_failed", "workflow_failed"]
        caplog.clear()
        logger.setLevel(logging.ERROR)
        await template.create_instance("c", fail=True, submit_task=True)
        await engine.wait_for("c", timeout=5)
        assert events(caplog) == []


# A real worker, --log-format json ---------------------------------------------------------


def test_worker_json_log_has_lifecycle_events_and_access_log(tmp_path: Path) -> None:
    env = {**os.environ, "LIFECYCLE_DB": str(tmp_path / "w.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daggerflow", "worker", "tests.integration.lifecycle_worker:engine",
         "--log-format", "json", "--access-log"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"worker exited ({proc.poll()}): {lines}"
            lines.append(line)
            message = json.loads(line)["message"]
            if "started" in message and "web http://" in message:
                url = message.split("web ")[1].rstrip(")")
        assert url is not None, lines
        for iid, params in (("fine", {}), ("broken", {"fail": True})):
            body = {"id": iid, "runtime_parameters": params, "submit": True}
            assert httpx.post(f"{url}/api/v1/templates/Chore/instances", json=body).status_code < 300
        for iid, status in (("fine", "COMPLETED"), ("broken", "FAILURE")):
            while httpx.get(f"{url}/api/v1/instances/{iid}").json()["status"]["code"] != status:
                assert time.monotonic() < deadline, f"{iid} not {status}"
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    lines.extend(rest.splitlines(keepends=True))
    assert proc.returncode == 0
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(r["ts"].endswith("+00:00") and "T" in r["ts"] for r in records)
    by_event = {(r.get("instance_id"), r.get("event")): r for r in records if r["logger"] == "daggerflow.lifecycle"}
    assert by_event[("fine", "workflow_completed")]["template"] == "Chore"
    assert by_event[("fine", "workflow_completed")]["level"] == "INFO"
    failed = by_event[("broken", "workflow_failed")]
    assert failed["level"] == "WARNING" and failed["task"] == CHORE and failed["error"] == "ValueError: asked to fail"
    assert by_event[("broken", "task_failed")]["status"] == "FAILURE"
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    posted = [r for r in access if r["method"] == "POST" and r["path"] == "/api/v1/templates/Chore/instances"]
    assert len(posted) == 2 and all(r["status"] == 201 or r["status"] == 200 for r in posted)
    assert "Traceback" not in "".join(lines)
