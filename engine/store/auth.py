"""API tokens and dashboard users, stored hashed.

Tokens are 32 random bytes (``flow_`` + URL-safe base64); only their SHA-256 is stored, plus a short
prefix to tell them apart in ``flow token list``. A hash of a high-entropy token needs no salt or
slow hash: nobody can brute-force 256 bits. Passwords are low-entropy, so they get Werkzeug's salted
scrypt. Roles are ordered: ``viewer`` (read) < ``operator`` (start, retry, cancel, compensate,
requeue) < ``admin`` (deploy, schedules, tokens, users).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from engine.core.errors import Conflict, EngineError, InvalidParams, NotFound
from engine.store.context import StoreContext, aware, iso, new_id
from engine.store.db import read_only
from engine.store.listen import TOKENS_CHANNEL
from engine.store.models import ApiToken, DashboardSession, User
from engine.store.sessions import end_user_sessions_in

api_tokens = cast(Table, ApiToken.__table__)
users = cast(Table, User.__table__)
sessions = cast(Table, DashboardSession.__table__)

ROLES = ("viewer", "operator", "admin")
TOKEN_PREFIX = "flow_"
SHOWN_PREFIX_LENGTH = len(TOKEN_PREFIX) + 6
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,150}$")
MIN_PASSWORD_LENGTH = 8
# last_used_at is a hint for people, not an audit log: write it at most once a minute per token, so
# that a busy client does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)
# check_password_hash runs against this for unknown users, so that a wrong username costs as long as
# a wrong password (no way to learn which usernames exist from the timing).
_DUMMY_HASH = generate_password_hash("flow-dummy-password", method="scrypt")


@dataclass(frozen=True)
class UserInfo:
    """A dashboard user, without the password hash."""

    id: str
    username: str
    role: str
    disabled: bool
    created_at: str | None


@dataclass(frozen=True)
class TokenIdentity:
    """An active API token: its name (for the audit trail and approvals) and role."""

    name: str
    role: str


class TokenExpired(EngineError):
    """A known token past its ``expires_at``: refused like an unknown one, but the message says why."""

    def __init__(self, name: str, expired_at: str) -> None:
        super().__init__(f"the token {name!r} expired at {expired_at}; create a new one with `flow token create`")
        self.name = name
        self.expired_at = expired_at


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidParams([f"role {role!r} is not one of {', '.join(ROLES)}"])
    return role


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- tokens ---------------------------------------------------------------------------------------


def create_token(ctx: StoreContext, name: str, role: str,
                 expires_in: timedelta | None = None) -> tuple[str, str]:
    """Create a token, valid for ``expires_in`` (None: until revoked); ``(id, token)``. The token is
    returned only here, never stored in clear."""
    _check_role(role)
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidParams(["token name must be 1 to 200 characters"])
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidParams(["a token's lifetime must be positive"])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = new_id()
    with ctx.engine.begin() as conn:
        conn.execute(api_tokens.insert().values(
            id=token_id, user_id=None, name=name, token_hash=hash_token(token),
            prefix=token[:SHOWN_PREFIX_LENGTH], role=role, created_at=ctx.now(),
            expires_at=ctx.now() + expires_in if expires_in is not None else None,
        ))
    return token_id, token


def revoke_token(ctx: StoreContext, token_id: str) -> None:
    """Revoke a token (at once: the next request with it gets 401). Revoking twice is a no-op.

    Raises:
        NotFound: no token with this id.
    """
    with ctx.engine.begin() as conn:
        found = conn.execute(select(api_tokens.c.id).where(api_tokens.c.id == token_id)).first()
        if found is None:
            raise NotFound("token", token_id, "see `flow token list`")
        conn.execute(update(api_tokens)
                     .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                     .values(revoked_at=ctx.now()))
        if ctx.is_postgres:  # server processes drop their cached token checks at the commit
            conn.execute(text(f"NOTIFY {TOKENS_CHANNEL}"))
    cache = ctx.token_cache.get("cache")
    if cache is not None:  # this process's own, without waiting for the notification
        cache.clear()


def list_tokens(ctx: StoreContext, include_revoked: bool = True) -> list[dict[str, Any]]:
    """Every token, oldest first, with its prefix (never its hash)."""
    statement = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
    if not include_revoked:
        statement = statement.where(api_tokens.c.revoked_at.is_(None))
    with read_only(ctx.engine) as conn:
        rows = conn.execute(statement).mappings().all()
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "prefix": r["prefix"],
            "role": r["role"],
            "created_at": iso(r["created_at"]),
            "last_used_at": iso(r["last_used_at"]),
            "revoked_at": iso(r["revoked_at"]),
            "expires_at": iso(r["expires_at"]),
        }
        for r in rows
    ]


@dataclass
class _Cached:
    token_id: str
    name: str
    role: str
    last_used: datetime | None
    expires_at: datetime | None


class _TokenCache:
    """Active tokens by hash, for a server process: a check costs no query while the database
    notifications are delivered (``engine.store.listen``). A revocation NOTIFYs ``flow_tokens``
    when it commits, which empties the cache; so does every reconnection of the listener, and the
    cache is not used while the listener is down. The generation counter keeps a check that read
    the database before a revocation's notification from caching what it read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, _Cached] = {}
        self.generation = 0

    def clear(self, _payload: str | None = None) -> None:
        with self.lock:
            self.entries.clear()
            self.generation += 1


def _cache(ctx: StoreContext) -> tuple[_TokenCache, bool]:
    """The token cache of ``ctx`` and whether it may be used now (PostgreSQL, listener healthy)."""
    cache = ctx.token_cache.get("cache")
    if cache is None:
        with _CACHE_SETUP:
            cache = ctx.token_cache.get("cache")
            if cache is None:
                cache = _TokenCache()
                if ctx.is_postgres:
                    listener = ctx.notifications()
                    listener.subscribe(TOKENS_CHANNEL, cache.clear)
                    listener.on_reset(cache.clear)
                ctx.token_cache["cache"] = cache
    return cache, ctx.is_postgres and bool(ctx.notifications().healthy)


_CACHE_SETUP = threading.Lock()


def authenticate_token(ctx: StoreContext, token: str) -> TokenIdentity | None:
    """The name and role of an active token, or None (unknown or revoked).

    Raises:
        TokenExpired: a known, unrevoked token past its expiry (checked on cache hits too).
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    cache, usable = _cache(ctx)
    now = ctx.now()
    if usable:
        with cache.lock:
            hit = cache.entries.get(digest)
            generation = cache.generation
        if hit is not None:
            if hit.expires_at is not None and now >= hit.expires_at:
                raise TokenExpired(hit.name, hit.expires_at.isoformat())
            if hit.last_used is None or now - hit.last_used >= LAST_USED_RESOLUTION:
                hit.last_used = now
                _touch(ctx, hit.token_id, now)
            return TokenIdentity(name=hit.name, role=hit.role)
    else:
        generation = cache.generation
    with read_only(ctx.engine) as conn:
        row = conn.execute(
            select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.token_hash, api_tokens.c.role,
                   api_tokens.c.revoked_at, api_tokens.c.last_used_at, api_tokens.c.expires_at)
            .where(api_tokens.c.token_hash == digest)
        ).mappings().first()
    # The index finds the row by hash; comparing the hash again in constant time costs nothing and
    # keeps the check independent of how the database compares strings.
    if row is None or not hmac.compare_digest(row["token_hash"], digest) or row["revoked_at"] is not None:
        return None
    expires = aware(row["expires_at"])
    if expires is not None and now >= expires:
        raise TokenExpired(str(row["name"]), expires.isoformat())
    last = aware(row["last_used_at"])
    if last is None or now - last >= LAST_USED_RESOLUTION:
        _touch(ctx, row["id"], now)
        last = now
    if usable:
        with cache.lock:
            if cache.generation == generation:
                cache.entries[digest] = _Cached(row["id"], str(row["name"]), str(row["role"]), last, expires)
    return TokenIdentity(name=str(row["name"]), role=str(row["role"]))


def _touch(ctx: StoreContext, token_id: str, now: datetime) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now))


# --- users ----------------------------------------------------------------------------------------


def _user_info(row: Any) -> UserInfo:
    return UserInfo(id=row["id"], username=row["username"], role=row["role"], disabled=bool(row["disabled"]),
                    created_at=iso(row["created_at"]))


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidParams([f"password must be at least {MIN_PASSWORD_LENGTH} characters"])


def create_user(ctx: StoreContext, username: str, password: str, role: str) -> UserInfo:
    """Create a dashboard user.

    Raises:
        InvalidParams: bad username, short password or unknown role.
        Conflict: the username is taken.
    """
    _check_role(role)
    if not USERNAME.match(username):
        raise InvalidParams(["username must be 1 to 150 letters, digits or . _ @ -"])
    _check_password(password)
    row = {"id": new_id(), "username": username, "password_hash": generate_password_hash(password, method="scrypt"),
           "role": role, "disabled": False, "created_at": ctx.now()}
    try:
        with ctx.engine.begin() as conn:
            conn.execute(users.insert().values(**row))
    except IntegrityError:
        raise Conflict(f"user {username!r} already exists") from None
    return _user_info(row)


def authenticate_user(ctx: StoreContext, username: str, password: str) -> UserInfo | None:
    """The user if the password is right and the user is not disabled, else None."""
    with read_only(ctx.engine) as conn:
        row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(row["password_hash"], password) or row["disabled"]:
        return None
    return _user_info(row)


def _update_user(ctx: StoreContext, username: str, *, end_sessions: bool, **values: Any) -> None:
    """Change the user's row; with ``end_sessions``, end their open sessions in the same transaction,
    so that no request slips in between with the old credentials."""
    with ctx.engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise NotFound("user", username, "see `flow user list`")
        conn.execute(update(users).where(users.c.id == user_id).values(**values))
        if end_sessions:
            end_user_sessions_in(conn, str(user_id), ctx.now())


def set_password(ctx: StoreContext, username: str, password: str) -> None:
    """Replace a user's password and end their sessions. Raises NotFound or InvalidParams (too short)."""
    _check_password(password)
    _update_user(ctx, username, end_sessions=True,
                 password_hash=generate_password_hash(password, method="scrypt"))


def disable_user(ctx: StoreContext, username: str) -> None:
    """Disable a user: their password no longer logs in and their sessions end. Raises NotFound."""
    _update_user(ctx, username, end_sessions=True, disabled=True)


def enable_user(ctx: StoreContext, username: str) -> None:
    """Let a disabled user log in again (their old sessions stay ended). Raises NotFound."""
    _update_user(ctx, username, end_sessions=False, disabled=False)


def set_role(ctx: StoreContext, username: str, role: str) -> None:
    """Give a user another role; their sessions end (they log in again with it). Raises NotFound or
    InvalidParams (unknown role)."""
    _check_role(role)
    _update_user(ctx, username, end_sessions=True, role=role)


def delete_user(ctx: StoreContext, username: str) -> None:
    """Remove a user and their sessions. Raises NotFound."""
    with ctx.engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise NotFound("user", username, "see `flow user list`")
        conn.execute(sessions.delete().where(sessions.c.user_id == user_id))
        conn.execute(update(api_tokens).where(api_tokens.c.user_id == user_id).values(user_id=None))
        conn.execute(users.delete().where(users.c.id == user_id))


def list_users(ctx: StoreContext) -> list[UserInfo]:
    """Every user, by username."""
    with read_only(ctx.engine) as conn:
        rows = conn.execute(select(users).order_by(users.c.username)).mappings().all()
    return [_user_info(r) for r in rows]
