"""Bearer-token auth for the API.

Every mutation needs ``Authorization: Bearer <token>``; reads are open unless ``FLOW_API_READ_AUTH``
is true (``GET /api/health`` and the OpenAPI document stay open). The token of ``FLOW_API_TOKEN`` has
the ``admin`` role. With no token configured, mutations are refused and the message says to set
``FLOW_API_TOKEN``, except on the embedded default (SQLite and the in-memory broker), which only
a local laptop runs: there no token is needed. Tokens are compared in constant time and never logged.
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


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _role_of(token: str) -> str | None:
    """The role of ``token``, or None if Flow does not know it."""
    configured = services().settings.api_token
    if configured and hmac.compare_digest(token.encode("utf-8"), configured.encode("utf-8")):
        return "admin"
    # Tokens created with `flow token create` (stored hashed) are checked by the store when it can.
    authenticate: Any = getattr(services().store, "authenticate_token", None)
    if callable(authenticate):
        role = authenticate(token)
        return str(role) if role else None
    return None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def require(role: Role) -> None:
    """Raise unless the request may act with ``role``."""
    if role == "public":
        return
    settings = services().settings
    is_read = request.method in READ_METHODS
    if is_read and not services().read_auth:
        return
    token = _bearer()
    if not settings.api_token and token is None and not callable(getattr(services().store, "authenticate_token", None)):
        if settings.embedded:
            return  # a laptop on the embedded default: nothing to protect from but itself
        raise _unauthorized("This API needs a token: set FLOW_API_TOKEN on the server and send "
                            "'Authorization: Bearer <token>'.")
    if token is None:
        raise _unauthorized("Send 'Authorization: Bearer <token>' (the server's FLOW_API_TOKEN).")
    granted = _role_of(token)
    if granted is None:
        raise _unauthorized("The bearer token is not valid.")
    if ROLE_RANK.get(granted, 0) < ROLE_RANK[role]:
        raise ApiError(403, "forbidden", f"This needs the {role} role; the token has {granted}.")


def check_request() -> None:
    """``before_request`` hook of the API blueprint: apply the role of the matched view."""
    view = current_app.view_functions.get(request.endpoint or "")
    record = operation_of(view)
    # A view without a record is a programming error the docs test catches; guard it as admin-only.
    require(record.role if record is not None else "admin")
