"""Events addressed to one workflow instance. They are what the log carries."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.instance import Instance


class Create(msgspec.Struct, gc=False, tag="create", frozen=True):
    instance: Instance
    submit: bool = False


class Submit(msgspec.Struct, gc=False, tag="submit", frozen=True):
    pass


class Stop(msgspec.Struct, gc=False, tag="stop", frozen=True):
    pass


class Deliver(msgspec.Struct, gc=False, tag="deliver", frozen=True):
    """A listener message routed to one waiting node by the correlation index."""

    node: str
    payload: Any
    topic: str = ""


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


Event = Create | Submit | Stop | Deliver | JobDone | JobFailed | TimerFired
