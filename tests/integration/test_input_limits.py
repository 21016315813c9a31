"""Input the engine cannot keep is refused at the call site (ids, partition_key_lookup,
parameters, sizes), an instance that grows too large inside the pipeline fails its task while
the rest of the batch commits, and nothing refused is written: a restart reads all back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daggerflow import (
    ConfigurationError,
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    KafkaCommandTask,
    NotSerializable,
    StoreError,
)
from daggerflow.errors import InvalidInput, InvalidInstanceId, TaskInvalidState, TooLarge
from daggerflow.model.ids import MAX_ID_BYTES
from daggerflow.model.values import MAX_DEPTH

BIG = "big_topic"


class Quick(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["done"] = True


class Grow(ExecutorTask[str, str]):
    """Adds ``grow`` bytes to the parameters (after a wait, so that it reports as a job)."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        await asyncio.sleep(0)
        runtime_parameters["blob"] = "x" * runtime_parameters.get("grow", 0)


def send_big(engine: Dagger) -> type[KafkaCommandTask[str, str]]:
    class SendBig(KafkaCommandTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            await engine.topics[BIG].send(key="k", value="y" * runtime_parameters["size"])

    return SendBig


def register(engine: Dagger) -> None:
    helper = DAGBuilderHelper(engine)
    for name, task in (("quick", Quick), ("grow", Grow)):
        process = helper.generic_process_builder(
            process_name="Main", root_task=helper.generic_executor_task_builder(task_type=task, name="Main")
        )
        engine.add_template(name, helper.generic_template(template_name=name, root_process=process))
    process = helper.generic_process_builder(
        process_name="Main",
        root_task=helper.generic_command_task_builder(
            topic=BIG, task_type=send_big(engine), process_name="Main"
        ),
    )
    engine.add_template("send", helper.generic_template(template_name="send", root_process=process))


async def started(make_engine: Callable[..., Dagger], **options: Any) -> Dagger:
    engine = make_engine(**options)
    register(engine)
    await engine.start()
    return engine


async def still_works(engine: Dagger, iid: str) -> None:
    await engine.template_dags["quick"].create_instance(iid, submit_task=True)
    assert (await engine.wait_for(iid, timeout=5)).status.code == "COMPLETED"


# Ids --------------------------------------------------------------------------------------

BAD_IDS = ["", ".", "..", "a/b", "/", "x" * (MAX_ID_BYTES + 1), "é" * 128, "a\x00b", "line\nbreak", "zero\u200bwidth",
           True, None, 1.5, ["a"]]  # fmt: skip


async def test_ids_outside_the_rule_are_refused_and_nothing_is_written(
    make_engine: Callable[..., Dagger],
) -> None:
    engine = await started(make_engine)
    try:
        for bad in BAD_IDS:
            with pytest.raises(InvalidInstanceId, match="instance id"):
                await engine.template_dags["quick"].create_instance(bad, submit_task=True)
            assert await engine.get_instance(bad) is None
            assert await engine.stop_instance(bad) is None
            if isinstance(bad, str):
                with pytest.raises(InvalidInstanceId):
                    await engine.submit(bad)
        assert engine.count_instances() == 0
        # The edges that are allowed: an int (as its text), 255 bytes, printable unicode, spaces.
        for good in (42, uuid.UUID(int=7), "x" * MAX_ID_BYTES, "é" * 127, "pizza #1 ?&=%", "..."):
            await engine.template_dags["quick"].create_instance(good, submit_task=True)
            done = await engine.wait_for(str(good), timeout=5)
            assert done.id == str(good) and done.status.code == "COMPLETED"
            assert (await engine.get_instance(good)) is not None
        assert (await engine.stop_instance(42)) is not None  # terminal: a no-op, but found
    finally:
        await engine.stop()


# partition_key_lookup ----------------------------------------------------------------------


@pytest.mark.parametrize("lookup", [{"a": 1}, 123, "", ["order_id"], True])
async def test_partition_key_lookup_must_name_a_parameter(
    make_engine: Callable[..., Dagger], lookup: Any
) -> None:
    # With an update topic, the key of each snapshot is looked up by it: a dict there once
    # killed the processor; an int was stored and broke every listing and restart.
    engine = await started(make_engine, task_update_topic="updates")
    try:
        with pytest.raises(InvalidInput, match="partition_key_lookup"):
            await engine.template_dags["quick"].create_instance("p1", lookup, submit_task=True, a=1)
        assert await engine.get_instance("p1") is None
        await engine.template_dags["quick"].create_instance("p2", "order", submit_task=True, order="o-7")
        await engine.wait_for("p2", timeout=5)
        assert engine.read_topic("updates", 0, 100)[-1].key == "o-7"
        await still_works(engine, "after")
    finally:
        await engine.stop()
    again = make_engine(task_update_topic="updates")
    register(again)
    async with again:
        assert sorted(i.id for i in again.list_instances()) == ["after", "p2"]


# Runtime parameters ------------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({1: "one"}, InvalidInput, "names must be strings"),
        ({"big": 2**70}, NotSerializable, "'big'.*64-bit"),
        ({"big": -(2**63) - 1}, NotSerializable, "'big'.*64-bit"),
        ({"deep": nested(MAX_DEPTH + 1)}, NotSerializable, "'deep'.*nested more than 64"),
        ({"deep": {"k": nested(MAX_DEPTH)}}, NotSerializable, "'deep'.*nested"),
        ({"f": float("nan")}, NotSerializable, "'f'.*nan"),
        ({"f": [float("inf")]}, NotSerializable, r"f\[0\].*inf"),
        ({"s": {1, 2}}, NotSerializable, "'s'.*set"),
    ],
)
async def test_parameters_that_cannot_be_stored_are_refused(
    make_engine: Callable[..., Dagger], params: dict[Any, Any], error: type[Exception], match: str
) -> None:
    engine = await started(make_engine)
    try:
        with pytest.raises(error, match=match):
            await engine.create_instance(engine.template_dags["quick"], "p", params, submit_task=True)
        assert engine.count_instances() == 0
        await still_works(engine, "after")
    finally:
        await engine.stop()


async def test_every_parameter_name_is_a_parameter_and_the_edges_read_back(
    make_engine: Callable[..., Dagger],
) -> None:
    # Passed as a dict (as the REST API does), names that are keywords elsewhere are just
    # parameters; the largest int64 values and the deepest allowed nesting read back.
    names = ["id", "self", "seed", "repartition", "submit_task", "partition_key_lookup", "dynamic_processes",
             "parallel_processes", "template", "runtime_parameters", "instance_id", "overrides"]  # fmt: skip
    params: dict[str, Any] = {n: f"v-{n}" for n in names}
    params.update(top=2**63 - 1, bottom=-(2**63), deep=nested(MAX_DEPTH), pi=3.5)
    engine = await started(make_engine)
    try:
        await engine.create_instance(engine.template_dags["quick"], "names", params, submit_task=True)
        assert (await engine.wait_for("names", timeout=5)).runtime_parameters == {**params, "done": True}
    finally:
        await engine.stop()
    again = make_engine()
    register(again)
    async with again:
        assert (await again.get_instance("names")).runtime_parameters == {**params, "done": True}  # type: ignore[union-attr]


# Sizes -------------------------------------------------------------------------------------


def test_size_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_instance_bytes"):
        Dagger(web_port=None, max_instance_bytes=10)
    with pytest.raises(ConfigurationError, match="max_message_bytes"):
        Dagger(web_port=None, max_message_bytes="1MB")
    assert Dagger(web_port=None).config.limits().instance == 1024 * 1024
    kafka = Dagger(web_port=None, broker="kafka://127.0.0.1:9092", max_message_bytes=8 * 1024 * 1024)
    assert kafka.config.limits().message < 1024 * 1024  # what one producer record can carry


async def test_too_large_at_the_call_site(make_engine: Callable[..., Dagger]) -> None:
    engine = await started(
        make_engine, max_parameters_bytes=8192, max_instance_bytes=4096, max_message_bytes=2048
    )
    try:
        with pytest.raises(TooLarge, match=r"runtime parameters.*over the limit of 8192") as info:
            await engine.template_dags["quick"].create_instance("p", submit_task=True, blob="x" * 9000)
        assert info.value.limit == 8192 and info.value.size > 9000
        with pytest.raises(TooLarge, match="record of instance"):
            await engine.template_dags["quick"].create_instance(
                "p", submit_task=True, **{f"k{i}": "x" * 30 for i in range(120)}
            )
        with pytest.raises(TooLarge, match="message value for topic 't'"):
            await engine.append("t", None, "é" * 1500)
        assert await engine.append("t", None, "y" * 2048) == 0
        assert engine.count_instances() == 0
        await still_works(engine, "after")
    finally:
        await engine.stop()


async def test_an_instance_grown_too_large_by_its_task_fails_it_and_the_batch_commits(
    make_engine: Callable[..., Dagger],
) -> None:
    engine = await started(make_engine, max_parameters_bytes=4096, max_message_bytes=4096)
    try:
        grow = engine.template_dags["grow"]
        # Outcomes that arrive together are applied in one batch: the large one fails alone.
        await asyncio.gather(
            grow.create_instance("huge", submit_task=True, grow=10_000),
            *(grow.create_instance(f"ok{i}", submit_task=True, grow=100) for i in range(5)),
            engine.template_dags["send"].create_instance("loud", submit_task=True, size=5000),
            engine.template_dags["send"].create_instance("quiet", submit_task=True, size=10),
        )
        huge = await engine.wait_for("huge", timeout=5)
        assert huge.status.code == "FAILURE"
        state = await engine.get_instance_state("huge")
        assert state is not None
        failed = [n for n in state.nodes.values() if n.error]
        assert (
            failed
            and "TooLarge" in (failed[0].error or "")
            and "max_parameters_bytes" in (failed[0].error or "")
        )
        assert "blob" not in huge.runtime_parameters
        for i in range(5):
            ok = await engine.wait_for(f"ok{i}", timeout=5)
            assert ok.status.code == "COMPLETED" and len(ok.runtime_parameters["blob"]) == 100
        loud = await engine.wait_for("loud", timeout=5)
        assert loud.status.code == "FAILURE"
        loud_state = await engine.get_instance_state("loud")
        assert loud_state is not None
        assert any(
            "message value for topic 'big_topic'" in (n.error or "") for n in loud_state.nodes.values()
        )
        assert (await engine.wait_for("quiet", timeout=5)).status.code == "COMPLETED"
        assert [m.value for m in engine.read_topic(BIG, 0, 10)] == ["y" * 10]
        await still_works(engine, "after")
    finally:
        await engine.stop()
    again = make_engine(max_parameters_bytes=4096)
    register(again)
    async with again:
        assert again.count_instances() == 9
        assert (await again.get_instance("huge")).status.code == "FAILURE"  # type: ignore[union-attr]


async def test_a_lowered_limit_still_lets_an_old_large_instance_finish(
    make_engine: Callable[..., Dagger],
) -> None:
    engine = await started(make_engine)
    try:
        await engine.template_dags["quick"].create_instance("old", blob="x" * 6000)
    finally:
        await engine.stop()
    again = await started(make_engine, max_instance_bytes=4096, max_parameters_bytes=4096)
    try:
        await again.submit("old")
        assert (await again.wait_for("old", timeout=5)).status.code == "COMPLETED"
    finally:
        await again.stop()


# A processor that fails answers every caller ---------------------------------------------


async def test_callers_queued_behind_a_failed_batch_get_the_error(make_engine: Callable[..., Dagger]) -> None:
    engine = await started(make_engine)
    try:
        store = engine.runtime.store  # type: ignore[union-attr]

        def broken(*args: Any) -> Any:
            raise RuntimeError("disk on fire")

        store.commit = broken
        quick = engine.template_dags["quick"]
        results = await asyncio.wait_for(
            asyncio.gather(*(quick.create_instance(f"q{i}") for i in range(50)), return_exceptions=True), 5
        )
        assert all(isinstance(r, (RuntimeError, TaskInvalidState)) for r in results), results
        assert any("disk on fire" in str(r) for r in results)
        with pytest.raises(TaskInvalidState, match="processor stopped"):
            await quick.create_instance("late")
    finally:
        await engine.stop()


# Store URLs and the lock -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["sqlite:/x.db", "sqlite://relative.db", "sqlite:", "rocksdb:/x", "rocksdb://x", "memory://x"]
)
def test_misspelled_store_urls_are_refused_with_the_right_spelling(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///|memory://") as info:
        Dagger(store=url, web_port=None)
    assert url in str(info.value)


HOLDER = """
import sys
from daggerflow.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(os.environ.get("DAGGERFLOW_TEST_STORE", "sqlite") != "sqlite", reason="SQLite files")
async def test_the_lock_is_on_the_resolved_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "data" / "state.db"
    real.parent.mkdir()
    (tmp_path / "link").symlink_to(real.parent, target_is_directory=True)
    first = Dagger(store=f"sqlite:///{real}", web_port=None)
    await first.start()
    try:
        (tmp_path / "file-link.db").symlink_to(real)
        monkeypatch.chdir(tmp_path / "data")
        for other in (f"sqlite:///{tmp_path}/link/state.db", f"sqlite:///{tmp_path}/file-link.db", "sqlite:///state.db",
                      "sqlite:///../data/./state.db"):  # fmt: skip
            second = Dagger(store=other, web_port=None)
            with pytest.raises(StoreError, match="in use by another daggerflow worker"):
                await second.start()
            assert not second.running
    finally:
        await first.stop()
    # Another process, through the symlink, keeps this one out.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "link" / "state.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        blocked = Dagger(store="sqlite:///state.db", web_port=None)
        with pytest.raises(StoreError, match="in use"):
            await blocked.start()
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    async with Dagger(store="sqlite:///state.db", web_port=None) as free:  # released with its process
        assert free.running


async def test_state_directories_the_worker_creates_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which would give 0755
    try:
        async with Dagger(datadir=str(tmp_path / "new" / "data"), web_port=None) as engine:
            assert engine.running
    finally:
        os.umask(old)
    for made in (tmp_path / "new", tmp_path / "new" / "data"):
        assert made.stat().st_mode & 0o777 == 0o700, made
    # A directory the operator made keeps the mode the operator chose.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    async with Dagger(store=f"sqlite:///{shared}/state.db", web_port=None):
        pass
    assert shared.stat().st_mode & 0o777 == 0o755
