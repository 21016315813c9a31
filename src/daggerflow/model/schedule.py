"""Schedules as plain data: a definition (``ScheduleSpec``) and its durable state (``Schedule``).

A schedule creates and starts an instance of a template at every tick of a cron expression
(evaluated in a time zone) or of a fixed interval. It is addressed in the pipeline by its
key ``schedule/NAME`` (``schedule_key``): a string no instance id can be (ids hold no
``/``), so on Kafka it is placed on a partition like an instance id, and its timer is
keyed (``schedule/NAME``, ``tick``) like an instance's. The instance created for a tick has
the id ``NAME-YYYYmmddTHHMMSSZ`` (the tick in UTC, ``tick_instance_id``): a tick fired
twice (a crash, a failover) creates the same id, which is idempotent.

What ticks are due and when is ``model.ticks``; how events change a schedule is
``machine.schedules``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errors import InvalidSchedule
from .ids import id_problem

#: The key a schedule is addressed by in the pipeline (and placed on a Kafka partition by).
SCHEDULE_PREFIX = "schedule/"
#: The schedule's timer key (its timer is keyed (schedule key, TIMER_KEY)).
TIMER_KEY = "tick"
#: A name's bound: the instance ids ``NAME-<17 characters>`` stay within an id's 255 bytes.
MAX_NAME_BYTES = 200
CATCH_UP_MODES = ("skip", "one", "all")


class ScheduleSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What a schedule is: which template, when (``cron`` xor ``every`` seconds), in which
    time zone, with which runtime parameters, and what to do with ticks missed while no
    worker ran it or it was paused (``catch_up``)."""

    name: str
    template: str
    cron: str | None = None
    every: int | None = None
    timezone: str = "UTC"
    catch_up: str = "skip"
    runtime_parameters: dict[str, Any] = msgspec.field(default_factory=dict)

    def timing(self) -> tuple[str | None, int | None, str]:
        """What decides the ticks: a change of it moves the next tick, other changes do not."""
        return self.cron, self.every, self.timezone


class Schedule(msgspec.Struct, kw_only=True):
    """A schedule's durable state: its definition, whether it is paused, the first tick not
    fired yet (``next_due``), the last tick fired and the instance it created, and counts."""

    spec: ScheduleSpec
    paused: bool = False
    next_due: float | None = None
    last_fired: float | None = None
    last_instance: str | None = None
    fired: int = 0  # instances created
    missed: int = 0  # ticks passed over by the catch-up mode (counted up to ticks.COUNT_LIMIT)
    last_error: str | None = None
    created: float = 0.0
    updated: float = 0.0
    updated_by: str | None = None  # the actor of the last put, pause or resume ("code": at start)

    @property
    def name(self) -> str:
        return self.spec.name


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Schedule)


def encode_schedule(schedule: Schedule) -> bytes:
    return _encoder.encode(schedule)


def decode_schedule(data: bytes) -> Schedule:
    return _decoder.decode(data)


def schedule_key(name: str) -> str:
    return SCHEDULE_PREFIX + name


def is_schedule_key(key: str) -> bool:
    return key.startswith(SCHEDULE_PREFIX)


def name_of_key(key: str) -> str:
    return key[len(SCHEDULE_PREFIX) :]


def tick_instance_id(name: str, tick: float) -> str:
    """The id of the instance a tick creates: the same for the same (schedule, tick)."""
    return f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(int(tick)))}"


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a schedule, or None: the instance id rule (it is the start
    of its instances' ids), at most ``MAX_NAME_BYTES`` bytes."""
    if not isinstance(name, str):
        return f"a schedule name is a string, got a {type(name).__name__}"
    problem = id_problem(name)
    if problem is not None:
        return f"schedule name {name[:80]!r} is refused: {problem}"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"schedule name {name[:80]!r}... is over {MAX_NAME_BYTES} bytes"
    return None


def check_name(name: Any) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidSchedule(problem)
    return str(name)
