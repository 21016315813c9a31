"""Statuses, node kinds and operators, with Dagger's names and values."""

from __future__ import annotations

import enum

import msgspec


class TaskStatusEnum(enum.StrEnum):
    NOT_STARTED = "NOT_STARTED"
    SUBMITTED = "SUBMITTED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    STOPPED = "STOPPED"


TERMINAL_STATUSES = frozenset(
    {
        TaskStatusEnum.COMPLETED.value,
        TaskStatusEnum.FAILURE.value,
        TaskStatusEnum.SKIPPED.value,
        TaskStatusEnum.STOPPED.value,
    }
)


class TaskStatus(msgspec.Struct, frozen=True):
    """Dagger reads statuses as ``task.status.code``; code and value are the same string."""

    code: str
    value: str

    @classmethod
    def of(cls, code: str) -> TaskStatus:
        return _STATUS_OBJECTS[code]


_STATUS_OBJECTS = {s.value: TaskStatus(s.value, s.value) for s in TaskStatusEnum}


class TaskType(enum.StrEnum):
    """Dagger's structural node types (exposed in snapshots as ``task_type``)."""

    ROOT = "ROOT"
    LEAF = "LEAF"
    SUB_DAG = "SUB_DAG"
    PARALLEL_COMPOSITE = "PARALLEL_COMPOSITE"


class TaskOperator(enum.StrEnum):
    ATLEAST_ONE = "ATLEAST_ONE"
    JOIN_ALL = "JOIN_ALL"


class Kind(enum.StrEnum):
    """What a node does when the walk reaches it. Stored in instances, so values are stable."""

    ROOT = "root"
    PROCESS = "process"
    PARALLEL = "parallel"
    EXECUTOR = "executor"
    COMMAND = "command"
    LISTENER = "listener"
    SENSOR = "sensor"
    TRIGGER = "trigger"
    INTERVAL = "interval"
    DECISION = "decision"
    MONITOR = "monitor"


JOB_KINDS = frozenset({Kind.EXECUTOR, Kind.COMMAND, Kind.TRIGGER, Kind.MONITOR})
WAITING_KINDS = frozenset({Kind.LISTENER, Kind.SENSOR})

TASK_TYPE_OF_KIND = {
    Kind.ROOT: TaskType.ROOT,
    Kind.PROCESS: TaskType.SUB_DAG,
    Kind.PARALLEL: TaskType.PARALLEL_COMPOSITE,
}


_TASK_TYPE_BY_KIND_VALUE = {k.value: TASK_TYPE_OF_KIND.get(k, TaskType.LEAF).value for k in Kind}


def task_type_of(kind: str) -> str:
    return _TASK_TYPE_BY_KIND_VALUE[kind]


COMPLETE_BY_KEY = "complete_by_time"
