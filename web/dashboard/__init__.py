"""The dashboard: server-rendered pages (Jinja2) with htmx for live updates, one blueprint per area.

``init_app(app)`` mounts it at ``/`` (``web.create_app`` calls it). Every page needs a login; every
mutating request needs the session's CSRF token; responses carry a Content-Security-Policy without
``unsafe-inline``. One URL serves a page and its fragment: views branch on ``HX-Request``
(``render.page``). The views stay thin over ``engine.store.Store`` and ``engine.store.dashboard``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

from web.audit import record_response
from web.dashboard import audit, auth, dead_letters, overview, runs, schedules, security, workflows
from web.dashboard.render import register_template_helpers

AREAS = (auth, overview, workflows, runs, dead_letters, schedules, audit)


def create_blueprint() -> Blueprint:
    """A fresh ``dashboard`` blueprint with every area registered (one per app)."""
    dashboard = Blueprint("dashboard", __name__)
    dashboard.before_request(security.require_login)
    dashboard.before_request(security.check_csrf)
    dashboard.after_request(record_response)
    for area in AREAS:
        dashboard.register_blueprint(area.bp)
    security.register_error_pages(dashboard)
    return dashboard


def init_app(app: Flask) -> None:
    """Mount the dashboard on ``app``: blueprints, headers, template helpers (the session cookie's
    flags are set by ``web.create_app``)."""
    app.register_blueprint(create_blueprint())
    app.after_request(security.add_headers)
    register_template_helpers(app)


__all__: list[Any] = ["init_app", "create_blueprint"]
