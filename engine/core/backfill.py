"""Which fire times a backfill covers (pure): every fire of a schedule in ``[start, end)``.

The scheduler's own rules (``engine.core.timing``) start at the schedule's creation; a backfill is
asked for exactly the stretch before it, so here the anchor is moved back: a cron schedule fires
where its expression matches, an ``every`` schedule keeps its phase (its fires stay whole steps
from its anchor), a one-off ``at`` schedule fires once if its time is in the range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import islice

from engine.core import timing as timing_rules
from engine.core.timing import ScheduleError, Timing

# One backfill starts at most this many runs: a seconds cron over a year would be 31 million.
MAX_BACKFILL_FIRES = 10_000
_TINY = timedelta(microseconds=1)


class BackfillRangeError(ScheduleError):
    """The range cannot be backfilled (empty, in the future, or too many fires)."""


def check_range(start: datetime, end: datetime, now: datetime) -> None:
    """Raise ``BackfillRangeError`` unless ``start < end <= now`` (all UTC)."""
    if end <= start:
        raise BackfillRangeError(f"the range is empty: --to {end.isoformat()} is not after --from {start.isoformat()}")
    if end > now:
        raise BackfillRangeError(
            f"--to {end.isoformat()} is in the future (now is {now.isoformat()}); a backfill covers the "
            "past, the scheduler fires from now on"
        )


def backfill_fires(timing: Timing, start: datetime, end: datetime, limit: int = MAX_BACKFILL_FIRES) -> list[datetime]:
    """The fire times of ``timing`` with ``start <= t < end``, in order.

    Raises ``BackfillRangeError`` when there are more than ``limit``.
    """
    if timing.kind == "at":
        assert timing.at is not None
        return [timing.at] if start <= timing.at < end else []
    found = list(islice(_between(_anchored_before(timing, start), start - _TINY, end), limit + 1))
    if len(found) > limit:
        raise BackfillRangeError(
            f"the range holds more than {limit} fire times; backfill it in parts (e.g. a month at a time)"
        )
    return found


def _anchored_before(timing: Timing, start: datetime) -> Timing:
    if timing.anchor < start:
        return timing
    if timing.kind == "every":
        assert timing.every is not None
        step = timedelta(microseconds=max(1, round(timing.every * 1_000_000)))
        steps = (timing.anchor - start) // step + 1
        return dataclasses.replace(timing, anchor=timing.anchor - steps * step)
    return dataclasses.replace(timing, anchor=start - _TINY)


def _between(timing: Timing, after: datetime, before: datetime) -> Iterator[datetime]:
    """Lazily, so that the limit stops a dense schedule's walk early."""
    for fire in timing_rules.fires(timing, after):
        if fire >= before:
            return
        yield fire
