"""Inventory §10.32-36: parallel groups (task and process level, JOIN_ALL and ATLEAST_ONE),
dynamic processes and decisions with several successors."""

from __future__ import annotations

from typing import Any

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    DecisionTask,
    ExecutorTask,
    TaskOperator,
)
from daggerflow.templates import ITemplateDAG

from .support_29_56 import JsonKeyListener, node, nodes_named, state


class Step(ExecutorTask[str, str]):
    """Appends its task name to ``runtime_parameters["order"]``: the run order is visible."""

    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters.setdefault("order", []).append(self.task_name.rsplit(".", 1)[-1])


class ListenA(JsonKeyListener):
    correlatable_key = "a_id"


class ListenB(JsonKeyListener):
    correlatable_key = "b_id"


class Chooser(DecisionTask[str, str]):
    """Chooses by short name (``choice``), by position among its successors' ids
    (``choice_index``, Dagger style: an id from ``self.next_dags``) or nothing."""

    async def evaluate(self, **runtime_parameters: Any) -> Any:
        if "choice_index" in runtime_parameters:
            return self.next_dags[runtime_parameters["choice_index"]]
        return runtime_parameters.get("choice")


def _register(engine: Dagger, name: str, processes: list[Any]) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    template = helper.generic_template(
        template_name=name, root_process=helper.build_and_link_processes(processes)
    )
    engine.add_template(name, template)
    return template


def _step_process(helper: DAGBuilderHelper, name: str) -> Any:
    return helper.generic_process_builder(
        process_name=name,
        root_task=helper.build_and_link_tasks(
            [helper.generic_executor_task_builder(task_type=Step, name=name)]
        ),
    )


def _listener(helper: DAGBuilderHelper, cls: type, process_name: str) -> Any:
    topic = "route_a" if cls is ListenA else "route_b"
    return helper.generic_listener_task_builder(topic=topic, task_type=cls, process_name=process_name)


def _listener_process(helper: DAGBuilderHelper, cls: type, name: str) -> Any:
    return helper.generic_process_builder(
        process_name=name, root_task=helper.build_and_link_tasks([_listener(helper, cls, name)])
    )


# §10.32-33: task level ----------------------------------------------------------------------


def _task_level(engine: Dagger, operator: TaskOperator, with_executor: bool = True) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    children: list[Any] = [_listener(helper, ListenA, "A"), _listener(helper, ListenB, "B")]
    if with_executor:
        children.append(helper.generic_executor_task_builder(task_type=Step, name="C"))
    fanout = helper.generic_parallel_task_builder(name="fanout", tasks=children, operator=operator)
    process = helper.generic_process_builder(
        process_name="P",
        root_task=helper.build_and_link_tasks(
            [fanout, helper.generic_executor_task_builder(task_type=Step, name="after")]
        ),
    )
    return _register(
        engine, f"TaskPar{operator.value}{with_executor}", [process, _step_process(helper, "LAST")]
    )


async def test_task_level_join_all_waits_for_every_child(engine: Dagger) -> None:
    """§10.32/§10.33: every child starts when the group is reached; the executor child runs
    although the listeners before it wait; the listeners complete in any order; JOIN_ALL
    completes only after the last child."""
    template = _task_level(engine, TaskOperator.JOIN_ALL)
    await template.create_instance("j", submit_task=True, a_id="A1", b_id="B1")
    inst = await engine.wait_for("j", lambda i: node(i, "C_executor_task").status == "COMPLETED", 5)
    inst = state(engine, "j")
    assert node(inst, "A_listener_task").status == "EXECUTING"
    assert node(inst, "B_listener_task").status == "EXECUTING"
    assert node(inst, "fanout").status == "EXECUTING"
    assert node(inst, "after_executor_task").status == "NOT_STARTED"

    await engine.topics["route_b"].send(value={"b_id": "B1"})  # the second child first
    await engine.wait_for("j", lambda i: node(i, "B_listener_task").status == "COMPLETED", 5)
    inst = state(engine, "j")
    assert node(inst, "A_listener_task").status == "EXECUTING"
    assert node(inst, "fanout").status == "EXECUTING"
    assert node(inst, "after_executor_task").status == "NOT_STARTED"

    await engine.topics["route_a"].send(value={"a_id": "A1"})
    assert (await engine.wait_for("j", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "j")
    assert node(inst, "fanout").status == "COMPLETED"
    assert inst.runtime_parameters["order"] == [
        "C_executor_task",
        "after_executor_task",
        "LAST_executor_task",
    ]
    assert inst.runtime_parameters["messages"] == [{"b_id": "B1"}, {"a_id": "A1"}]


async def test_task_level_atleast_one_completes_on_first_child(engine: Dagger) -> None:
    """§10.32: an ATLEAST_ONE group completes after its first terminal child (here the
    executor, while both listeners still wait); the walk moves on; the waiting siblings
    are ended so no later message reaches them."""
    template = _task_level(engine, TaskOperator.ATLEAST_ONE)
    await template.create_instance("a", submit_task=True, a_id="A2", b_id="B2")
    assert (await engine.wait_for("a", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "a")
    assert node(inst, "fanout").status == "COMPLETED"
    assert node(inst, "C_executor_task").status == "COMPLETED"
    assert node(inst, "A_listener_task").status == "STOPPED"
    assert node(inst, "B_listener_task").status == "STOPPED"
    assert inst.runtime_parameters["order"] == [
        "C_executor_task",
        "after_executor_task",
        "LAST_executor_task",
    ]
    assert inst.correlations == {}


async def test_task_level_atleast_one_of_listeners(engine: Dagger) -> None:
    """§10.32/§10.33: with only listeners, the first message to any child completes the
    ATLEAST_ONE group, whichever child it is."""
    template = _task_level(engine, TaskOperator.ATLEAST_ONE, with_executor=False)
    await template.create_instance("l", submit_task=True, a_id="A3", b_id="B3")
    await engine.wait_for("l", lambda i: node(i, "B_listener_task").status == "EXECUTING", 5)
    await engine.topics["route_b"].send(value={"b_id": "B3"})
    assert (await engine.wait_for("l", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "l")
    assert node(inst, "B_listener_task").status == "COMPLETED"
    assert node(inst, "A_listener_task").status == "STOPPED"
    assert inst.runtime_parameters["order"] == ["after_executor_task", "LAST_executor_task"]


# §10.32-34: process level --------------------------------------------------------------------


def _process_level(engine: Dagger, operator: TaskOperator) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    parallel = helper.generic_parallel_process_builder(
        name="par",
        processes=[
            _listener_process(helper, ListenA, "PA"),
            _listener_process(helper, ListenB, "PB"),
            _step_process(helper, "PC"),
        ],
        operator=operator,
    )
    return _register(
        engine,
        f"ProcPar{operator.value}",
        [_step_process(helper, "FIRST"), parallel, _step_process(helper, "LAST")],
    )


async def test_process_level_join_all(engine: Dagger) -> None:
    """§10.32/§10.33: a JOIN_ALL parallel process starts every child process; the
    executor process finishes while the listener processes wait; the group completes only
    when the last child process does, then the next process runs."""
    template = _process_level(engine, TaskOperator.JOIN_ALL)
    await template.create_instance("pj", submit_task=True, a_id="PA1", b_id="PB1")
    await engine.wait_for("pj", lambda i: node(i, "PC").status == "COMPLETED", 5)
    inst = state(engine, "pj")
    assert node(inst, "par").status == "EXECUTING"
    assert node(inst, "par").operator == "JOIN_ALL"
    assert node(inst, "PA").status == "EXECUTING" and node(inst, "PB").status == "EXECUTING"
    assert node(inst, "LAST").status == "NOT_STARTED"

    await engine.topics["route_a"].send(value={"a_id": "PA1"})
    await engine.wait_for("pj", lambda i: node(i, "PA").status == "COMPLETED", 5)
    assert node(state(engine, "pj"), "par").status == "EXECUTING"

    await engine.topics["route_b"].send(value={"b_id": "PB1"})
    assert (await engine.wait_for("pj", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "pj")
    assert node(inst, "par").status == "COMPLETED"
    assert inst.runtime_parameters["order"] == [
        "FIRST_executor_task",
        "PC_executor_task",
        "LAST_executor_task",
    ]


async def test_process_level_operator_is_honoured(engine: Dagger) -> None:
    """§10.34 (fix): ATLEAST_ONE set on a parallel *process* is honoured (Dagger always
    used JOIN_ALL): the executor child process completes the group and the workflow goes on
    without any listener message."""
    template = _process_level(engine, TaskOperator.ATLEAST_ONE)
    await template.create_instance("pa", submit_task=True, a_id="PA2", b_id="PB2")
    assert (await engine.wait_for("pa", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "pa")
    assert node(inst, "par").operator == "ATLEAST_ONE"
    assert node(inst, "par").status == "COMPLETED"
    assert node(inst, "PC").status == "COMPLETED"
    assert node(inst, "PA").status != "COMPLETED" and node(inst, "PB").status != "COMPLETED"
    assert node(inst, "PA_listener_task").status == "STOPPED"
    assert inst.runtime_parameters["order"] == [
        "FIRST_executor_task",
        "PC_executor_task",
        "LAST_executor_task",
    ]
    assert "messages" not in inst.runtime_parameters


# §10.35: dynamic processes ------------------------------------------------------------------


def _dynamic(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    return _register(
        engine,
        "DynamicFlow",
        [
            _step_process(helper, "FIRST"),
            helper.generic_dynamic_process_builder(name="DYN"),
            _step_process(helper, "LAST"),
        ],
    )


def _process_names(engine: Dagger, iid: str) -> list[str]:
    inst = state(engine, iid)
    return sorted(n.name for n in inst.nodes.values() if n.kind == "process")


async def test_dynamic_builders_set_on_template(engine: Dagger) -> None:
    """§10.35: processes set with ``set_dynamic_builders_for_process_template`` replace the
    placeholder, run in order, followed by the static next process; (fix) creating many
    instances, or setting the same builders again, never duplicates nodes."""
    template = _dynamic(engine)
    helper = DAGBuilderHelper(engine)
    builders = [_step_process(helper, "D1"), _step_process(helper, "D2")]
    template.set_dynamic_builders_for_process_template("DYN", builders)

    sizes = []
    for i in range(3):
        await template.create_instance(f"d{i}", submit_task=True)
        inst = await engine.wait_for(f"d{i}", timeout=5)
        assert inst.status.code == "COMPLETED"
        committed = state(engine, f"d{i}")
        assert committed.runtime_parameters["order"] == [
            "FIRST_executor_task",
            "D1_executor_task",
            "D2_executor_task",
            "LAST_executor_task",
        ]
        assert _process_names(engine, f"d{i}") == [
            "DynamicFlow.D1",
            "DynamicFlow.D2",
            "DynamicFlow.FIRST",
            "DynamicFlow.LAST",
        ]
        assert nodes_named(committed, "DYN") == []
        sizes.append(len(committed.nodes))
        template.set_dynamic_builders_for_process_template("DYN", builders)  # same builders again
    assert sizes == [9, 9, 9]  # root + 4 processes + 4 tasks, every time


async def test_dynamic_processes_per_instance(engine: Dagger) -> None:
    """§10.35: ``create_instance(dynamic_processes={name: [...]})`` chooses the expansion
    per instance; instances do not affect each other or the template's default."""
    template = _dynamic(engine)
    helper = DAGBuilderHelper(engine)
    d1, d2, d3 = (_step_process(helper, n) for n in ("D1", "D2", "D3"))
    template.set_dynamic_builders_for_process_template("DYN", [d1])

    await template.create_instance("x", submit_task=True, dynamic_processes={"DYN": [d3, d2]})
    await template.create_instance("y", submit_task=True, dynamic_processes={"DYN": [d2]})
    await template.create_instance("z", submit_task=True)  # the template's default
    for iid in ("x", "y", "z"):
        assert (await engine.wait_for(iid, timeout=5)).status.code == "COMPLETED"
    order = {iid: state(engine, iid).runtime_parameters["order"] for iid in ("x", "y", "z")}
    assert order["x"] == ["FIRST_executor_task", "D3_executor_task", "D2_executor_task", "LAST_executor_task"]
    assert order["y"] == ["FIRST_executor_task", "D2_executor_task", "LAST_executor_task"]
    assert order["z"] == ["FIRST_executor_task", "D1_executor_task", "LAST_executor_task"]
    assert len(state(engine, "y").nodes) == 7 and len(state(engine, "z").nodes) == 7

    # A template without any dynamic configuration runs the static next process only.
    bare = _register(
        engine,
        "BareDynamic",
        [
            _step_process(helper, "FIRST"),
            helper.generic_dynamic_process_builder(name="DYN"),
            _step_process(helper, "LAST"),
        ],
    )
    await bare.create_instance("b", submit_task=True)
    assert (await engine.wait_for("b", timeout=5)).status.code == "COMPLETED"
    assert state(engine, "b").runtime_parameters["order"] == ["FIRST_executor_task", "LAST_executor_task"]


# §10.36: decisions ---------------------------------------------------------------------------


def _decision(engine: Dagger) -> ITemplateDAG:
    helper = DAGBuilderHelper(engine)
    branch_a = helper.build_and_link_tasks(
        [
            helper.generic_executor_task_builder(task_type=Step, name="a1"),
            helper.generic_executor_task_builder(task_type=Step, name="a2"),
        ]
    )
    branch_b = helper.build_and_link_tasks([helper.generic_executor_task_builder(task_type=Step, name="b1")])
    branch_c = helper.build_and_link_tasks([helper.generic_executor_task_builder(task_type=Step, name="c1")])
    decide = helper.generic_decision_task_builder(task_type=Chooser, name="decide")
    decide.set_next(branch_a).set_next(branch_b).set_next(branch_c)
    process = helper.generic_process_builder(process_name="P", root_task=decide.build())
    return _register(engine, "DecisionFlow", [process, _step_process(helper, "LAST")])


async def test_decision_runs_only_the_chosen_successor(engine: Dagger) -> None:
    """§10.36 (fix): with three successors, the one ``evaluate`` returns (by name) runs, the
    other branches (with all their tasks) are SKIPPED, and the workflow continues."""
    template = _decision(engine)
    await template.create_instance("n", submit_task=True, choice="b1_executor_task")
    assert (await engine.wait_for("n", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "n")
    assert node(inst, "decide").status == "COMPLETED"
    assert node(inst, "b1_executor_task").status == "COMPLETED"
    for skipped in ("a1_executor_task", "a2_executor_task", "c1_executor_task"):
        assert node(inst, skipped).status == "SKIPPED", skipped
    assert node(inst, "P").status == "COMPLETED"
    assert inst.runtime_parameters["order"] == ["b1_executor_task", "LAST_executor_task"]


async def test_decision_by_successor_id_runs_whole_branch(engine: Dagger) -> None:
    """§10.36: ``evaluate`` returning a successor id (Dagger's contract) runs that branch's
    whole chain; the others are SKIPPED."""
    template = _decision(engine)
    await template.create_instance("i", submit_task=True, choice_index=0)
    assert (await engine.wait_for("i", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "i")
    assert inst.runtime_parameters["order"] == ["a1_executor_task", "a2_executor_task", "LAST_executor_task"]
    assert node(inst, "b1_executor_task").status == "SKIPPED"
    assert node(inst, "c1_executor_task").status == "SKIPPED"


async def test_decision_choosing_nothing_does_not_stall(engine: Dagger) -> None:
    """§10.36 (fix): when every successor is skipped the process still completes and the
    workflow continues (Dagger stalled here)."""
    template = _decision(engine)
    await template.create_instance("none", submit_task=True)
    assert (await engine.wait_for("none", timeout=5)).status.code == "COMPLETED"
    inst = state(engine, "none")
    for skipped in ("a1_executor_task", "a2_executor_task", "b1_executor_task", "c1_executor_task"):
        assert node(inst, skipped).status == "SKIPPED", skipped
    assert node(inst, "P").status == "COMPLETED"
    assert inst.runtime_parameters["order"] == ["LAST_executor_task"]
