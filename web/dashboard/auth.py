"""Log in and out. Users are managed with ``flow user create`` and checked by the store."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, session, url_for

from web.api.context import store
from web.dashboard.security import log_in

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path of this site (``/runs?x=1``), never ``//evil.example`` or ``https://…``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.overview.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; POST checks the password with ``store.authenticate_user``."""
    next_url = request.values.get("next") or ""
    if request.method == "GET":
        return render_template("login.html", next=next_url, error=None, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    authenticate = getattr(store(), "authenticate_user", None)
    if not callable(authenticate):
        return render_template("login.html", next=next_url, username=username,
                               error="This Flow has no user accounts yet; upgrade it to log in."), 503
    user = authenticate(username, password) if username and password else None
    if user is None:
        return render_template("login.html", next=next_url, username=username,
                               error="Wrong username or password."), 401
    log_in(str(getattr(user, "username", username)), str(getattr(user, "role", "viewer")))
    return redirect(_safe_next(next_url), 303)


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("dashboard.auth.login"), 303)  # type: ignore[return-value]
