"""Fire times of cron, every and at schedules, over DST changes, with catch-up (injected clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import islice
from types import SimpleNamespace

import pytest
from croniter import croniter

from engine.core.timing import (
    MAX_MISSED_RECORDED,
    ScheduleError,
    Timing,
    due_fires,
    fires,
    local_to_utc,
    next_fire,
    parse_at,
    zone,
)

UTC = timezone.utc
HOUR = 3600.0


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(expr: str, tz: str, anchor: datetime, catchup: bool = True) -> Timing:
    return Timing("cron", anchor, cron=expr, timezone=tz, catchup=catchup)


def take(timing: Timing, n: int, after: datetime | None = None) -> list[datetime]:
    return list(islice(fires(timing, after or timing.anchor), n))


# -- 30 2 * * *: the daily time that falls into the DST change ------------------------------------

@pytest.mark.parametrize(
    "tz, anchor, expected",
    [
        # Berlin, spring forward 2026-03-29: 02:00-02:59 does not exist -> 03:00 CEST (01:00 UTC).
        ("Europe/Berlin", utc(2026, 3, 27, 12),
         [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
        # Berlin, fall back 2026-10-25: 02:30 happens twice -> only the first (CEST, 00:30 UTC).
        ("Europe/Berlin", utc(2026, 10, 23, 12),
         [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        # New York, spring forward 2026-03-08: 02:30 does not exist -> 03:00 EDT (07:00 UTC).
        ("America/New_York", utc(2026, 3, 6, 12),
         [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
        # New York, fall back 2026-11-01: 01:00-01:59 repeats; 02:30 exists once (EST, 07:30 UTC).
        ("America/New_York", utc(2026, 10, 30, 12),
         [utc(2026, 10, 31, 6, 30), utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)]),
    ],
)
def test_daily_0230_fires_once_a_day_across_dst(tz: str, anchor: datetime, expected: list[datetime]) -> None:
    assert take(cron("30 2 * * *", tz, anchor), 3) == expected


def test_new_york_0130_in_the_repeated_hour_fires_once_at_its_first_occurrence() -> None:
    timing = cron("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12))
    # 01:30 EDT is 05:30 UTC; the second 01:30 (EST, 06:30 UTC) does not fire.
    assert take(timing, 2) == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_croniter_alone_fires_the_repeated_time_twice() -> None:
    """Why the walk does not use croniter's own time-zone support (see engine/core/timing.py)."""
    start = datetime(2026, 10, 24, 12, tzinfo=zone("Europe/Berlin"))
    walk = croniter("30 2 * * *", start)
    first, second = walk.get_next(datetime), walk.get_next(datetime)
    assert (first.date(), second.date()) == (start.date() + timedelta(days=1),) * 2


# -- hourly crons across the changes --------------------------------------------------------------

def test_hourly_berlin_spring_forward_merges_the_missing_hour_into_0300() -> None:
    timing = cron("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30))
    # Local 01:00 CET, then 02:00 (absent) and 03:00 CEST are the same instant, fired once.
    assert take(timing, 4) == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)]


def test_hourly_berlin_fall_back_skips_the_repeated_hour() -> None:
    timing = cron("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 22, 30))
    # 01:00 CEST, 02:00 CEST; the second 02:00 (CET, 01:00 UTC) does not fire; then 03:00 CET.
    assert take(timing, 4) == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


def test_quarter_hourly_berlin_gap_fires_once_at_the_end_of_the_gap() -> None:
    timing = cron("*/15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 40))
    assert take(timing, 3) == [utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15)]


def test_hourly_new_york_across_both_changes() -> None:
    spring = cron("0 * * * *", "America/New_York", utc(2026, 3, 8, 5, 30))
    assert take(spring, 3) == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]
    fall = cron("0 * * * *", "America/New_York", utc(2026, 11, 1, 3, 30))
    # 00:00 EDT, 01:00 EDT; the second 01:00 (EST, 06:00 UTC) does not fire; 02:00 EST.
    assert take(fall, 3) == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]


def test_fire_times_are_strictly_increasing_over_a_year_of_dst() -> None:
    for tz in ("Europe/Berlin", "America/New_York"):
        times = take(cron("*/30 * * * *", tz, utc(2026, 1, 1)), 2 * 24 * 365)
        assert all(a < b for a, b in zip(times, times[1:]))


def test_next_fire_from_inside_the_repeated_hour_does_not_go_back() -> None:
    timing = cron("30 2 * * *", "Europe/Berlin", utc(2026, 10, 1))
    # 01:15 UTC is 02:15 CET, the second pass of 02:xx: 02:30 already fired (00:30 UTC).
    assert next_fire(timing, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)


def test_local_to_utc_rules() -> None:
    berlin = zone("Europe/Berlin")
    assert local_to_utc(datetime(2026, 3, 29, 2, 30), berlin) == utc(2026, 3, 29, 1)
    assert local_to_utc(datetime(2026, 10, 25, 2, 30), berlin) == utc(2026, 10, 25, 0, 30)
    assert local_to_utc(datetime(2026, 7, 1, 12), berlin) == utc(2026, 7, 1, 10)


# -- every and at -----------------------------------------------------------------------------------

def test_every_is_anchored_at_creation_and_ignores_dst() -> None:
    anchor = utc(2026, 3, 29, 0, 17, 5)
    timing = Timing("every", anchor, every=HOUR, timezone="Europe/Berlin")
    assert take(timing, 3) == [anchor + timedelta(hours=k) for k in (1, 2, 3)]
    # From any instant, the next fire stays on the anchor's grid.
    assert next_fire(timing, utc(2026, 3, 30, 5)) == utc(2026, 3, 30, 5, 17, 5)
    assert next_fire(timing, utc(2026, 3, 30, 5, 17, 5)) == utc(2026, 3, 30, 6, 17, 5)


def test_every_fractional_seconds_stay_exact_after_many_steps() -> None:
    anchor = utc(2026, 1, 1)
    timing = Timing("every", anchor, every=0.1)
    assert next_fire(timing, anchor + timedelta(seconds=1000)) == anchor + timedelta(seconds=1000.1)


def test_at_fires_once() -> None:
    at = parse_at("2026-12-01T09:00:00+01:00")
    timing = Timing("at", utc(2026, 11, 1), at=at)
    assert take(timing, 5) == [utc(2026, 12, 1, 8)]
    assert next_fire(timing, at) is None


def test_at_without_offset_is_local_time_with_the_dst_rules() -> None:
    assert parse_at("2026-03-29T02:30:00", "Europe/Berlin") == utc(2026, 3, 29, 1)
    assert parse_at("2026-11-01T01:30:00", "America/New_York") == utc(2026, 11, 1, 5, 30)
    assert parse_at("2026-06-01T12:00:00Z") == utc(2026, 6, 1, 12)


def test_from_spec_reads_a_compiled_schedule() -> None:
    spec = SimpleNamespace(kind="at", cron=None, every=None, at="2026-12-01T09:00:00",
                           timezone="Europe/Berlin", catchup=False)
    timing = Timing.from_spec(spec, utc(2026, 1, 1))
    assert (timing.at, timing.catchup) == (utc(2026, 12, 1, 8), False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "cron", "cron": "61 * * * *"},
        {"kind": "cron", "cron": "0 3 * * *", "timezone": "Mars/Olympus"},
        {"kind": "every", "every": 0.0},
        {"kind": "at"},
        {"kind": "weekly"},
    ],
)
def test_bad_schedules_are_refused(kwargs: dict) -> None:
    with pytest.raises(ScheduleError):
        Timing(anchor=utc(2026, 1, 1), **kwargs)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ScheduleError, match="UTC"):
        Timing("every", datetime(2026, 1, 1), every=1.0)


# -- catch-up ---------------------------------------------------------------------------------------

def test_due_fires_in_normal_operation() -> None:
    timing = cron("*/5 * * * *", "UTC", utc(2026, 5, 1))
    assert due_fires(timing, None, utc(2026, 5, 1, 0, 4), HOUR) == ([], [])
    assert due_fires(timing, None, utc(2026, 5, 1, 0, 5), HOUR) == ([utc(2026, 5, 1, 0, 5)], [])
    assert due_fires(timing, utc(2026, 5, 1, 0, 5), utc(2026, 5, 1, 0, 9), HOUR) == ([], [])


def test_missed_fires_within_the_window_fire_once_each_older_ones_are_missed() -> None:
    # Given: an every-10-minutes schedule whose scheduler was down from 00:00 to 02:30
    timing = Timing("every", utc(2026, 5, 1), every=600.0)
    # When: the scheduler comes back at 02:30 with a one-hour window
    to_fire, missed = due_fires(timing, utc(2026, 5, 1), utc(2026, 5, 1, 2, 30), HOUR)
    # Then: 01:30 ... 02:30 fire once each (the window's edge included), 00:10 ... 01:20 are missed
    assert to_fire == [utc(2026, 5, 1, 1, 30) + timedelta(minutes=10 * k) for k in range(7)]
    assert missed == [utc(2026, 5, 1, 0, 10) + timedelta(minutes=10 * k) for k in range(8)]
    # And: the next pass, from the last fire, has nothing left
    assert due_fires(timing, to_fire[-1], utc(2026, 5, 1, 2, 30), HOUR) == ([], [])


def test_catch_up_across_the_berlin_fall_back_fires_each_time_once() -> None:
    timing = cron("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24))
    to_fire, missed = due_fires(timing, utc(2026, 10, 24, 23, 59), utc(2026, 10, 25, 2, 0), 3 * HOUR)
    # 01:00, 01:30, 02:00, 02:30 CEST; the repeated 02:00/02:30 CET do not fire; 03:00 CET.
    assert to_fire == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0)]
    assert missed == []


def test_catchup_false_fires_only_the_latest_due_one() -> None:
    timing = Timing("every", utc(2026, 5, 1), every=600.0, catchup=False)
    to_fire, missed = due_fires(timing, utc(2026, 5, 1), utc(2026, 5, 1, 0, 45), HOUR)
    assert to_fire == [utc(2026, 5, 1, 0, 40)]
    assert missed == [utc(2026, 5, 1, 0, 10), utc(2026, 5, 1, 0, 20), utc(2026, 5, 1, 0, 30)]


def test_catchup_false_outside_the_window_fires_nothing() -> None:
    timing = cron("0 3 * * *", "Europe/Berlin", utc(2026, 5, 1), catchup=False)
    to_fire, missed = due_fires(timing, None, utc(2026, 5, 1, 4, 30), HOUR)
    assert (to_fire, missed) == ([], [utc(2026, 5, 1, 1)])


def test_a_one_off_in_the_past_fires_within_the_window_else_is_missed() -> None:
    at = utc(2026, 5, 1, 12)
    timing = Timing("at", utc(2026, 5, 1, 12, 30), at=at)  # created after its time
    assert due_fires(timing, None, utc(2026, 5, 1, 12, 30), HOUR) == ([at], [])
    assert due_fires(timing, None, utc(2026, 5, 1, 14), HOUR) == ([], [at])
    assert due_fires(timing, at, utc(2026, 5, 1, 14), HOUR) == ([], [])


def test_a_long_outage_records_only_the_newest_missed_fires() -> None:
    timing = Timing("every", utc(2026, 5, 1), every=1.0)
    now = utc(2026, 5, 8)  # a week of one fire a second
    to_fire, missed = due_fires(timing, None, now, HOUR, max_fires=10)
    horizon = now - timedelta(hours=1)
    assert len(missed) == MAX_MISSED_RECORDED
    assert missed[-1] == horizon - timedelta(seconds=1)
    assert to_fire == [horizon + timedelta(seconds=k) for k in range(10)]


def test_max_fires_leaves_the_rest_for_the_next_pass() -> None:
    timing = Timing("every", utc(2026, 5, 1), every=60.0)
    now = utc(2026, 5, 1, 0, 30)
    first, _ = due_fires(timing, None, now, HOUR, max_fires=20)
    rest, _ = due_fires(timing, first[-1], now, HOUR, max_fires=20)
    assert first + rest == [utc(2026, 5, 1) + timedelta(minutes=k) for k in range(1, 31)]


def test_a_clock_walk_fires_every_time_exactly_once() -> None:
    """A scheduler ticking at irregular steps (an injected clock) fires each cron time once."""
    timing = cron("*/20 * * * *", "America/New_York", utc(2026, 11, 1, 3))
    now, last, fired = timing.anchor, None, []
    for step in [7, 13, 61, 1, 119, 3, 240, 17] * 3:  # minutes; most steps are longer than a fire
        now += timedelta(minutes=step)
        to_fire, missed = due_fires(timing, last, now, 5 * HOUR)
        assert missed == []
        fired += to_fire
        last = to_fire[-1] if to_fire else last
    assert fired == take(timing, len(fired))
    assert len(set(fired)) == len(fired)


def test_a_one_off_time_before_1970_is_refused_not_an_overflow():
    from datetime import datetime, timezone

    import pytest

    from engine.core.timing import ScheduleError, Timing

    now = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    with pytest.raises(ScheduleError, match="before 1970"):
        Timing(kind="at", anchor=now, at=datetime(1, 1, 1, tzinfo=timezone.utc))


def test_a_long_outage_back_to_1970_records_missed_fires_without_overflow():
    from datetime import datetime, timezone

    from engine.core.timing import Timing, due_fires

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    now = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    timing = Timing(kind="every", anchor=epoch, every=86400.0)
    to_fire, missed = due_fires(timing, None, now, 3600.0)
    assert missed and missed[-1] <= now and not to_fire or to_fire[-1] <= now
