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

A missing, unknown or revoked token gets 401; a token whose role is too low gets 403. Tokens are
compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import current_app, request

from web.api.context import services
from web.api.errors import ApiError
from web.api.operations import Role, operation_of

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


def _role_of(token: str) -> str | None:
    """The role of ``token``, or None if Flow does not know it (or it was revoked)."""
    configured = services().settings.api_token
    if configured and hmac.compare_digest(token.encode("utf-8"), configured.encode("utf-8")):
        return "admin"
    authenticate: Any = getattr(services().store, "authenticate_token", None)
    if callable(authenticate):
        role = authenticate(token)
        return str(role) if role else None
    return None


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
    granted = _role_of(token)
    if granted is None:
        raise ApiError(401, "unauthorized", "The bearer token is not valid (unknown or revoked).")
    if ROLE_RANK.get(granted, 0) < ROLE_RANK[role]:
        raise ApiError(403, "forbidden", f"This needs the {role} role; the token has the {granted} role.")


def check_request() -> None:
    """``before_request`` hook of the API blueprint: apply the role of the matched view."""
    view = current_app.view_functions.get(request.endpoint or "")
    record = operation_of(view)
    # A view without a record is a programming error the docs test catches; guard it as admin-only.
    require(record.role if record is not None else "admin")
