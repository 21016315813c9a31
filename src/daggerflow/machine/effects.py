"""What a transition asks the runtime to do once the new state is committed."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.instance import Correlation


class RunJob(msgspec.Struct, gc=False, frozen=True):
    """Call user code: ``job`` is execute, on_message, evaluate, interval_execute or stop."""

    instance: str
    node: str
    job: str
    seq: int
    payload: Any = None


class CancelJob(msgspec.Struct, gc=False, frozen=True):
    instance: str
    node: str


class SetTimer(msgspec.Struct, gc=False, frozen=True):
    instance: str
    key: str
    due: float


class CancelTimer(msgspec.Struct, gc=False, frozen=True):
    instance: str
    key: str


class IndexPut(msgspec.Struct, gc=False, frozen=True):
    instance: str
    node: str
    at: Correlation
    # The node's listener is ``match_only_one``: the index entry carries it, since on Kafka
    # the index owner may not hold the instance.
    only_one: bool = False


class IndexDel(msgspec.Struct, gc=False, frozen=True):
    instance: str
    node: str
    at: Correlation


class InstanceDeleted(msgspec.Struct, gc=False, frozen=True):
    instance: str


Effect = RunJob | CancelJob | SetTimer | CancelTimer | IndexPut | IndexDel | InstanceDeleted
