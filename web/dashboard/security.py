"""Login, CSRF and the security headers of the dashboard.

- The session lives on the server (``engine/store/sessions.py``): the cookie ``flow_session``
  (signed with ``FLOW_SECRET_KEY``; HttpOnly, SameSite=Lax, Secure over HTTPS) carries only the
  session's key and a CSRF token. Every request checks the session and its user in one query, so a
  logout, ``flow user logout``, a disabled user, a new role or a new password refuses the next
  request, which is sent to the login page with the reason. A page needs a login; an htmx request
  without one is told to load the login page.
- Every mutating request (anything but GET/HEAD/OPTIONS) needs the token, as the ``csrf_token`` form
  field or the ``X-CSRF-Token`` header that htmx sends (``hx-headers`` on ``<body>``); else 400.
  GET never mutates, so a link or an ``<img>`` elsewhere cannot act for the user.
- Mutations need the ``operator`` or ``admin`` role; ``viewer`` reads only.
- The Content-Security-Policy allows scripts, styles and images from this origin only: no inline
  script, no inline style (htmx is told not to inject its indicator style, see ``layout.html``).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from engine.core.errors import Conflict, IllegalTransition, InvalidParams, NotFound
from engine.store.sessions import ActiveSession
from web.api.context import store
from web.audit import client_address, note_refusal, set_actor
from web.security_policy import session_policy

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_KEY = "sid"
LOCAL_USER = {"username": "local", "role": "admin"}
OPEN_ENDPOINTS = frozenset({"dashboard.auth.login"})
ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}

CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
))


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(token)


def current_user() -> dict[str, str] | None:
    """The user this request was checked as (``require_login``), or None."""
    user: dict[str, str] | None = g.get("flow_user")
    return user


def can_act() -> bool:
    """Whether the logged-in user may mutate (operator or admin)."""
    user = current_user()
    return bool(user) and ROLE_RANK.get(user["role"], 0) >= ROLE_RANK["operator"]  # type: ignore[index]


def is_admin() -> bool:
    """Whether the logged-in user is an admin (the audit trail, client addresses)."""
    user = current_user()
    return bool(user) and user["role"] == "admin"  # type: ignore[index]


def log_in(username: str, role: str) -> None:
    """A fresh server-side session (no fixation: a new key and a new CSRF token); the old one, if
    any, is ended."""
    log_out()
    session[SESSION_KEY] = store().access.start_session(username, client_address())
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    _act_as(username, role)


def log_out() -> None:
    """End this browser's session on the server and forget the cookie."""
    key = session.get(SESSION_KEY)
    if isinstance(key, str):
        store().access.end_session(key)
    session.clear()


def _act_as(username: str, role: str) -> None:
    g.flow_user = {"username": username, "role": role}
    set_actor(username, "dashboard")


def _checked_session() -> str | None:
    """Let the request act as the session's user; the reason the session was refused, if it was."""
    key = session.get(SESSION_KEY)
    if not isinstance(key, str):
        return None
    check = store().access.check_session(key, session_policy())
    if isinstance(check, ActiveSession):
        _act_as(check.username, check.role)
        return None
    session.pop(SESSION_KEY, None)  # the CSRF token stays, so that the login form still posts
    return str(check.reason)


def require_login() -> Response | None:
    """``before_request``: send an anonymous visitor to the login page.

    On the embedded default without ``FLOW_API_TOKEN`` (a laptop: SQLite, in-memory broker, bound to
    127.0.0.1) the API needs no token, and the dashboard likewise signs the visitor in as the local
    admin, so that ``make run`` shows the dashboard at once. CSRF tokens still apply.
    """
    from web.api.auth import auth_enabled

    if not auth_enabled():
        csrf_token()
        _act_as(LOCAL_USER["username"], LOCAL_USER["role"])
        return None
    refused = _checked_session()
    if request.endpoint in OPEN_ENDPOINTS or current_user():
        return None
    if refused:
        flash(refused, "error")
    note_refusal(refused or "not logged in")
    target = url_for("dashboard.auth.login", next=request.full_path if request.method == "GET" else None)
    if request.headers.get("HX-Request"):
        response = Response(status=401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, 303)  # type: ignore[return-value]


def check_csrf() -> None:
    """``before_request``: refuse a mutating request without the session's token (400), and one by a
    viewer (403)."""
    if request.method in SAFE_METHODS:
        return
    expected = session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    if not expected or not hmac.compare_digest(str(expected).encode(), given.encode()):
        abort(400, "The form has expired or did not come from this dashboard (CSRF token missing or "
                   "wrong). Reload the page and try again.")
    if request.endpoint not in OPEN_ENDPOINTS and request.endpoint != "dashboard.auth.logout" and not can_act():
        abort(403, "Your role can only read; ask an admin for the operator role.")


def add_headers(response: Response) -> Response:
    """``after_request`` of the app: the CSP and friends on every non-API answer."""
    if request.path.startswith("/api/") or request.path == "/api":
        return response
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        response.vary.add("HX-Request")
        response.vary.add("Cookie")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _error_page(status: int, message: str) -> tuple[str, int]:
    template = "_error.html" if request.headers.get("HX-Request") else "error.html"
    return render_template(template, status=status, message=message), status


def register_error_pages(bp: Blueprint) -> None:
    """Engine errors and HTTP errors of the dashboard's views as dashboard pages (or fragments)."""

    @bp.errorhandler(NotFound)
    def not_found(exc: NotFound) -> Any:
        return _error_page(404, str(exc))

    @bp.errorhandler(IllegalTransition)
    @bp.errorhandler(Conflict)
    def conflict(exc: Exception) -> Any:
        return _error_page(409, str(exc))

    @bp.errorhandler(InvalidParams)
    def invalid(exc: InvalidParams) -> Any:
        return _error_page(400, "; ".join(exc.problems))

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return _error_page(exc.code or 500, exc.description or exc.name)
