"""Durations people type: ``90s``, ``15m``, ``8h``, ``7d``, ``2w``, or a number of seconds."""

from __future__ import annotations

import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number is seconds.

    Raises:
        ValueError: not a positive duration; the message shows the forms that work.
    """
    found = _DURATION.match(text.lower())
    if found is None or float(found.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; write a positive number with a unit, like 90s, 15m, 8h, "
                         "7d or 2w (a bare number is seconds)")
    return float(found.group(1)) * UNIT_SECONDS[found.group(2) or "s"]
