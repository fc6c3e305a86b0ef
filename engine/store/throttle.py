"""Login throttling: failed password and token checks, counted in the database.

The counts live in ``login_failures`` rather than in process memory, so that the limit holds across
``flow serve`` processes and restarts. A user is held back after ``per_user`` failures within
``window``, a client address after ``per_address``; each is let in again once enough of its failures
have aged out of the window, which is what ``Retry-After`` says. A successful login clears the user's
failures (an attacker's failures from an address are not forgiven by someone else's success).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, select

from engine.store.context import StoreContext, aware
from engine.store.db import read_only
from engine.store.models import LoginFailure

login_failures = cast(Table, LoginFailure.__table__)


@dataclass(frozen=True)
class ThrottlePolicy:
    """The limits: failures per user and per client address within ``window``."""

    window: timedelta = timedelta(minutes=15)
    per_user: int = 5
    per_address: int = 20


def _wait(ctx: StoreContext, column: Any, value: str, limit: int, window: timedelta) -> float | None:
    """Seconds until ``value`` has fewer than ``limit`` failures in the window, or None if it has now.

    The ``limit``-th newest failure is the one whose ageing out lets the next attempt in.
    """
    now = ctx.now()
    with read_only(ctx.engine) as conn:
        oldest_counted = conn.execute(
            select(login_failures.c.created_at)
            .where(column == value, login_failures.c.created_at >= now - window)
            .order_by(login_failures.c.created_at.desc())
            .limit(1).offset(limit - 1)
        ).scalar()
    if oldest_counted is None:
        return None
    when = aware(oldest_counted)
    assert when is not None
    return max(1.0, math.ceil((when + window - now).total_seconds()))


def retry_after(ctx: StoreContext, policy: ThrottlePolicy, *, username: str | None,
                client_address: str) -> float | None:
    """Seconds to wait before ``username`` (if given) may try again from ``client_address``; None
    when the attempt may go ahead."""
    waits = [_wait(ctx, login_failures.c.client_address, client_address[:64], policy.per_address, policy.window)]
    if username:
        waits.append(_wait(ctx, login_failures.c.username, username[:150], policy.per_user, policy.window))
    found = [w for w in waits if w is not None]
    return max(found) if found else None


def record_failure(ctx: StoreContext, policy: ThrottlePolicy, *, kind: str, username: str | None,
                   client_address: str) -> None:
    """Count a failed check (``kind`` is ``password`` or ``token``); drop this address's failures
    that no longer count, so that a flood does not grow the table without end."""
    now = ctx.now()
    address = client_address[:64]
    with ctx.engine.begin() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.client_address == address,
                                                  login_failures.c.created_at < now - policy.window))
        conn.execute(login_failures.insert().values(kind=kind, username=(username or None) and username[:150],
                                                    client_address=address, created_at=now))


def clear_user(ctx: StoreContext, username: str) -> None:
    """Forget the failures of ``username`` (after a successful login)."""
    with ctx.engine.begin() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.username == username[:150]))
