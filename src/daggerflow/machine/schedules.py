"""How events change a schedule: ``apply_schedule(schedule, event, now) -> ScheduleTransition``.

Pure, like the rest of the machine. The transition says what the schedule is afterwards
(None: deleted), which ticks to create instances for (``fire``), and its timer: set at
``timer`` or cancelled. The pipeline (``pipeline.schedules``) commits all of it in one batch:
the schedule's new state (its next tick, its last fired tick) with the instances it creates.

- ``PutSchedule``: a new schedule's first tick is the first after now; an update keeps the
  next tick unless the timing (cron, every, timezone) changed, and then it is the first
  after now of the new timing (a changed definition does not catch up). ``paused`` given:
  pause or resume as below.
- ``PauseSchedule``: no tick fires while paused; its timer is cancelled, ``next_due`` kept.
- ``ResumeSchedule``: if ticks came due meanwhile, the catch-up mode applies to them now.
- ``TimerFired``: the ticks due by now, chosen by the catch-up mode (``model.ticks``).
  A timer that is stale (a paused or deleted schedule, a moved tick) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from ..model.schedule import Schedule
from ..model.ticks import due_ticks, next_tick
from .events import DeleteSchedule, PauseSchedule, PutSchedule, ResumeSchedule, TimerFired


@dataclass
class ScheduleTransition:
    schedule: Schedule | None
    changed: bool = False
    deleted: bool = False
    fire: list[float] = field(default_factory=list)
    timer: float | None = None  # set the schedule's timer at this time
    cancel_timer: bool = False
    error: str | None = None


def apply_schedule(
    current: Schedule | None,
    event: PutSchedule | DeleteSchedule | PauseSchedule | ResumeSchedule | TimerFired,
    now: float,
) -> ScheduleTransition:
    if isinstance(event, PutSchedule):
        return _put(current, event, now)
    if current is None:
        if isinstance(event, TimerFired):
            return ScheduleTransition(None, cancel_timer=True)
        return ScheduleTransition(None, error="no such schedule")
    if isinstance(event, DeleteSchedule):
        return ScheduleTransition(None, changed=True, deleted=True, cancel_timer=True)
    if isinstance(event, PauseSchedule):
        return _pause(current, now, event.actor) if not current.paused else ScheduleTransition(current)
    if isinstance(event, ResumeSchedule):
        return _resume(current, now, event.actor) if current.paused else ScheduleTransition(current)
    if current.paused or current.next_due is None:
        return ScheduleTransition(current)
    return _tick(_copy(current, now, acted=False), now, changed=False)


def _copy(schedule: Schedule, now: float, actor: str | None = None, *, acted: bool = True) -> Schedule:
    if not acted:
        return msgspec.structs.replace(schedule, updated=now)
    return msgspec.structs.replace(schedule, updated=now, updated_by=actor)


def _put(current: Schedule | None, event: PutSchedule, now: float) -> ScheduleTransition:
    spec = event.spec
    if current is None:
        paused = bool(event.paused)
        s = Schedule(spec=spec, paused=paused, next_due=next_tick(spec, now), created=now, updated=now,
                     updated_by=event.actor)  # fmt: skip
        return ScheduleTransition(s, changed=True, timer=None if paused else s.next_due, cancel_timer=paused)
    if spec == current.spec and (event.paused is None or event.paused == current.paused):
        return ScheduleTransition(current)  # the same definition, applied again (at every start)
    s = _copy(current, now, event.actor)
    s.spec = spec
    s.last_error = None
    if spec.timing() != current.spec.timing():
        s.next_due = next_tick(spec, now)
    if event.paused is not None and event.paused != current.paused:
        return _pause(s, now, event.actor) if event.paused else _resume(s, now, event.actor)
    if s.paused:
        return ScheduleTransition(s, changed=True, cancel_timer=True)
    return ScheduleTransition(s, changed=True, timer=s.next_due)


def _pause(current: Schedule, now: float, actor: str | None) -> ScheduleTransition:
    s = _copy(current, now, actor)
    s.paused = True
    return ScheduleTransition(s, changed=True, cancel_timer=True)


def _resume(current: Schedule, now: float, actor: str | None) -> ScheduleTransition:
    s = _copy(current, now, actor)
    s.paused = False
    if s.next_due is None:
        s.next_due = next_tick(s.spec, now)
    return _tick(s, now, changed=True)


def _tick(s: Schedule, now: float, *, changed: bool) -> ScheduleTransition:
    """Fire what is due by ``now`` (per the catch-up mode) and set the timer at the next tick."""
    assert s.next_due is not None
    if s.next_due > now:
        return ScheduleTransition(s, changed=changed, timer=s.next_due)
    fire, missed, following = due_ticks(s.spec, s.next_due, now)
    s.next_due = following
    s.missed += missed
    if fire:
        s.last_fired = fire[-1]
    return ScheduleTransition(s, changed=True, fire=fire, timer=following)
