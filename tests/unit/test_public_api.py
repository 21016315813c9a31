"""The public surface: Dagger's README names import from the top-level package."""

from __future__ import annotations

import daggerflow

README_NAMES = [
    # Classes and helpers the seed README uses, including its type annotations.
    "Dagger",
    "DAGBuilderHelper",
    "KafkaCommandTask",
    "KafkaListenerTask",
    "ExecutorTask",
    "ITemplateDAGInstance",
    "ITemplateDAG",
    "IProcessTemplateDAGBuilder",
    "ITask",
    "TaskLookupKey",
    "KT",
    "VT",
    "TaskStatusEnum",
]


def test_readme_names_are_exported() -> None:
    missing = [name for name in README_NAMES if not hasattr(daggerflow, name)]
    assert missing == []
    assert set(README_NAMES) <= set(daggerflow.__all__)


def test_all_is_complete_and_importable() -> None:
    for name in daggerflow.__all__:
        assert hasattr(daggerflow, name), name
    public = {n for n in vars(daggerflow) if not n.startswith("_") and n[0].isupper()}
    assert public - set(daggerflow.__all__) == set()


def test_generic_task_classes_are_subscriptable() -> None:
    class Order(daggerflow.KafkaCommandTask[str, str]):
        pass

    assert issubclass(Order, daggerflow.ExecutorTask)
    assert daggerflow.TaskStatusEnum.COMPLETED.value == "COMPLETED"
