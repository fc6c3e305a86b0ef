"""The JSON API blueprint ``api``, mounted at ``/api``: one child blueprint per area.

Views are thin: parse the request (``validation``), call the engine store, answer JSON (``render``).
Errors become the JSON envelope in ``errors``; ``auth`` checks the token before every view.
"""

from __future__ import annotations

from flask import Blueprint

from web.api import audit_log, dead_letters, health, openapi, queue_manager, runs, scheduler, schedules, tasks, workflows
from web.api.auth import check_request
from web.api.validation import check_url_text
from web.audit import record_response

AREAS = (health, queue_manager, tasks, scheduler, schedules, workflows, runs, dead_letters, audit_log, openapi)


def create_blueprint() -> Blueprint:
    """A fresh ``api`` blueprint with every area registered (one per app)."""
    api = Blueprint("api", __name__, url_prefix="/api")
    api.before_request(check_request)
    api.before_request(check_url_text)
    api.after_request(record_response)
    for area in AREAS:
        api.register_blueprint(area.bp)
    return api
