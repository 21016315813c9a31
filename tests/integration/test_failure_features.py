"""What daggerflow adds beyond Dagger for failures: retries with backoff, timeouts,
continue-on-failure, the outbox across failed attempts, buffering of early messages and
message-id dedupe. Time is a ManualClock: nothing waits for wall-clock seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    KafkaCommandTask,
    KafkaListenerTask,
    ManualClock,
    RetryPolicy,
    TaskLookupKey,
)
from daggerflow.model.instance import Instance, Node

POLICY = RetryPolicy(
    max_attempts=3,
    initial_interval=1,
    backoff_coefficient=2,
    maximum_interval=3,
    non_retryable=("ValueError",),
)


# Tasks ------------------------------------------------------------------------------------


class Flaky(ExecutorTask[str, str]):
    """Fails (with ``error``) until attempt ``succeed_on``; records every attempt."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["tried"] = self.attempts  # kept only from the successful attempt
        if self.attempts < runtime_parameters["succeed_on"]:
            error = runtime_parameters.get("error", "RuntimeError")
            raise {"RuntimeError": RuntimeError, "ValueError": ValueError}[error](f"attempt {self.attempts}")


class FlakyByClassPolicy(Flaky):
    retry_policy = RetryPolicy(max_attempts=2, initial_interval=7)


class AlwaysFails(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        raise RuntimeError("still broken")


class Record(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["after_ran"] = True


class Ready(KafkaListenerTask[str, str]):
    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        runtime_parameters["received"] = args[0]
        return True


class Deduped(KafkaListenerTask[str, str]):
    """Keeps waiting until a message says ``last``; records every message it ran for."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        return [(self.correlatable_key, json.loads(payload)["order_id"])]

    def get_message_id(self, payload: Any) -> str | None:
        return str(json.loads(payload)["msg_id"])

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        payload = json.loads(args[0])
        runtime_parameters["seen"] = [*runtime_parameters.get("seen", []), payload["msg_id"]]
        return bool(payload.get("last", False))


# Helpers ----------------------------------------------------------------------------------


def add_template(engine: Dagger, name: str, *processes: Any) -> None:
    helper = DAGBuilderHelper(engine)
    root = helper.build_and_link_processes(list(processes))
    engine.add_template(name, helper.generic_template(template_name=name, root_process=root))


def process(engine: Dagger, name: str, *tasks: Any) -> Any:
    helper = DAGBuilderHelper(engine)
    return helper.generic_process_builder(
        process_name=name, root_task=helper.build_and_link_tasks(list(tasks))
    )


def executor(engine: Dagger, task: type, name: str) -> Any:
    return DAGBuilderHelper(engine).generic_executor_task_builder(task_type=task, name=name)


def listener(engine: Dagger, topic: str, task: type, process_name: str) -> Any:
    return DAGBuilderHelper(engine).generic_listener_task_builder(
        topic=topic, task_type=task, process_name=process_name
    )


def node(engine: Dagger, iid: str, suffix: str) -> Node:
    inst = engine.committed(iid)
    assert inst is not None
    [found] = [n for n in inst.nodes.values() if n.name.endswith(suffix)]
    return found


def attempts_failed(n: int, suffix: str = "_executor_task") -> Callable[[Instance], bool]:
    """The task's attempt n failed and its retry is scheduled."""

    def check(inst: Instance) -> bool:
        task = next(x for x in inst.nodes.values() if x.name.endswith(suffix))
        return task.attempts == n and task.job is None and any(":retry:" in k for k in inst.timers)

    return check


def waiting(inst: Instance) -> bool:
    return any(n.kind == "listener" and n.status == "EXECUTING" for n in inst.nodes.values())


@pytest.fixture
async def engine(make_engine: Callable[..., Dagger], clock: ManualClock) -> AsyncIterator[Dagger]:
    e = make_engine(clock=clock)
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


async def start(engine: Dagger, template: str, iid: str, **params: Any) -> None:
    await engine.template_dags[template].create_instance(iid, submit_task=True, **params)


def flaky_template(engine: Dagger, task: type = Flaky, policy: RetryPolicy | None = POLICY) -> None:
    builder = executor(engine, task, "Work")
    if policy is not None:
        builder.set_retry_policy(policy)
    add_template(engine, "flaky", process(engine, "Work", builder))


# Retries ----------------------------------------------------------------------------------


async def test_retried_after_backoff_and_completed_on_attempt_3(engine: Dagger, clock: ManualClock) -> None:
    flaky_template(engine)
    t0 = clock.now()
    await start(engine, "flaky", "f1", succeed_on=3)

    await engine.wait_for("f1", attempts_failed(1), timeout=5)
    inst = engine.committed("f1")
    assert inst is not None
    [(key, due)] = inst.timers.items()
    assert key.endswith(":retry:execute") and due == t0 + 1  # initial_interval
    task = node(engine, "f1", "_executor_task")
    assert task.status == "EXECUTING" and task.error == "RuntimeError: attempt 1"

    clock.advance(1)
    await engine.wait_for("f1", attempts_failed(2), timeout=5)
    inst = engine.committed("f1")
    assert inst is not None
    assert list(inst.timers.values()) == [t0 + 1 + 2]  # initial_interval * backoff_coefficient

    clock.advance(2)
    done = await engine.wait_for("f1", timeout=5)
    assert done.status.code == "COMPLETED"
    task = node(engine, "f1", "_executor_task")
    assert task.status == "COMPLETED" and task.attempts == 3
    assert task.error is None and task.traceback is None
    assert done.runtime_parameters["tried"] == 3
    assert task.time_completed == t0 + 3


async def test_retries_exhausted_is_a_failure(engine: Dagger, clock: ManualClock) -> None:
    flaky_template(engine)
    await start(engine, "flaky", "f1", succeed_on=99)
    await engine.wait_for("f1", attempts_failed(1), timeout=5)
    clock.advance(1)
    await engine.wait_for("f1", attempts_failed(2), timeout=5)
    clock.advance(2)
    done = await engine.wait_for("f1", timeout=5)
    assert done.status.code == "FAILURE"
    task = node(engine, "f1", "_executor_task")
    assert task.status == "FAILURE" and task.attempts == 3
    assert task.error == "RuntimeError: attempt 3"
    assert task.traceback is not None and "RuntimeError: attempt 3" in task.traceback
    assert "tried" not in done.runtime_parameters  # failed attempts changed nothing
    inst = engine.committed("f1")
    assert inst is not None and inst.timers == {}


async def test_backoff_is_capped_by_maximum_interval(engine: Dagger, clock: ManualClock) -> None:
    policy = RetryPolicy(max_attempts=5, initial_interval=1, backoff_coefficient=2, maximum_interval=3)
    flaky_template(engine, policy=policy)
    await start(engine, "flaky", "f1", succeed_on=5)
    delays = []
    for attempt in range(1, 5):
        await engine.wait_for("f1", attempts_failed(attempt), timeout=5)
        inst = engine.committed("f1")
        assert inst is not None
        [due] = inst.timers.values()
        delays.append(due - clock.now())
        clock.advance(delays[-1])
    assert delays == [1, 2, 3, 3]
    assert (await engine.wait_for("f1", timeout=5)).status.code == "COMPLETED"


async def test_non_retryable_exception_fails_at_once(engine: Dagger) -> None:
    flaky_template(engine)
    await start(engine, "flaky", "f1", succeed_on=3, error="ValueError")
    done = await engine.wait_for("f1", timeout=5)
    assert done.status.code == "FAILURE"
    task = node(engine, "f1", "_executor_task")
    assert task.attempts == 1 and task.error == "ValueError: attempt 1"


async def test_without_a_policy_there_is_no_retry(engine: Dagger) -> None:
    flaky_template(engine, policy=None)
    await start(engine, "flaky", "f1", succeed_on=2)
    assert (await engine.wait_for("f1", timeout=5)).status.code == "FAILURE"
    assert node(engine, "f1", "_executor_task").attempts == 1


async def test_retry_policy_as_a_class_attribute(engine: Dagger, clock: ManualClock) -> None:
    flaky_template(engine, task=FlakyByClassPolicy, policy=None)
    t0 = clock.now()
    await start(engine, "flaky", "f1", succeed_on=2)
    await engine.wait_for("f1", attempts_failed(1), timeout=5)
    inst = engine.committed("f1")
    assert inst is not None and list(inst.timers.values()) == [t0 + 7]
    clock.advance(7)
    assert (await engine.wait_for("f1", timeout=5)).status.code == "COMPLETED"
    assert node(engine, "f1", "_executor_task").attempts == 2


# Timeouts ---------------------------------------------------------------------------------


def listener_with_timeout_template(engine: Dagger, status: str) -> None:
    wait = listener(engine, "ready", Ready, "Order").set_timeout(5, status=status)
    add_template(engine, "timed", process(engine, "Order", wait, executor(engine, Record, "After")))


async def test_listener_timeout_fails_the_workflow(engine: Dagger, clock: ManualClock) -> None:
    listener_with_timeout_template(engine, "FAILURE")
    await start(engine, "timed", "t1", order_id="o1")
    await engine.wait_for("t1", waiting, timeout=5)
    clock.advance(4.9)
    await start(engine, "timed", "t2", order_id="o2")  # a later one, to show time is per instance
    await engine.wait_for("t2", waiting, timeout=5)
    clock.advance(0.1)

    done = await engine.wait_for("t1", timeout=5)
    assert done.status.code == "FAILURE"
    wait = node(engine, "t1", "_listener_task")
    assert wait.status == "FAILURE" and (wait.error or "").startswith("timed out after 5")
    assert "after_ran" not in done.runtime_parameters
    after = node(engine, "t1", "After_executor_task")
    assert after.status != "COMPLETED"
    # The late message finds nobody waiting for o1; t2 is still waiting and completes.
    second = engine.committed("t2")
    assert second is not None and second.status == "EXECUTING"
    await engine.topics["ready"].send(value='{"order_id": "o2"}')
    assert (await engine.wait_for("t2", timeout=5)).status.code == "COMPLETED"


async def test_listener_timeout_with_skipped_continues(engine: Dagger, clock: ManualClock) -> None:
    listener_with_timeout_template(engine, "SKIPPED")
    await start(engine, "timed", "t1", order_id="o1")
    await engine.wait_for("t1", waiting, timeout=5)
    clock.advance(5)
    done = await engine.wait_for("t1", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters["after_ran"] is True
    assert node(engine, "t1", "_listener_task").status == "SKIPPED"
    assert "received" not in done.runtime_parameters


async def test_executor_timeout_cancels_the_hung_job(engine: Dagger, clock: ManualClock) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    release = asyncio.Event()

    class Hangs(ExecutorTask[str, str]):
        async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
            started.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            runtime_parameters["finished"] = True

    for status in ("FAILURE", "SKIPPED"):
        started.clear()
        cancelled.clear()
        name = f"hangs-{status}"
        hang = executor(engine, Hangs, "Hang").set_timeout(5, status=status)
        add_template(engine, name, process(engine, "Hang", hang, executor(engine, Record, "After")))
        await start(engine, name, name)
        await asyncio.wait_for(started.wait(), 5)
        clock.advance(5)
        done = await engine.wait_for(name, timeout=5)
        await asyncio.wait_for(cancelled.wait(), 5)
        task = node(engine, name, "Hang_executor_task")
        assert task.status == status and (task.error or "").startswith("timed out after 5")
        assert "finished" not in done.runtime_parameters
        if status == "FAILURE":
            assert done.status.code == "FAILURE" and "after_ran" not in done.runtime_parameters
        else:
            assert done.status.code == "COMPLETED" and done.runtime_parameters["after_ran"] is True


# Continue on failure ------------------------------------------------------------------------


async def test_continue_on_failure_on_a_task(engine: Dagger) -> None:
    failing = executor(engine, AlwaysFails, "Fragile").set_continue_on_failure()
    add_template(engine, "lenient", process(engine, "Main", failing, executor(engine, Record, "After")))
    add_template(
        engine,
        "strict",
        process(engine, "Main", executor(engine, AlwaysFails, "Fragile"), executor(engine, Record, "After")),
    )

    await start(engine, "lenient", "l1")
    done = await engine.wait_for("l1", timeout=5)
    assert done.status.code == "COMPLETED"
    assert done.runtime_parameters == {"after_ran": True}
    assert node(engine, "l1", "Fragile_executor_task").status == "FAILURE"
    assert node(engine, "l1", "Fragile_executor_task").error == "RuntimeError: still broken"
    assert node(engine, "l1", "lenient.Main").status == "COMPLETED"

    await start(engine, "strict", "s1")
    done = await engine.wait_for("s1", timeout=5)
    assert done.status.code == "FAILURE" and done.runtime_parameters == {}
    assert node(engine, "s1", "strict.Main").status == "FAILURE"
    assert node(engine, "s1", "After_executor_task").status in ("NOT_STARTED", "SKIPPED")


async def test_continue_on_failure_on_a_process(engine: Dagger) -> None:
    first = process(engine, "First", executor(engine, AlwaysFails, "First")).set_continue_on_failure()
    add_template(engine, "lenient", first, process(engine, "Second", executor(engine, Record, "Second")))
    add_template(
        engine,
        "strict",
        process(engine, "First", executor(engine, AlwaysFails, "First")),
        process(engine, "Second", executor(engine, Record, "Second")),
    )

    await start(engine, "lenient", "l1")
    done = await engine.wait_for("l1", timeout=5)
    assert done.status.code == "COMPLETED" and done.runtime_parameters == {"after_ran": True}
    assert node(engine, "l1", "lenient.First").status == "FAILURE"
    assert node(engine, "l1", "lenient.Second").status == "COMPLETED"

    await start(engine, "strict", "s1")
    done = await engine.wait_for("s1", timeout=5)
    assert done.status.code == "FAILURE" and done.runtime_parameters == {}
    assert node(engine, "s1", "strict.Second").status in ("NOT_STARTED", "SKIPPED")


# Outbox across attempts -------------------------------------------------------------------


async def test_failed_attempt_publishes_nothing_and_the_successful_one_exactly_once(
    make_engine: Callable[..., Dagger], clock: ManualClock
) -> None:
    def build(engine: Dagger) -> None:
        class SendThenMaybeFail(KafkaCommandTask[str, str]):
            async def execute(
                self, runtime_parameters: dict[str, Any], workflow_instance: Any = None
            ) -> None:
                await engine.topics["kitchen"].send(key="o1", value=f"cook, attempt {self.attempts}")
                await engine.topics["audit"].send(value=f"audit, attempt {self.attempts}")
                if self.attempts < 2:
                    raise RuntimeError("broker hiccup")

        helper = DAGBuilderHelper(engine)
        command = helper.generic_command_task_builder(
            topic="kitchen", task_type=SendThenMaybeFail, process_name="Order"
        ).set_retry_policy(RetryPolicy(max_attempts=3, initial_interval=1))
        add_template(engine, "order", process(engine, "Order", command))

    engine = make_engine(name="outbox", clock=clock)
    build(engine)
    await engine.start()
    try:
        await start(engine, "order", "o1")
        await engine.wait_for("o1", attempts_failed(1, "_command_task"), timeout=5)
        assert engine.read_topic("kitchen", 0, 10) == []
        assert engine.read_topic("audit", 0, 10) == []
        clock.advance(1)
        assert (await engine.wait_for("o1", timeout=5)).status.code == "COMPLETED"
        assert [(m.key, m.value) for m in engine.read_topic("kitchen", 0, 10)] == [("o1", "cook, attempt 2")]
        assert [m.value for m in engine.read_topic("audit", 0, 10)] == ["audit, attempt 2"]
    finally:
        await engine.stop()

    again = make_engine(name="outbox", clock=clock)
    build(again)
    await again.start()  # a restart publishes nothing again
    try:
        assert [m.value for m in again.read_topic("kitchen", 0, 10)] == ["cook, attempt 2"]
        assert len(again.read_topic("audit", 0, 10)) == 1
    finally:
        await again.stop()


# Early messages and duplicates --------------------------------------------------------------


async def buffered_engine(
    make_engine: Callable[..., Dagger], clock: ManualClock, ttl: float | dict[str, float]
) -> Dagger:
    engine = make_engine(clock=clock, unmatched_message_ttl=ttl)
    add_template(engine, "order", process(engine, "Order", listener(engine, "ready", Ready, "Order")))
    await engine.start()
    return engine


async def send_early(engine: Dagger, order_id: str) -> str:
    """Send a message for ``order_id`` before anyone waits for it; return once the listener
    consumer has handled it (a later message completing a waiting instance proves that)."""
    early = json.dumps({"order_id": order_id, "early": True})
    await engine.topics["ready"].send(value=early)
    marker = f"marker-{order_id}"
    await start(engine, "order", marker, order_id=marker)
    await engine.wait_for(marker, waiting, timeout=5)
    await engine.topics["ready"].send(value=json.dumps({"order_id": marker}))
    assert (await engine.wait_for(marker, timeout=5)).status.code == "COMPLETED"
    return early


@pytest.mark.parametrize("ttl", [10, {"ready": 10}])
async def test_early_message_is_delivered_within_the_ttl(
    make_engine: Callable[..., Dagger], clock: ManualClock, ttl: float | dict[str, float]
) -> None:
    engine = await buffered_engine(make_engine, clock, ttl)
    try:
        await engine.template_dags["order"].create_instance("w1", order_id="o1")  # not started
        early = await send_early(engine, "o1")
        clock.advance(9)
        await engine.submit("w1")
        done = await engine.wait_for("w1", timeout=5)
        assert done.status.code == "COMPLETED"
        assert done.runtime_parameters["received"] == early
    finally:
        await engine.stop()


async def test_early_message_is_dropped_after_the_ttl(
    make_engine: Callable[..., Dagger], clock: ManualClock
) -> None:
    engine = await buffered_engine(make_engine, clock, 10)
    try:
        await engine.template_dags["order"].create_instance("w1", order_id="o1")
        await send_early(engine, "o1")
        clock.advance(10.5)
        await engine.submit("w1")
        await engine.wait_for("w1", waiting, timeout=5)
        # A buffered delivery would have been committed with the wait itself.
        wait = node(engine, "w1", "_listener_task")
        assert wait.status == "EXECUTING" and wait.job is None and wait.inbox == ()
        late = json.dumps({"order_id": "o1", "early": False})
        await engine.topics["ready"].send(value=late)
        assert (await engine.wait_for("w1", timeout=5)).runtime_parameters["received"] == late
    finally:
        await engine.stop()


@pytest.mark.parametrize("ttl", [0, {"other-topic": 10}])
async def test_without_a_ttl_early_messages_are_dropped(
    make_engine: Callable[..., Dagger], clock: ManualClock, ttl: float | dict[str, float]
) -> None:
    engine = await buffered_engine(make_engine, clock, ttl)
    try:
        await engine.template_dags["order"].create_instance("w1", order_id="o1")
        await send_early(engine, "o1")
        await engine.submit("w1")
        await engine.wait_for("w1", waiting, timeout=5)
        wait = node(engine, "w1", "_listener_task")
        assert wait.job is None and wait.inbox == ()
    finally:
        await engine.stop()


async def test_message_id_dedupe(engine: Dagger) -> None:
    add_template(engine, "dedupe", process(engine, "Order", listener(engine, "ready", Deduped, "Order")))
    await start(engine, "dedupe", "d1", order_id="o1")
    await engine.wait_for("d1", waiting, timeout=5)

    for msg_id, last in (("m1", False), ("m1", False), ("m2", False), ("m1", True), ("m3", True)):
        await engine.topics["ready"].send(
            value=json.dumps({"order_id": "o1", "msg_id": msg_id, "last": last})
        )

    done = await engine.wait_for("d1", timeout=5)
    assert done.status.code == "COMPLETED"
    # m1 ran once (both repeats ignored, even the one saying "last"); m3 completed it.
    assert done.runtime_parameters["seen"] == ["m1", "m2", "m3"]


async def test_dedupe_ids_are_forgotten_after_dedupe_ttl(
    make_engine: Callable[..., Dagger], clock: ManualClock
) -> None:
    """The dedupe table does not grow forever: ids older than dedupe_ttl are purged by the
    engine's periodic housekeeping, after which the same id counts as new."""
    engine = make_engine(clock=clock, dedupe_ttl=120.0)
    add_template(engine, "dedupe", process(engine, "Order", listener(engine, "ready", Deduped, "Order")))
    await engine.start()
    try:
        await start(engine, "dedupe", "d1", order_id="o1")
        await engine.wait_for("d1", waiting, timeout=5)
        await engine.topics["ready"].send(value=json.dumps({"order_id": "o1", "msg_id": "m1", "last": False}))
        await engine.wait_for("d1", lambda i: "seen" in i.runtime_parameters, timeout=5)
        store = engine.runtime.store
        assert store.has_seen("ready", "m1")

        clock.advance(181.0)  # past the TTL and past a housekeeping tick

        async def purged() -> None:
            while store.has_seen("ready", "m1"):
                await asyncio.sleep(0)  # yield to the housekeeping task; the condition ends it

        await asyncio.wait_for(purged(), 5)
        await engine.topics["ready"].send(value=json.dumps({"order_id": "o1", "msg_id": "m1", "last": True}))
        done = await engine.wait_for("d1", timeout=5)
        assert done.status.code == "COMPLETED"
        assert done.runtime_parameters["seen"] == ["m1", "m1"]
    finally:
        await engine.stop()
