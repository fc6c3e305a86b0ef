"""ISO 8601 times from the query string and bodies."""

from __future__ import annotations

import datetime as dt

from web.api.errors import ApiError


def parse_time(raw: str, name: str) -> dt.datetime:
    """An aware datetime from ISO 8601 (``Z`` accepted); a time without an offset is taken as UTC."""
    try:
        value = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ApiError(400, "invalid_time",
                       f"{name}={raw!r} is not an ISO 8601 time like 2030-01-31T09:00:00Z.") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
