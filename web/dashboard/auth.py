"""Log in and out. Users are managed with ``flow user``; passwords are checked by the store, and
failed logins are throttled per user and per client address (``engine/store/throttle.py``)."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from web.api.context import store
from web.audit import client_address, record_action
from web.dashboard.security import log_in, log_out
from web.security_policy import throttle_policy

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path of this site (``/runs?x=1``), never ``//evil.example`` or ``https://…``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.overview.index")


def _wait_text(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{int(seconds)} seconds" if seconds < 120 else f"{minutes} minutes"


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; POST checks the throttle, then the password."""
    next_url = request.values.get("next") or ""
    if request.method == "GET":
        return render_template("login.html", next=next_url, error=None, username="")
    username = request.form.get("username", "").strip()[:150]
    password = request.form.get("password", "")
    access, policy, address = store().access, throttle_policy(), client_address()
    wait = access.retry_after(policy, username=username or None, client_address=address)
    if wait is not None:
        record_action("login", "refused", actor_name=username or "anonymous", status=429,
                      detail="too many failed logins")
        page = render_template("login.html", next=next_url, username=username,
                               error=f"Too many failed logins for this user or from this address. "
                                     f"Try again in {_wait_text(wait)}.")
        return page, 429, {"Retry-After": str(int(wait))}
    user = store().authenticate_user(username, password) if username and password else None
    if user is None:
        access.record_failure(policy, kind="password", username=username or None, client_address=address)
        record_action("login", "failed", actor_name=username or "anonymous", status=401,
                      detail="wrong username or password")
        return render_template("login.html", next=next_url, username=username,
                               error="Wrong username or password."), 401
    access.clear_failures(user.username)
    log_in(user.username, user.role)
    record_action("login", "ok", status=303)
    return redirect(_safe_next(next_url), 303)


@bp.post("/logout")
def logout() -> Response:
    """End the session on the server (a saved copy of the cookie no longer works) and in the browser."""
    record_action("logout", "ok", status=303)
    log_out()
    return redirect(url_for("dashboard.auth.login"), 303)  # type: ignore[return-value]
