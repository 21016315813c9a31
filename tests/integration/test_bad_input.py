"""Bad input never stops the engine: malformed messages and failing correlation functions
go to the dead-letter topic, failing agents and tasks are contained, non-serialisable state
is refused at the call site, and bad configuration or databases fail with clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daggerflow import (
    ConfigurationError,
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    KafkaListenerTask,
    NotSerializable,
    RetryPolicy,
    StoreError,
    TaskLookupKey,
    TemplateDoesNotExist,
)
from daggerflow.model.instance import Instance

DEAD = "daggerflow-dead-letter"
# These tests write or garble SQLite files themselves (tests/unit/test_store_contract.py
# covers foreign, newer and corrupt RocksDB databases).
sqlite_files = pytest.mark.skipif(
    os.environ.get("DAGGERFLOW_TEST_STORE", "sqlite") != "sqlite",
    reason="writes or garbles SQLite database files directly",
)


# Tasks and templates ------------------------------------------------------------------


class JsonListener(KafkaListenerTask[str, str]):
    """Dagger's README listener: the payload must be JSON."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters["received"] = args[0]
        return True


class GarbageListener(KafkaListenerTask[str, str]):
    """Returns what the payload asks for: garbage, or a proper pair."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> Any:
        if payload == "int":
            return 42
        if payload == "strings":
            return ["order_id", "o1"]  # not a list of pairs
        if payload == "triple":
            return [("order_id", "o1", "extra")]
        return [(self.correlatable_key, payload)]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters["received"] = args[0]
        return True


class Quick(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


class Crash(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["half_done"] = True  # discarded: the attempt failed
        raise ZeroDivisionError("user code divided by zero")


class SetsObject(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["fine"] = "yes"
        runtime_parameters["handle"] = object()


def add_single_task_template(engine: Dagger, name: str, task: type, **retry: Any) -> None:
    helper = DAGBuilderHelper(engine)
    builder = helper.generic_executor_task_builder(task_type=task, name="Main")
    if retry:
        builder.set_retry_policy(RetryPolicy(**retry))
    process = helper.generic_process_builder(process_name="Main", root_task=builder)
    engine.add_template(name, helper.generic_template(template_name=name, root_process=process))


def add_listener_template(engine: Dagger, name: str, topic: str, listener: type) -> None:
    helper = DAGBuilderHelper(engine)
    process = helper.generic_process_builder(
        process_name="Wait",
        root_task=helper.generic_listener_task_builder(topic=topic, task_type=listener, process_name="Wait"),
    )
    engine.add_template(name, helper.generic_template(template_name=name, root_process=process))


def listener_waiting(inst: Instance) -> bool:
    return any(n.kind == "listener" and n.status == "EXECUTING" for n in inst.nodes.values())


class Collector:
    """Collects what is committed to a topic, through an agent (no polling, no sleeps)."""

    def __init__(self, engine: Dagger, topic: str) -> None:
        self.values: list[Any] = []
        self._changed = asyncio.Event()

        @engine.agent(topic, name=f"test-collector:{topic}")
        async def collect(value: Any) -> None:
            self.values.append(value)
            self._changed.set()

    async def wait_for_count(self, n: int, timeout: float = 5) -> list[Any]:
        async def wait() -> None:
            while len(self.values) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.values


async def start_instance(engine: Dagger, template: str, iid: str, **params: Any) -> None:
    await engine.template_dags[template].create_instance(iid, submit_task=True, **params)


# Malformed messages --------------------------------------------------------------------


async def test_malformed_payload_goes_to_dead_letter_and_the_next_message_is_processed(
    engine: Dagger,
) -> None:
    add_listener_template(engine, "ready", "ready", JsonListener)
    dead = Collector(engine, DEAD)
    await start_instance(engine, "ready", "w1", order_id="o1")
    await engine.wait_for("w1", listener_waiting, timeout=5)

    await engine.topics["ready"].send(key="k-bad", value="not json")
    await engine.topics["ready"].send(value='{"no_order_id": 1}')
    good = '{"order_id": "o1"}'
    await engine.topics["ready"].send(key="k-good", value=good)

    done = await engine.wait_for("w1", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters["received"] == good

    first, second = (json.loads(v) for v in await dead.wait_for_count(2))
    assert first["topic"] == "ready" and first["offset"] == 0
    assert first["key"] == "k-bad" and first["value"] == "not json"
    assert first["error"].startswith("JSONDecodeError")
    assert "json.loads" in first["traceback"] or "JSONDecodeError" in first["traceback"]
    assert second["offset"] == 1 and second["error"].startswith("KeyError")
    assert len(engine.read_topic(DEAD, 0, 10)) == 2  # the good message was not dead-lettered


@pytest.mark.parametrize("garbage", ["int", "strings", "triple"])
async def test_correlation_function_returning_garbage_goes_to_dead_letter(
    engine: Dagger, garbage: str
) -> None:
    add_listener_template(engine, "garbage", "garbage", GarbageListener)
    dead = Collector(engine, DEAD)
    await start_instance(engine, "garbage", "w1", order_id="o1")
    await engine.wait_for("w1", listener_waiting, timeout=5)

    await engine.topics["garbage"].send(value=garbage)
    await engine.topics["garbage"].send(value="o1")

    done = await engine.wait_for("w1", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters["received"] == "o1"
    [record] = [json.loads(v) for v in await dead.wait_for_count(1)]
    assert record["topic"] == "garbage" and record["value"] == garbage
    assert "GarbageListener.get_correlatable_keys_from_payload must return" in record["error"]


async def test_failing_agent_is_dead_lettered_continues_and_publishes_nothing(engine: Dagger) -> None:
    handled: list[str] = []

    @engine.agent("agent_in", name="echo")
    async def echo(value: Any) -> None:
        handled.append(value)
        await engine.topics["agent_out"].send(key=value, value=f"echo {value}")
        if value.startswith("bad"):
            raise ValueError(f"cannot handle {value}")

    out = Collector(engine, "agent_out")
    dead = Collector(engine, DEAD)
    for value in ("ok1", "bad1", "ok2"):
        await engine.topics["agent_in"].send(value=value)

    assert await out.wait_for_count(2) == ["echo ok1", "echo ok2"]
    [record] = [json.loads(v) for v in await dead.wait_for_count(1)]
    assert record["value"] == "bad1" and record["offset"] == 1
    assert record["error"] == "ValueError: cannot handle bad1"
    assert record["consumer"] == "agent:echo"
    assert handled == ["ok1", "bad1", "ok2"]
    # What the failing call sent was never published.
    assert [m.value for m in engine.read_topic("agent_out", 0, 10)] == ["echo ok1", "echo ok2"]


# Non-serialisable state ------------------------------------------------------------------


async def test_non_serialisable_runtime_parameter_at_creation(engine: Dagger) -> None:
    add_single_task_template(engine, "quick", Quick)
    template = engine.template_dags["quick"]
    with pytest.raises(NotSerializable, match="'handle'"):
        await template.create_instance("x", submit_task=True, fine=1, handle=object())
    with pytest.raises(NotSerializable, match="'nested'"):
        await template.create_instance("y", nested={"deep": [1, {2, object()}]})
    assert engine.committed("x") is None and engine.committed("y") is None
    assert engine.count_instances() == 0

    await template.create_instance("x", submit_task=True, fine=1)  # the id is still free
    assert (await engine.wait_for("x", timeout=5)).runtime_parameters == {"fine": 1, "done": True}


async def test_task_setting_a_non_serialisable_parameter_fails_cleanly(engine: Dagger) -> None:
    add_single_task_template(engine, "sets", SetsObject, max_attempts=3, initial_interval=0.01)
    add_single_task_template(engine, "quick", Quick)
    await start_instance(engine, "sets", "s1", before="kept")

    done = await engine.wait_for("s1", timeout=5)
    assert done.status.code == "FAILURE"
    # No state lost, none half-written: the parameters are those before the attempt.
    assert done.runtime_parameters == {"before": "kept"}
    inst = engine.committed("s1")
    assert inst is not None
    [task] = [n for n in inst.nodes.values() if n.kind == "executor"]
    assert task.status == "FAILURE"
    assert task.error is not None and task.error.startswith("NotSerializable")
    assert "'handle'" in task.error
    assert task.attempts == 1  # not retried: retrying cannot help

    await start_instance(engine, "quick", "q1")
    assert (await engine.wait_for("q1", timeout=5)).status.code == "COMPLETED"


async def test_failing_user_code_is_recorded_and_other_workflows_go_on(engine: Dagger) -> None:
    add_single_task_template(engine, "crash", Crash)
    add_single_task_template(engine, "quick", Quick)
    add_listener_template(engine, "ready", "ready", JsonListener)
    await start_instance(engine, "ready", "waiting", order_id="o1")
    await engine.wait_for("waiting", listener_waiting, timeout=5)

    await start_instance(engine, "crash", "c1", n=1)
    failed = await engine.wait_for("c1", timeout=5)
    assert failed.status.code == "FAILURE"
    assert failed.runtime_parameters == {"n": 1}
    tasks = {t.task_name: t for t in failed.tasks.values()}
    leaf = tasks["crash.Main.Main_executor_task"]
    process = tasks["crash.Main"]
    assert leaf.status.code == "FAILURE" and process.status.code == "FAILURE"
    assert leaf.error == "ZeroDivisionError: user code divided by zero"
    inst = engine.committed("c1")
    assert inst is not None
    tb = next(n.traceback for n in inst.nodes.values() if n.kind == "executor")
    assert tb is not None and "Traceback" in tb and "in execute" in tb

    await start_instance(engine, "quick", "q1")
    assert (await engine.wait_for("q1", timeout=5)).status.code == "COMPLETED"
    await engine.topics["ready"].send(value='{"order_id": "o1"}')
    assert (await engine.wait_for("waiting", timeout=5)).status.code == "COMPLETED"


async def test_unknown_template(engine: Dagger) -> None:
    add_single_task_template(engine, "quick", Quick)
    with pytest.raises(TemplateDoesNotExist, match=r"'nope'.*\['quick'\]"):
        engine.get_template("nope")


# Configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["aerospike://", "aerospike://localhost:3000", "redis://x", "rocksdb://"])
def test_unsupported_store_is_a_configuration_error(store: str) -> None:
    with pytest.raises(ConfigurationError, match="sqlite") as info:
        Dagger(store=store, web_port=None)
    assert store.split(":")[0] in str(info.value)


def test_unknown_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        Dagger(web_port=None, shoe_size=42, max_concurrent_jbos=3)
    message = str(info.value)
    assert "max_concurrent_jbos" in message and "shoe_size" in message
    assert "Supported" in message and "max_concurrent_jobs" in message and "unmatched_message_ttl" in message


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"aerospike_config": {"hosts": []}}, "aerospike_config"),
        ({"consumer_auto_offset_reset": "middle"}, "earliest"),
        ({"durability": "eventually"}, "durability"),
    ],
)
def test_bad_option_values(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Dagger(web_port=None, **options)


def test_daggers_faust_era_options_are_accepted() -> None:
    Dagger(web_port=None, trigger_interval=600, enable_changelog=False, serializer="raw", package_name="x")


# Databases ----------------------------------------------------------------------------------


async def make_engine_db(make_engine: Callable[..., Dagger], name: str) -> None:
    engine = make_engine(name=name)
    add_single_task_template(engine, "quick", Quick)
    await engine.start()
    try:
        for n in range(20):
            await start_instance(engine, "quick", f"i{n}", filler="x" * 500)
        await engine.wait_for("i19", timeout=5)
    finally:
        await engine.stop()


async def expect_store_error(make_engine: Callable[..., Dagger], name: str, match: str) -> None:
    engine = make_engine(name=name)
    with pytest.raises(StoreError, match=match):
        await engine.start()
    assert not engine.running


@sqlite_files
async def test_foreign_sqlite_database_is_refused_untouched(
    make_engine: Callable[..., Dagger], tmp_path: Path
) -> None:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    await expect_store_error(make_engine, "foreign", "did not create")
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"customers"}
        assert db.execute("SELECT name FROM customers").fetchall() == [("Ada",)]


@sqlite_files
async def test_file_that_is_not_a_database(make_engine: Callable[..., Dagger], tmp_path: Path) -> None:
    (tmp_path / "text.db").write_bytes(b"this is a pizza order, not a database\n" * 200)
    await expect_store_error(make_engine, "text", "not a usable daggerflow database")


@sqlite_files
async def test_corrupt_database(make_engine: Callable[..., Dagger], tmp_path: Path) -> None:
    await make_engine_db(make_engine, "corrupt")
    path = tmp_path / "corrupt.db"
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    for at in range(page, len(data), 97):  # garble everything after the header page
        data[at] = (data[at] + 0x5A) % 256
    path.write_bytes(bytes(data))
    await expect_store_error(make_engine, "corrupt", "corrupt|not a usable daggerflow database")


@sqlite_files
async def test_database_from_a_newer_schema(make_engine: Callable[..., Dagger], tmp_path: Path) -> None:
    await make_engine_db(make_engine, "newer")
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as db:
        old_version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute("PRAGMA user_version = 999")
    await expect_store_error(make_engine, "newer", "schema version 999, newer")

    # The failed open released the database: with the version back, it opens and has the data.
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {old_version}")
    engine = make_engine(name="newer")
    await engine.start()
    try:
        assert engine.count_instances(status="COMPLETED") == 20
    finally:
        await engine.stop()


@sqlite_files
async def test_failed_open_of_a_foreign_database_releases_the_lock(
    make_engine: Callable[..., Dagger], tmp_path: Path
) -> None:
    path = tmp_path / "later.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE other (x)")
    await expect_store_error(make_engine, "later", "did not create")
    path.unlink()  # the operator removes the wrong file; the engine can start now
    engine = make_engine(name="later")
    await engine.start()
    await engine.stop()


async def test_two_engines_on_one_database(make_engine: Callable[..., Dagger]) -> None:
    first = make_engine(name="shared")
    add_single_task_template(first, "quick", Quick)
    await first.start()
    try:
        second = make_engine(name="shared")
        with pytest.raises(StoreError, match="in use by another daggerflow worker"):
            await second.start()
        assert not second.running
        await start_instance(first, "quick", "q1")  # the first one is unaffected
        assert (await first.wait_for("q1", timeout=5)).status.code == "COMPLETED"
    finally:
        await first.stop()
    await second.start()  # the lock went with the first engine
    try:
        committed = second.committed("q1")
        assert committed is not None and committed.status == "COMPLETED"
    finally:
        await second.stop()
