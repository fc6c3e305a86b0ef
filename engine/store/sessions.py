"""Dashboard sessions kept on the server, so that they can be ended.

The browser's cookie carries only a random session key (signed by Flask with ``FLOW_SECRET_KEY``);
the ``sessions`` row is found by the key's SHA-256. Every request checks the row and its user in one
query (``check_session``): a session is refused once it is ended (logout, ``flow user logout``), idle
too long, too old, or when its user is disabled, deleted or has another role than at login. Changing
a password ends the user's sessions (``auth.set_password``). ``last_seen_at`` is written at most once
a minute, so that reading pages does not turn into a write per request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, update

from engine.core.errors import NotFound
from engine.store.context import StoreContext, aware, iso
from engine.store.db import read_only
from engine.store.models import DashboardSession, User

sessions = cast(Table, DashboardSession.__table__)
users = cast(Table, User.__table__)

SESSION_TOUCH_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lives: ``idle`` without a request, ``lifetime`` after its login."""

    idle: timedelta = timedelta(hours=8)
    lifetime: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class ActiveSession:
    """A session that may go on: who it is for and their role."""

    username: str
    role: str


@dataclass(frozen=True)
class RefusedSession:
    """A session that may not go on, and why (said on the login page)."""

    reason: str


SessionCheck = ActiveSession | RefusedSession


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def verdict(row: Any, now: datetime, policy: SessionPolicy) -> str | None:
    """Why the session in ``row`` (a session joined with its user) must end, or None if it may go on.

    Pure: the caller reads the row and acts on the answer.
    """
    if row["disabled"]:
        return "Your account was disabled."
    if row["user_role"] != row["role"]:
        return f"Your role changed to {row['user_role']}; log in again to use it."
    if row["ended_at"] is not None:
        return "Your session was ended (a logout, a new password, or an admin); log in again."
    created, seen = aware(row["created_at"]), aware(row["last_seen_at"])
    assert created is not None and seen is not None
    if now - created >= policy.lifetime:
        return "Your session reached its maximum lifetime."
    if now - seen >= policy.idle:
        return "Your session expired after a time without activity."
    return None


def start_session(ctx: StoreContext, username: str, client_address: str | None) -> str:
    """A new session for ``username``; its key, for the cookie (stored only as a hash).

    Raises:
        NotFound: no such user.
    """
    key = secrets.token_urlsafe(32)
    now = ctx.now()
    with ctx.engine.begin() as conn:
        user = conn.execute(select(users.c.id, users.c.role).where(users.c.username == username)).first()
        if user is None:
            raise NotFound("user", username, "see `flow user list`")
        conn.execute(sessions.insert().values(
            id=_digest(key), user_id=user.id, role=user.role, created_at=now, last_seen_at=now,
            ended_at=None, client_address=(client_address or "")[:64] or None,
        ))
    return key


# Built once: constructing a SELECT with a join costs more Python time than running it, and this one
# runs on every dashboard request.
_SESSION_AND_USER = (
    select(sessions.c.id, sessions.c.role, sessions.c.created_at, sessions.c.last_seen_at, sessions.c.ended_at,
           users.c.username, users.c.role.label("user_role"), users.c.disabled)
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.id == bindparam("digest"))
)


def check_session(ctx: StoreContext, key: str, policy: SessionPolicy) -> SessionCheck:
    """Whether the session of ``key`` may go on: one read of the session and its user, and a write
    of ``last_seen_at`` at most once a minute (or of ``ended_at`` when it has just expired)."""
    digest = _digest(key)
    with read_only(ctx.engine) as conn:
        row = conn.execute(_SESSION_AND_USER, {"digest": digest}).mappings().first()
    if row is None:
        return RefusedSession("Your session ended; log in again.")
    now = ctx.now()
    reason = verdict(row, now, policy)
    if reason is not None:
        if row["ended_at"] is None:
            with ctx.engine.begin() as conn:
                _end(conn, sessions.c.id == digest, now)
        return RefusedSession(reason)
    seen = aware(row["last_seen_at"])
    assert seen is not None
    if now - seen >= SESSION_TOUCH_RESOLUTION:
        with ctx.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == digest).values(last_seen_at=now))
    return ActiveSession(username=str(row["username"]), role=str(row["role"]))


def _end(conn: Connection, where: Any, now: datetime) -> int:
    return int(conn.execute(
        update(sessions).where(where, sessions.c.ended_at.is_(None)).values(ended_at=now)
    ).rowcount or 0)


def end_session(ctx: StoreContext, key: str) -> None:
    """End the session of ``key`` (logout); ending it twice, or an unknown key, is a no-op."""
    with ctx.engine.begin() as conn:
        _end(conn, sessions.c.id == _digest(key), ctx.now())


def end_user_sessions_in(conn: Connection, user_id: str, now: datetime) -> int:
    """End every open session of the user ``user_id`` inside the caller's transaction."""
    return _end(conn, sessions.c.user_id == user_id, now)


def end_user_sessions(ctx: StoreContext, username: str) -> int:
    """End every open session of ``username``; how many were open.

    Raises:
        NotFound: no such user.
    """
    with ctx.engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise NotFound("user", username, "see `flow user list`")
        return end_user_sessions_in(conn, str(user_id), ctx.now())


def list_sessions(ctx: StoreContext, username: str, policy: SessionPolicy,
                  include_ended: bool = False) -> list[dict[str, Any]]:
    """The sessions of ``username``, newest first, each with ``active`` (whether it would be let in
    now) and, when it would not, ``ended_because``.

    Raises:
        NotFound: no such user.
    """
    statement = (
        select(sessions.c.id, sessions.c.role, sessions.c.created_at, sessions.c.last_seen_at,
               sessions.c.ended_at, sessions.c.client_address, users.c.username,
               users.c.role.label("user_role"), users.c.disabled)
        .join(users, users.c.id == sessions.c.user_id)
        .where(users.c.username == username)
        .order_by(sessions.c.created_at.desc())
    )
    with read_only(ctx.engine) as conn:
        if conn.execute(select(users.c.id).where(users.c.username == username)).first() is None:
            raise NotFound("user", username, "see `flow user list`")
        rows = conn.execute(statement).mappings().all()
    now = ctx.now()
    listed = []
    for row in rows:
        reason = verdict(row, now, policy)
        if reason is not None and not include_ended:
            continue
        listed.append({
            # The first characters of the hash tell sessions apart; they cannot be turned into a key.
            "id": str(row["id"])[:12],
            "role": row["role"],
            "created_at": iso(row["created_at"]),
            "last_seen_at": iso(row["last_seen_at"]),
            "ended_at": iso(row["ended_at"]),
            "client_address": row["client_address"],
            "active": reason is None,
            "ended_because": reason,
        })
    return listed
