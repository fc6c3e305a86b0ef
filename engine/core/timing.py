"""When schedules fire: ``cron``, ``every`` and ``at`` timings, DST rules and catch-up (pure).

Every time that enters or leaves this module is an aware ``datetime`` in UTC; local time exists
only inside the cron walk. Nothing here reads a clock: callers pass ``now``.

Daylight-saving rules for ``cron`` (and for an ``at`` time written without an offset):

- A wall-clock time that does not exist (spring forward: 02:30 on 2026-03-29 in Europe/Berlin)
  fires once, at the next valid instant, the end of the gap (03:00 local). Several nonexistent
  times of one gap (``*/15`` over 02:00-02:59) and a match exactly at the end of the gap all
  fire together, once.
- A wall-clock time that exists twice (fall back: 02:30 on 2026-10-25 in Europe/Berlin) fires
  once, at its first occurrence (02:30 CEST, 00:30 UTC). An hourly cron therefore has a
  two-hour gap in UTC across the change: it does not fire during the repeated hour.

croniter alone gets the second rule wrong: iterating with an aware start it fires the repeated
times twice (02:30 CEST and 02:30 CET). So the walk iterates croniter over *naive* local wall
times, where DST does not exist, and maps each match to UTC with the rules above.

``every`` counts elapsed seconds from the anchor (the schedule's creation time): DST does not
apply to it. ``at`` fires once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any, Iterator, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

UTC = timezone.utc
Kind = Literal["cron", "every", "at"]

# Catch-up enumerates each missed fire; a schedule that fires every second and was stopped for a
# week would otherwise produce 600,000 rows in one pass. Beyond this many, older missed fires are
# skipped without a record (the newest ones, nearest the window, are the ones kept).
MAX_MISSED_RECORDED = 1000

# During a repeated (fall back) hour the cron walk skips matches that map before the cursor;
# a seconds-level cron skips at most 3,600 of them per repeated hour.
_MAX_CRON_STEPS = 100_000

_TINY = timedelta(microseconds=1)


class ScheduleError(ValueError):
    """A schedule cannot be used (bad cron expression, unknown time zone, bad time)."""


@dataclass(frozen=True)
class Timing:
    """What a schedule needs to compute its fire times.

    ``anchor`` is when the schedule was created (UTC): ``every`` counts from it, ``cron`` fires
    only after it. ``at`` is the one-off fire time, already in UTC.
    """

    kind: Kind
    anchor: datetime
    cron: str | None = None
    every: float | None = None
    at: datetime | None = None
    timezone: str = "UTC"
    catchup: bool = True

    def __post_init__(self) -> None:
        _require_utc(self.anchor, "anchor")
        zone(self.timezone)  # fail early on an unknown time zone
        if self.kind == "cron":
            if not self.cron or not croniter.is_valid(self.cron):
                raise ScheduleError(f"bad cron expression {self.cron!r}: use 'm h dom mon dow'")
        elif self.kind == "every":
            if self.every is None or self.every <= 0:
                raise ScheduleError(f"'every' needs a positive duration, not {self.every!r}")
        elif self.kind == "at":
            if self.at is None:
                raise ScheduleError("'at' needs a time")
            _require_utc(self.at, "at")
            if self.at.year < 1970:
                # Surely a typo; it would also have no instant before it to start a cursor from.
                raise ScheduleError(f"one-off time {self.at.isoformat()} is before 1970; check the year")
        else:
            raise ScheduleError(f"unknown schedule kind {self.kind!r}: use cron, every or at")

    @classmethod
    def from_spec(cls, spec: Any, anchor: datetime) -> "Timing":
        """Build from a ``dsl.spec.Schedule`` (or anything with its attributes)."""
        at = parse_at(spec.at, spec.timezone) if spec.kind == "at" else None
        return cls(
            kind=spec.kind,
            anchor=anchor,
            cron=spec.cron,
            every=float(spec.every) if spec.every is not None else None,
            at=at,
            timezone=spec.timezone or "UTC",
            catchup=bool(spec.catchup),
        )


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ScheduleError if it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name like 'Europe/Berlin'") from None


def parse_at(text: str | None, tz_name: str = "UTC") -> datetime:
    """An ISO-8601 time in UTC; without an offset it is wall-clock time in ``tz_name``."""
    if not text:
        raise ScheduleError("'at' needs an ISO-8601 time like 2026-12-01T09:00:00+01:00")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"bad time {text!r}: use ISO-8601 like 2026-12-01T09:00:00+01:00") from None
    if value.tzinfo is None:
        return local_to_utc(value, zone(tz_name))
    return value.astimezone(UTC)


def local_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """Map a naive wall-clock time in ``tz`` to UTC with the DST rules of this module."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # exists once, or twice and fold=0 is the first occurrence
    # In a gap: fold=0 uses the offset before the change (too late), fold=1 the one after (too
    # early); the change itself lies between. zoneinfo has no transition API, so bisect.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    after = high.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == after:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


def next_fire(timing: Timing, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (UTC), or None if the schedule is done."""
    _require_utc(after, "after")
    if timing.kind == "at":
        assert timing.at is not None
        return timing.at if timing.at > after else None
    if timing.kind == "every":
        return _next_every(timing, after)
    return _next_cron(timing, max(after, timing.anchor))


def fires(timing: Timing, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after``, in order (endless for cron and every)."""
    current: datetime | None = after
    while current is not None:
        current = next_fire(timing, current)
        if current is not None:
            yield current


def start_cursor(timing: Timing) -> datetime:
    """The cursor before any fire: the anchor, or just before a one-off time set in the past."""
    if timing.kind == "at":
        assert timing.at is not None
        return min(timing.anchor, timing.at - _TINY)
    return timing.anchor


def due_fires(
    timing: Timing,
    last_fire: datetime | None,
    now: datetime,
    catchup_window: float,
    *,
    max_fires: int | None = None,
) -> tuple[list[datetime], list[datetime]]:
    """The fires due at ``now``: ``(to_fire, missed)``, both in time order.

    Due fires are those after ``last_fire`` (or after the start, see ``start_cursor``) and at or
    before ``now``. One no older than ``catchup_window`` seconds is fired (each once, so a
    scheduler that was down makes them all up); older ones are missed. With ``catchup`` off only
    the latest due fire inside the window is fired and the other due fires are missed.
    ``max_fires`` bounds ``to_fire`` (the earliest are kept); the caller picks up the rest on its
    next pass, since its cursor then stops at the last fire returned.
    """
    _require_utc(now, "now")
    cursor = last_fire if last_fire is not None else start_cursor(timing)
    horizon = now - timedelta(seconds=catchup_window)
    missed = _newest_between(timing, cursor, horizon, MAX_MISSED_RECORDED)
    within = _between(timing, max(cursor, horizon - _TINY), now + _TINY)
    if not timing.catchup:
        skipped = list(within)
        return skipped[-1:], missed + skipped[:-1]
    return list(islice(within, max_fires)), missed


def _between(timing: Timing, after: datetime, before: datetime) -> Iterator[datetime]:
    """Fires strictly after ``after`` and strictly before ``before``, lazily."""
    for fire in fires(timing, after):
        if fire >= before:
            return
        yield fire


def _newest_between(timing: Timing, after: datetime, before: datetime, limit: int) -> list[datetime]:
    """At most ``limit`` fires between ``after`` and ``before`` (exclusive), the newest ones.

    Walking a long outage from its start would cost one step per fire (a seconds cron stopped for a
    month: millions); instead look back from ``before`` over a doubling stretch until it holds
    ``limit`` fires or reaches ``after``.
    """
    if before <= after:
        return []
    span = timedelta(minutes=1)
    while True:
        # Compared as a difference: `before - span` overflows near the start of the calendar.
        start = after if before - after <= span else before - span
        # The cap only matters for a cron far denser at the start of the stretch than at its
        # end; then the fires kept are not the newest, which costs nothing but the record.
        found = list(islice(_between(timing, start, before), limit * 64))
        if start == after or len(found) >= limit:
            return found[-limit:]
        span *= 2


def _next_every(timing: Timing, after: datetime) -> datetime:
    assert timing.every is not None
    # Integer microseconds so that the k-th fire is exact, not the sum of k float steps.
    step = max(1, round(timing.every * 1_000_000))
    elapsed = _micros(after - timing.anchor)
    k = max(1, elapsed // step + 1)
    return timing.anchor + timedelta(microseconds=k * step)


def _next_cron(timing: Timing, after: datetime) -> datetime:
    assert timing.cron is not None
    tz = zone(timing.timezone)
    wall = after.astimezone(tz).replace(tzinfo=None)
    # Naive matches strictly after the cursor's wall time. During a repeated hour a match can map
    # to an instant before the cursor (its first occurrence is past); those are skipped. A match
    # before the cursor's wall time never maps after it, so starting here misses nothing.
    walk = croniter(timing.cron, wall)
    for _ in range(_MAX_CRON_STEPS):
        candidate = local_to_utc(walk.get_next(datetime), tz)
        if candidate > after:
            return candidate
    raise ScheduleError(f"cron {timing.cron!r} found no fire time after {after.isoformat()}")


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _require_utc(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ScheduleError(f"{name} must be an aware UTC datetime, got {value!r}")
