"""Bearer-token auth for the API.

Every view declares the least role it needs (``@operation(role=...)``): ``viewer`` reads,
``operator`` starts, retries, cancels, compensates and requeues, ``admin`` deploys and schedules.
A request proves a role with ``Authorization: Bearer <token>``:

- the token of ``FLOW_API_TOKEN`` is the bootstrap ``admin`` token;
- tokens made with ``flow token create --role ROLE`` are checked by the store (hashed, revocable).

Mutations always need a token. Reads need one too, unless ``FLOW_API_OPEN_READS=true``;
``GET /api/health`` and the OpenAPI document stay open (role ``public``). The embedded default
(SQLite and the in-memory broker, one person on a laptop, listening on 127.0.0.1 only) is open
unless ``FLOW_API_TOKEN`` is set; a token sent there is still checked, so roles behave the same.

A missing, unknown, revoked or expired token gets 401 (an expired one says so); a token whose role
is too low gets 403. Tokens are compared in constant time and never logged or echoed. Wrong tokens
count as failed logins of their client address (``engine/store/throttle.py``): past the limit, the
next wrong one gets 429 with ``Retry-After`` instead of 401. A right token is never held back: it
cannot be guessed, and refusing it would let anyone lock a client out by sending garbage from a
shared address.
"""

from __future__ import annotations

import hmac
from flask import current_app, request

from engine.store.auth import TokenExpired, TokenIdentity
from web.api.context import services
from web.api.errors import ApiError
from web.api.operations import Role, operation_of
from web.audit import client_address, set_actor
from web.security_policy import throttle_policy

ROLE_RANK: dict[str, int] = {"public": 0, "viewer": 1, "operator": 2, "admin": 3}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOW_TO_GET_ONE = ("Send 'Authorization: Bearer <token>': the server's FLOW_API_TOKEN (the bootstrap admin "
                  "token; set it on the server), or a token made with `flow token create --role ROLE`.")


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def identify(token: str) -> TokenIdentity | None:
    """Who ``token`` is (``admin`` for the server's FLOW_API_TOKEN), or None if Flow does not know
    it or it was revoked.

    Raises:
        ApiError: 401 for an expired token.
    """
    configured = services().settings.api_token
    if configured and hmac.compare_digest(token.encode("utf-8"), configured.encode("utf-8")):
        return TokenIdentity(name="admin", role="admin")
    try:
        return services().store.authenticate_token(token)
    except TokenExpired as exc:
        raise ApiError(401, "token_expired", f"The bearer token has expired: {exc}.",
                       {"expired_at": exc.expired_at}) from None


def _refuse_unknown_token() -> ApiError:
    """401 for a wrong token, counted against the client's address; 429 once the address is past
    the limit."""
    access = services().store.access
    policy = throttle_policy()
    address = client_address()
    wait = access.retry_after(policy, username=None, client_address=address)
    if wait is None:
        access.record_failure(policy, kind="token", username=None, client_address=address)
    else:  # already held back: not counted again, so that a flood does not grow the table
        return ApiError(429, "too_many_requests",
                        f"Too many wrong tokens from {address}; try again in {int(wait)} seconds.",
                        {"retry_after": int(wait)}, headers={"Retry-After": str(int(wait))})
    return ApiError(401, "unauthorized", "The bearer token is not valid (unknown or revoked).")


def auth_enabled() -> bool:
    """False only on the embedded default without ``FLOW_API_TOKEN``: a laptop needs no token."""
    settings = services().settings
    return bool(settings.api_token) or not settings.embedded


def reads_open() -> bool:
    """True when a read needs no token (``FLOW_API_OPEN_READS=true``, or auth is off)."""
    return not services().read_auth or not auth_enabled()


def require(role: Role) -> None:
    """Raise unless the request may act with ``role``.

    Raises:
        ApiError: 401 without a token where one is needed, or with an unknown or revoked token;
            403 when the token's role is below ``role``.
    """
    if role == "public":
        return
    is_read = request.method in READ_METHODS
    if is_read and reads_open():
        return
    token = _bearer()
    if token is None:
        if not auth_enabled():
            return
        raise ApiError(401, "unauthorized", f"This needs a token with the {role} role. {HOW_TO_GET_ONE}")
    identity = identify(token)
    if identity is None:
        raise _refuse_unknown_token()
    set_actor(identity.name, "api")
    if ROLE_RANK.get(identity.role, 0) < ROLE_RANK[role]:
        raise ApiError(403, "forbidden", f"This needs the {role} role; the token has the {identity.role} role.")


def check_request() -> None:
    """``before_request`` hook of the API blueprint: apply the role of the matched view."""
    view = current_app.view_functions.get(request.endpoint or "")
    record = operation_of(view)
    # A view without a record is a programming error the docs test catches; guard it as admin-only.
    require(record.role if record is not None else "admin")
