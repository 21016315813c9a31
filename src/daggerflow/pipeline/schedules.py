"""A batch's part for schedules: their events applied, the instances of their ticks created.

A schedule is addressed by its key (``model.schedule.schedule_key``) like an instance by its
id, so its events reach the processor of its partition (single writer) the way instance
events do, its timer fires there as ``TimerFired`` on (key, ``tick``), and the batch that
applies a tick commits, together: the schedule's new state (next tick, last fired tick,
counts), its timer, and a ``Create`` (submitted) for each tick it fires, applied in the same
batch when this partition owns the new instance, else forwarded to its owner in the same
commit (the Kafka transaction). The instance id is derived from (schedule, tick), and a
``Create`` of an existing id changes nothing: a tick applied twice creates one instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from ..errors import UnknownSchedule
from ..machine.events import (
    Create,
    DeleteSchedule,
    Event,
    PauseSchedule,
    PutSchedule,
    ResumeSchedule,
    TimerFired,
)
from ..machine.schedules import apply_schedule
from ..model.instance import Instance
from ..model.schedule import TIMER_KEY, Schedule, name_of_key, tick_instance_id
from ..store.base import Store, WriteBatch
from .items import ForwardEvent

log = logging.getLogger(__name__)


class _Proc(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Any: ...


class _After(Protocol):
    results: list[tuple[asyncio.Future[Any], Any]]
    errors: list[tuple[asyncio.Future[Any], BaseException]]
    timers_set: list[tuple[str, str, float]]
    timers_cancel: list[tuple[str, str]]


class ScheduleHost(Protocol):
    """What of its batch (``batch.BatchApplier``) a schedule event uses."""

    batch: WriteBatch
    now: float

    @property
    def proc(self) -> _Proc: ...

    @property
    def after(self) -> _After: ...

    def owns_instance(self, iid: str) -> bool: ...

    def apply_event(self, iid: str, event: Event, future: Any = None, box: Any = None) -> bool: ...

#: Builds the instance a tick creates: (template name, instance id, runtime parameters, now)
#: -> the new instance; raises (``TemplateDoesNotExist``, ...) when it cannot.
Instantiate = Callable[[str, str, dict[str, Any], float], Instance]

_EVENTS = (PutSchedule, DeleteSchedule, PauseSchedule, ResumeSchedule, TimerFired)


def schedule_event(applier: ScheduleHost, key: str, event: Event, future: asyncio.Future[Any] | None) -> None:
    """Apply ``event`` to the schedule addressed by ``key``; the caller's future gets the
    schedule afterwards (None once deleted) or the refusal."""
    if not isinstance(event, _EVENTS):
        if future is not None:
            applier.after.errors.append((future, UnknownSchedule(f"{key!r} names a schedule, not an instance")))
        return
    name = name_of_key(key)
    batch = applier.batch
    current = batch.schedules[name] if name in batch.schedules else applier.proc.store.get_schedule(name)
    tr = apply_schedule(current, event, applier.now)
    if tr.error is not None:
        if future is not None:
            applier.after.errors.append((future, UnknownSchedule(f"no schedule {name!r}")))
        return
    schedule = tr.schedule
    if tr.fire and schedule is not None:
        schedule = _fire(applier, schedule, tr.fire)
    if tr.changed:
        batch.schedules[name] = schedule
    if tr.cancel_timer:
        batch.cancel_timer(key, TIMER_KEY)
        applier.after.timers_cancel.append((key, TIMER_KEY))
    if tr.timer is not None:
        batch.set_timer(key, TIMER_KEY, tr.timer)
        applier.after.timers_set.append((key, TIMER_KEY, tr.timer))
    if future is not None:
        applier.after.results.append((future, schedule))


def _fire(applier: ScheduleHost, schedule: Schedule, ticks: list[float]) -> Schedule:
    spec = schedule.spec
    instantiate: Instantiate | None = applier.proc.settings.instantiate
    created = 0
    error = None
    last = schedule.last_instance
    actor = f"schedule:{spec.name}"  # the instance's history says which schedule made it
    for tick in ticks:
        iid = tick_instance_id(spec.name, tick)
        try:
            if instantiate is None:
                raise RuntimeError("this processor cannot create instances")
            params = _copy_params(spec.runtime_parameters)
            instance = instantiate(spec.template, iid, params, applier.now)
        except Exception as exc:  # the tick is passed over, with the reason kept on the schedule
            error = f"tick {iid}: {type(exc).__name__}: {exc}"
            log.warning("schedule %r could not create %s: %s", spec.name, iid, exc)
            continue
        if applier.owns_instance(iid):
            applier.apply_event(iid, Create(instance, True, actor))
        else:
            applier.batch.forwards.append(ForwardEvent(iid, Create(instance, True, actor)))
        created += 1
        last = iid
    if error is None and created:
        error = None  # a tick that created its instance clears an earlier tick's error
    elif error is None:
        error = schedule.last_error
    return msgspec.structs.replace(schedule, fired=schedule.fired + created, last_instance=last, last_error=error)


def _copy_params(params: dict[str, Any]) -> dict[str, Any]:
    """The instance's own copy of the schedule's parameters (JSON values, checked at definition)."""
    copied: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(params))
    return copied
