"""ISO 8601 times from the query string and bodies."""

from __future__ import annotations

import datetime as dt

from web.api.errors import ApiError


def parse_time(raw: str, name: str) -> dt.datetime:
    """A UTC datetime from ISO 8601 (``Z`` accepted); a time without an offset is taken as UTC."""
    try:
        value = dt.datetime.fromisoformat(raw.strip())
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts.
        return value.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise ApiError(400, "invalid_time",
                       f"{name}={raw!r} is not an ISO 8601 time like 2030-01-31T09:00:00Z.") from None
