"""The pure parts of schedules: tick computation (cron in a time zone, DST, intervals), the
catch-up modes, validation, and the transitions of ``machine.schedules``."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from daggerflow.errors import InvalidSchedule
from daggerflow.machine.events import DeleteSchedule, PauseSchedule, PutSchedule, ResumeSchedule, TimerFired
from daggerflow.machine.schedules import apply_schedule
from daggerflow.model.schedule import ScheduleSpec, decode_schedule, encode_schedule, tick_instance_id
from daggerflow.model.ticks import MAX_CATCH_UP, check_spec, due_ticks, next_tick, ticks_back, upcoming

PARIS = ZoneInfo("Europe/Paris")
NY = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *fields: int) -> float:
    return datetime(*fields, tzinfo=zone).timestamp()  # type: ignore[misc]


def spec(**kw: object) -> ScheduleSpec:
    kw.setdefault("name", "s")
    kw.setdefault("template", "t")
    return ScheduleSpec(**kw)  # type: ignore[arg-type]


def test_every_is_aligned_to_the_epoch_and_strictly_after() -> None:
    s = spec(every=300)
    assert next_tick(s, 1_000.0) == 1_200.0
    assert next_tick(s, 1_200.0) == 1_500.0  # a tick exactly now is not "after"
    assert upcoming(s, 0.0, 3) == [300.0, 600.0, 900.0]
    assert ticks_back(s, 300.0, 1_000.0, 10) == [900.0, 600.0, 300.0]
    assert ticks_back(s, 300.0, 1_000.0, 2) == [900.0, 600.0]


def test_cron_in_a_time_zone() -> None:
    s = spec(cron="0 9 * * 1-5", timezone="Europe/Paris")
    friday_evening = at(PARIS, 2026, 1, 2, 18, 0)
    assert next_tick(s, friday_evening) == at(PARIS, 2026, 1, 5, 9, 0)  # Monday 09:00 in Paris
    assert ticks_back(s, at(PARIS, 2026, 1, 1, 0, 0), friday_evening, 10) == [
        at(PARIS, 2026, 1, 2, 9, 0), at(PARIS, 2026, 1, 1, 9, 0)]  # fmt: skip


def test_cron_across_the_spring_forward_gap_fires_once_after_it() -> None:
    # 2026-03-08: New York skips 02:00-03:00. A 02:30 job runs at 03:00 that day, as cron does.
    s = spec(cron="30 2 * * *", timezone="America/New_York")
    ticks = upcoming(s, at(NY, 2026, 3, 7, 12, 0), 3)
    assert ticks == [at(NY, 2026, 3, 8, 3, 0), at(NY, 2026, 3, 9, 2, 30), at(NY, 2026, 3, 10, 2, 30)]


def test_cron_across_fall_back_fires_once() -> None:
    # 2026-11-01: New York has 01:00-02:00 twice. A 01:30 job runs once.
    s = spec(cron="30 1 * * *", timezone="America/New_York")
    ticks = upcoming(s, at(NY, 2026, 10, 31, 12, 0), 3)
    assert len(ticks) == 3 and ticks == sorted(ticks)
    assert [datetime.fromtimestamp(t, NY).isoformat() for t in ticks] == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]  # fmt: skip


def test_hourly_cron_across_fall_back_counts_real_hours() -> None:
    s = spec(cron="0 * * * *", timezone="Europe/Paris")
    start = at(PARIS, 2026, 10, 25, 0, 30)  # Paris falls back at 03:00 -> 02:00
    ticks = upcoming(s, start, 5)
    assert [b - a for a, b in pairwise(ticks)] == [3600.0] * 4


def test_catch_up_modes_after_a_downtime() -> None:
    every = spec(every=60)
    # next_due 600, now 1000: ticks 600..960 are due (7 ticks); 960 is 40 s ago, over half the period.
    fire, missed, nxt = due_ticks(spec(every=60, catch_up="skip"), 600.0, 1_000.0)
    assert (fire, missed, nxt) == ([], 7, 1_020.0)
    fire, missed, nxt = due_ticks(spec(every=60, catch_up="one"), 600.0, 1_000.0)
    assert (fire, missed, nxt) == ([960.0], 6, 1_020.0)
    fire, missed, nxt = due_ticks(spec(every=60, catch_up="all"), 600.0, 1_000.0)
    assert (fire, missed, nxt) == ([600.0, 660.0, 720.0, 780.0, 840.0, 900.0, 960.0], 0, 1_020.0)
    # On time (a running worker's timer): skip fires it.
    assert due_ticks(every, 960.0, 960.05) == ([960.0], 0, 1_020.0)
    assert due_ticks(every, 960.0, 975.0) == ([960.0], 0, 1_020.0)
    # Not due yet: nothing.
    assert due_ticks(every, 1_020.0, 1_000.0) == ([], 0, 1_020.0)


def test_catch_up_all_is_capped() -> None:
    fire, missed, nxt = due_ticks(spec(every=1, catch_up="all"), 1.0, 1_000.0)
    assert len(fire) == MAX_CATCH_UP and fire == sorted(fire) and fire[-1] == 1_000.0
    assert missed == 1_000 - MAX_CATCH_UP and nxt == 1_001.0


def test_catch_up_counting_is_bounded_for_long_downtimes() -> None:
    fire, missed, _ = due_ticks(spec(cron="* * * * *", catch_up="one"), 60.0, 60.0 * 200_000)
    assert fire == [60.0 * 200_000] and missed == 9_999  # counted up to COUNT_LIMIT


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"cron": "61 * * * *"}, "not valid"),
        ({"cron": "* * * *"}, "five fields"),
        ({"cron": "* * * * *", "every": 5}, "exactly one"),
        ({}, "exactly one"),
        ({"every": 0}, "every must be"),
        ({"every": True}, "every must be"),
        ({"every": 60, "timezone": "Mars/Olympus"}, "not a known IANA"),
        ({"every": 60, "timezone": "../../etc/passwd"}, "not a known IANA"),
        ({"every": 60, "catch_up": "some"}, "catch_up must be"),
        ({"every": 60, "name": "a/b"}, "'/'"),
        ({"every": 60, "name": ""}, "empty"),
        ({"every": 60, "name": "x" * 201}, "200 bytes"),
    ],
)
def test_invalid_definitions_name_the_field(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidSchedule, match=needle):
        check_spec(spec(**fields))
    assert issubclass(InvalidSchedule, ValueError)


def test_tick_ids_are_deterministic() -> None:
    assert tick_instance_id("nightly", 1_700_000_040.0) == "nightly-20231114T221400Z"
    assert tick_instance_id("nightly", 1_700_000_040.9) == "nightly-20231114T221400Z"


def test_transitions_put_pause_resume_tick_delete() -> None:
    s = spec(every=60, catch_up="one")
    tr = apply_schedule(None, PutSchedule(s), 1_000.0)
    assert tr.changed and tr.schedule is not None and tr.schedule.next_due == 1_020.0 and tr.timer == 1_020.0
    created = tr.schedule
    assert decode_schedule(encode_schedule(created)) == created
    # The same definition again (every start): nothing changes.
    again = apply_schedule(created, PutSchedule(s), 1_005.0)
    assert not again.changed and again.timer is None
    # A timer firing on time fires its tick.
    tick = apply_schedule(created, TimerFired("tick"), 1_020.0)
    assert tick.fire == [1_020.0] and tick.schedule is not None and tick.schedule.next_due == 1_080.0
    assert tick.schedule.last_fired == 1_020.0 and created.next_due == 1_020.0  # the input is not changed
    # Paused: ticks do not fire; resumed after three ticks, "one" fires the latest.
    paused = apply_schedule(tick.schedule, PauseSchedule(), 1_030.0)
    assert paused.cancel_timer and paused.schedule is not None and paused.schedule.paused
    assert apply_schedule(paused.schedule, TimerFired("tick"), 1_080.0).fire == []
    resumed = apply_schedule(paused.schedule, ResumeSchedule(), 1_250.0)
    assert resumed.fire == [1_200.0] and resumed.schedule is not None and resumed.schedule.missed == 2
    assert resumed.timer == 1_260.0
    # A changed interval moves the next tick; a changed parameter does not.
    moved = apply_schedule(resumed.schedule, PutSchedule(spec(every=100, catch_up="one")), 1_250.0)
    assert moved.schedule is not None and moved.schedule.next_due == 1_300.0
    params = apply_schedule(resumed.schedule, PutSchedule(spec(every=60, catch_up="one", runtime_parameters={"a": 1})), 1_250.0)
    assert params.changed and params.schedule is not None and params.schedule.next_due == 1_260.0
    # A re-applied definition does not resume a paused schedule; an explicit paused=False does.
    assert not apply_schedule(paused.schedule, PutSchedule(s), 1_100.0).changed
    assert apply_schedule(paused.schedule, PutSchedule(s, paused=False), 1_100.0).schedule.paused is False  # type: ignore[union-attr]
    gone = apply_schedule(resumed.schedule, DeleteSchedule(), 1_300.0)
    assert gone.deleted and gone.schedule is None and gone.cancel_timer
    assert apply_schedule(None, DeleteSchedule(), 1_300.0).error is not None
    assert apply_schedule(None, TimerFired("tick"), 1_300.0).cancel_timer  # a stale timer


def test_schedules_go_through_the_changelog_and_both_stores(tmp_path: object) -> None:
    from pathlib import Path

    from daggerflow.model.schedule import Schedule
    from daggerflow.store.base import WriteBatch
    from daggerflow.store.changelog import Restorer, batch_records, records_batch
    from daggerflow.store.sqlite import SQLiteStore

    s = Schedule(spec=spec(every=60), next_due=120.0, created=1.0, updated=1.0)
    batch = WriteBatch(schedules={"s": s, "gone": None})
    records = batch_records(batch, 0.0)
    assert records_batch(records).schedules == {"s": s, "gone": None}
    stores = [SQLiteStore(str(Path(str(tmp_path)) / "a.db"))]
    try:
        from daggerflow.store.rocksdb import RocksDBStore

        stores.append(RocksDBStore(str(Path(str(tmp_path)) / "r")))  # type: ignore[arg-type]
    except ImportError:  # the rocksdb extra is not installed
        pass
    for store in stores:
        try:
            store.commit(WriteBatch(schedules={"gone": s}), 0.0)
            Restorer(store, 0).apply((n, k, v) for n, (k, v) in enumerate(records))
            assert store.list_schedules() == [s] and store.get_schedule("s") == s
            assert store.get_schedule("gone") is None
        finally:
            store.close()
