"""Events addressed to one workflow instance. They are what the log carries."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.instance import Instance
from ..model.schedule import ScheduleSpec


class Create(msgspec.Struct, gc=False, tag="create", frozen=True):
    instance: Instance
    submit: bool = False
    # Who created it, when not the caller of create_instance: "schedule:NAME" for a tick.
    actor: str | None = None


class Submit(msgspec.Struct, gc=False, tag="submit", frozen=True):
    # Who asked ("api", "cli", a token scope, None from the Python API), for the history.
    actor: str | None = None


class Stop(msgspec.Struct, gc=False, tag="stop", frozen=True):
    actor: str | None = None


class Deliver(msgspec.Struct, gc=False, tag="deliver", frozen=True):
    """A listener message routed to one waiting node by the correlation index."""

    node: str
    payload: Any
    topic: str = ""
    # The matching message's offset (and partition, on Kafka), for the history; -1: none.
    offset: int = -1
    partition: int = -1


class JobDone(msgspec.Struct, gc=False, tag="done", frozen=True):
    """User code returned. ``params`` and ``removed`` are its changes to runtime parameters."""

    node: str
    seq: int
    job: str
    result: Any = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    removed: list[str] = msgspec.field(default_factory=list)
    status: str | None = None


class JobFailed(msgspec.Struct, gc=False, tag="failed", frozen=True):
    node: str
    seq: int
    job: str
    error: str
    traceback: str = ""
    retryable: bool = True
    payload: Any = None


class TimerFired(msgspec.Struct, gc=False, tag="timer", frozen=True):
    key: str


class Retry(msgspec.Struct, gc=False, tag="retry", frozen=True):
    """Run a FAILED workflow again from its failed nodes, ``runtime_parameters`` merged first."""

    runtime_parameters: dict[str, Any] | None = None
    actor: str | None = None


class Skip(msgspec.Struct, gc=False, tag="skip", frozen=True):
    """End a waiting task as SKIPPED by hand; the workflow goes on from it."""

    node: str
    actor: str | None = None


class Complete(msgspec.Struct, gc=False, tag="complete", frozen=True):
    """End a waiting listener, sensor or trigger as COMPLETED by hand."""

    node: str
    actor: str | None = None


class PatchParameters(msgspec.Struct, gc=False, tag="patch", frozen=True):
    """Merge ``changes`` into the runtime parameters of a workflow that has not ended."""

    changes: dict[str, Any]
    actor: str | None = None


class Migrate(msgspec.Struct, gc=False, tag="migrate", frozen=True):
    """Move a running instance to another version of its template: ``target`` is that
    version's node tree for it (built by the caller from the registered template, every node
    NOT_STARTED); the state is carried over by node name, or the name ``node_map`` gives."""

    target: Instance
    from_version: str | None = None
    node_map: dict[str, str] = msgspec.field(default_factory=dict)
    actor: str | None = None


Repair = Retry | Skip | Complete | PatchParameters
"""The operators' actions (machine/repair.py applies them)."""

class PutSchedule(msgspec.Struct, gc=False, tag="schedule_put", frozen=True):
    """Create a schedule, or update it (by name; an identical definition changes nothing).
    ``paused`` None keeps the schedule's paused flag (a definition re-applied from code at
    start does not resume what an operator paused)."""

    spec: ScheduleSpec
    paused: bool | None = None
    actor: str | None = None


class DeleteSchedule(msgspec.Struct, gc=False, tag="schedule_delete", frozen=True):
    actor: str | None = None


class PauseSchedule(msgspec.Struct, gc=False, tag="schedule_pause", frozen=True):
    actor: str | None = None


class ResumeSchedule(msgspec.Struct, gc=False, tag="schedule_resume", frozen=True):
    actor: str | None = None


ScheduleEvent = PutSchedule | DeleteSchedule | PauseSchedule | ResumeSchedule
"""What is done to a schedule (``machine.schedules`` applies them, and its ``TimerFired``)."""

Event = (
    Create | Submit | Stop | Deliver | JobDone | JobFailed | TimerFired | Retry | Skip | Complete | PatchParameters | Migrate
    | PutSchedule | DeleteSchedule | PauseSchedule | ResumeSchedule
)
