"""When a schedule's ticks are: pure functions of its definition and of times (epoch seconds).

- ``cron``: a five-field cron expression (``cronsim``: ranges, steps, names, ``L``, ``W``,
  ``#``), evaluated in the schedule's ``timezone`` (``zoneinfo``). Across DST changes it
  behaves like cron: a time that does not exist (spring forward) fires at the first minute
  after the gap; a time that exists twice (fall back) fires once.
- ``every``: every N whole seconds, aligned to the Unix epoch (every 300 s is at :00, :05,
  ... UTC), so that every worker computes the same ticks and ids with no stored anchor.

After a downtime (or a pause) the ticks from ``next_due`` up to now are due; the catch-up
mode chooses which of them fire (``due_ticks``):

- ``skip``: none that was missed; the latest fires only if it is on time: at most
  ``ON_TIME`` seconds ago and less than half the way to the next tick (the timer of a
  running worker fires within milliseconds; a worker that restarts at once is on time);
- ``one``: the latest, once;
- ``all``: every one, oldest first, at most ``MAX_CATCH_UP`` (the latest ones); the rest are
  counted as missed.

Missed ticks are counted up to ``COUNT_LIMIT`` (a year of a per-minute cron is not walked).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ..errors import InvalidSchedule
from .schedule import CATCH_UP_MODES, ScheduleSpec, check_name

ON_TIME = 60.0
MAX_CATCH_UP = 100
COUNT_LIMIT = 10_000
_ZONES: dict[str, tzinfo] = {}


def zone(name: str) -> tzinfo:
    """The time zone called ``name`` (IANA, e.g. ``Europe/Paris``; ``UTC``)."""
    found = _ZONES.get(name)
    if found is None:
        if not isinstance(name, str) or not name:
            raise InvalidSchedule(f"timezone must be an IANA zone name such as 'Europe/Paris', got {name!r}")
        try:
            found = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise InvalidSchedule(f"timezone {name!r} is not a known IANA time zone: {exc}") from None
        _ZONES[name] = found
    return found


def check_spec(spec: ScheduleSpec) -> ScheduleSpec:
    """``spec`` if it can run, else ``InvalidSchedule`` naming the field."""
    check_name(spec.name)
    if not isinstance(spec.template, str) or not spec.template:
        raise InvalidSchedule(f"schedule {spec.name!r}: template must be a template name, got {spec.template!r}")
    if (spec.cron is None) == (spec.every is None):
        raise InvalidSchedule(f"schedule {spec.name!r}: give exactly one of cron (an expression) or every (seconds)")
    if spec.every is not None:
        if isinstance(spec.every, bool) or not isinstance(spec.every, int) or spec.every < 1:
            raise InvalidSchedule(f"schedule {spec.name!r}: every must be a whole number of seconds >= 1, "
                                  f"got {spec.every!r}")  # fmt: skip
    else:
        assert spec.cron is not None
        if not isinstance(spec.cron, str) or len(spec.cron) > 200:
            raise InvalidSchedule(f"schedule {spec.name!r}: cron must be an expression, got {spec.cron!r}")
        if len(spec.cron.split()) != 5:
            raise InvalidSchedule(f"schedule {spec.name!r}: cron {spec.cron!r} must have five fields "
                                  "(minute hour day-of-month month day-of-week)")  # fmt: skip
        try:
            CronSim(spec.cron, datetime.now(zone(spec.timezone)))
        except CronSimError as exc:
            raise InvalidSchedule(f"schedule {spec.name!r}: cron {spec.cron!r} is not valid: {exc}") from None
    zone(spec.timezone)
    if spec.catch_up not in CATCH_UP_MODES:
        raise InvalidSchedule(f"schedule {spec.name!r}: catch_up must be one of {', '.join(CATCH_UP_MODES)}, "
                              f"got {spec.catch_up!r}")  # fmt: skip
    if not isinstance(spec.runtime_parameters, dict):
        raise InvalidSchedule(f"schedule {spec.name!r}: runtime_parameters must be a dict")
    return spec


def _at(spec: ScheduleSpec, when: float) -> datetime:
    return datetime.fromtimestamp(when, zone(spec.timezone))


def next_tick(spec: ScheduleSpec, after: float) -> float:
    """The first tick strictly after ``after``."""
    if spec.every is not None:
        return float((math.floor(after / spec.every) + 1) * spec.every)
    assert spec.cron is not None
    return next(iter(CronSim(spec.cron, _at(spec, after)))).timestamp()


def upcoming(spec: ScheduleSpec, after: float, count: int) -> list[float]:
    """The next ``count`` ticks strictly after ``after``."""
    out: list[float] = []
    when = after
    for _ in range(count):
        when = next_tick(spec, when)
        out.append(when)
    return out


def ticks_back(spec: ScheduleSpec, start: float, end: float, limit: int) -> list[float]:
    """The ticks ``t`` with ``start <= t <= end``, latest first, at most ``limit`` of them."""
    if limit <= 0 or end < start:
        return []
    if spec.every is not None:
        every = spec.every
        last = math.floor(end / every)
        first = math.ceil(start / every)
        return [float(k * every) for k in range(last, max(first, last - limit + 1) - 1, -1)]
    assert spec.cron is not None
    out: list[float] = []
    # cronsim steps backwards from strictly before its start: start a second past ``end``.
    for moment in CronSim(spec.cron, _at(spec, math.floor(end) + 1.0), reverse=True):
        t = moment.timestamp()
        if t > end:
            continue
        if t < start or len(out) >= limit:
            break
        out.append(t)
    return out


def due_ticks(spec: ScheduleSpec, next_due: float, now: float) -> tuple[list[float], int, float]:
    """What to do at ``now`` for a schedule whose first unfired tick is ``next_due``: the
    ticks to fire (oldest first), how many due ticks are passed over (missed), and the
    new first unfired tick (after ``now``)."""
    following = next_tick(spec, now)
    if next_due > now:
        return [], 0, next_due
    keep = MAX_CATCH_UP if spec.catch_up == "all" else 1
    due = ticks_back(spec, next_due, now, COUNT_LIMIT)
    fire = due[:keep]
    if spec.catch_up == "skip" and fire and now - fire[0] > min(ON_TIME, (following - fire[0]) / 2):
        fire = []
    fire.reverse()
    return fire, len(due) - len(fire), following


def iso(spec: ScheduleSpec, when: float) -> str:
    """A tick as ISO 8601 in the schedule's time zone."""
    return _at(spec, when).isoformat()


def utc_iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()
