"""What the web layer records in the audit trail, and who it says did it.

Every mutating view of the API and the dashboard is an action named in ``ACTIONS``; the blueprints'
``after_request`` hook (``record_response``) writes one row per such request, whatever its outcome,
with the actor the auth checks left on ``flask.g`` (``set_actor``). Logins and logouts are written by
their views (``record_action``), which know more than the status code says.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, g, request

from engine.core.errors import NotFound
from engine.store.audit import AuditRecord

log = logging.getLogger("flow.audit")

# Endpoint → action. One name per action whichever door it came through (API or dashboard).
ACTIONS: dict[str, str] = {
    "api.workflows.deploy": "workflow.deploy",
    "api.runs.start": "run.start",
    "dashboard.workflows.start": "run.start",
    "api.runs.start_batch": "run.start_batch",
    "api.runs.cancel": "run.cancel",
    "dashboard.runs.cancel": "run.cancel",
    "api.runs.retry": "run.retry",
    "dashboard.runs.retry": "run.retry",
    "api.runs.compensate": "run.compensate",
    "dashboard.runs.compensate": "run.compensate",
    "api.runs.approve": "step.approve",
    "dashboard.runs.approve": "step.approve",
    "api.tasks.create": "task.create",
    "api.tasks.retry": "task.retry",
    "dashboard.runs.retry_task": "task.retry",
    "api.tasks.compensate": "task.compensate",
    "api.scheduler.create_scheduled": "schedule.create",
    "api.scheduler.create_recurring": "schedule.create",
    "dashboard.schedules.pause": "schedule.pause",
    "dashboard.schedules.resume": "schedule.resume",
    "api.schedules.backfill": "schedule.backfill",
    "dashboard.schedules.backfill": "schedule.backfill",
    "api.schedules.cancel_backfill": "backfill.cancel",
    "dashboard.schedules.cancel_backfill": "backfill.cancel",
    "api.dead_letters.requeue": "dead_letter.requeue",
    "dashboard.dead_letters.requeue": "dead_letter.requeue",
    "api.dead_letters.discard": "dead_letter.discard",
    "dashboard.dead_letters.discard": "dead_letter.discard",
}
# Mutating endpoints that are not operator actions (a dry-run compile) or are recorded by their view.
NOT_ACTIONS = frozenset({"api.workflows.check", "dashboard.auth.login", "dashboard.auth.logout"})
# The audited actions of `flow token` and `flow user` (written by flow/cli/auth.py), and the logins.
CLI_ACTIONS = ("token.create", "token.revoke", "user.create", "user.disable", "user.enable", "user.passwd",
               "user.role", "user.delete", "user.logout")
SESSION_ACTIONS = ("login", "logout")
REFUSED_STATUSES = frozenset({400, 401, 403, 413, 415, 429})
TARGET_ARGS = (("run_id", "run"), ("task_id", "task"), ("letter_id", "dead letter"),
               ("schedule_id", "schedule"), ("name", "workflow"))


def client_address() -> str:
    """The client's address: the peer's, or the one a trusted proxy reported (``FLOW_TRUSTED_PROXIES``)."""
    return request.remote_addr or "unknown"


def set_actor(name: str, via: str) -> None:
    """Who the current request acts as (called by the auth checks)."""
    g.flow_actor = (name, via)


def actor() -> tuple[str, str]:
    """``(name, via)`` of the current request; anonymous when no check named anyone."""
    found: tuple[str, str] | None = g.get("flow_actor")
    if found is not None:
        return found
    return ("anonymous", "api" if request.blueprint and request.blueprint.startswith("api") else "dashboard")


def note_failure(message: str) -> None:
    """The view could not do the action although it answers 2xx/3xx (the dashboard's redirect with
    a flash message): the audit row says failed, with ``message``."""
    g.flow_action_failure = message


def note_refusal(message: str) -> None:
    """The request was turned away although it answers 3xx (the dashboard's redirect to the login
    page): the audit row says refused, with ``message``."""
    g.flow_action_refusal = message


def action_record(outcome: str = "ok", *, status: int | None = None) -> AuditRecord | None:
    """The current request's audit row, for a view that commits it with its own writes (the run
    start); None when the request is not an action. The view then calls ``mark_recorded``."""
    action = ACTIONS.get(request.endpoint or "")
    if action is None:
        return None
    name, via = actor()
    target, run_id = _target_of_args(action)
    return AuditRecord(actor=name, via=via, action=action, outcome=outcome, target=target, run_id=run_id,
                       client_address=client_address(), status=status)


def mark_recorded() -> None:
    """The view committed the request's audit row itself: ``record_response`` writes none."""
    g.flow_action_recorded = True


def record_action(action: str, outcome: str, *, actor_name: str | None = None, target: str | None = None,
                  run_id: str | None = None, status: int | None = None, detail: str | None = None) -> None:
    """Write one audit row for the current request. A failure to write is logged, not raised: the
    action itself has happened and its answer must reach the client."""
    from web.api.context import store  # here: web.api's auth imports this module

    name, via = actor()
    event = AuditRecord(actor=actor_name or name, via=via, action=action, outcome=outcome, target=target,
                        run_id=run_id, client_address=client_address(), status=status, detail=detail)
    try:
        store().access.record(event)
    except Exception:  # the database may be down; the action's own error is reported elsewhere
        log.exception("could not write the audit row for %s by %s", action, event.actor)


def _outcome(status: int) -> str:
    if g.get("flow_action_refusal"):
        return "refused"
    if status < 400:
        return "failed" if g.get("flow_action_failure") else "ok"
    return "refused" if status in REFUSED_STATUSES else "failed"


def _target_of_args(action: str) -> tuple[str | None, str | None]:
    """``(target, run_id)`` as the URL names them."""
    args: dict[str, Any] = dict(request.view_args or {})
    target = next((f"{label} {args[key]}" for key, label in TARGET_ARGS if key in args), None)
    run_id: str | None = args.get("run_id")
    if action == "step.approve" and "step" in args:
        target = f"run {args['run_id']} step {args['step']}"
    return target, run_id


def _target(action: str, response: Response) -> tuple[str | None, str | None]:
    """``(target, run_id)``: the resource the URL names, and the run it belongs to (if any)."""
    target, run_id = _target_of_args(action)
    body = response.get_json(silent=True) if response.is_json and response.status_code < 300 else None
    if isinstance(body, dict):
        if action == "run.start" and isinstance(body.get("id"), str):
            run_id = body["id"]
            target = f"run {run_id}"
        elif action == "workflow.deploy" and isinstance(body.get("name"), str):
            target = f"workflow {body['name']}"
    task_id = (request.view_args or {}).get("task_id")
    if run_id is None and task_id is not None:
        from web.api.context import store

        try:
            run_id = store().get_task(task_id).get("run_id")
        except NotFound:
            run_id = None
    return target, run_id


def record_response(response: Response) -> Response:
    """``after_request`` of the API and dashboard blueprints: an audit row for each action."""
    action = ACTIONS.get(request.endpoint or "")
    if action is None or request.method in ("GET", "HEAD", "OPTIONS") or g.get("flow_action_recorded"):
        return response
    target, run_id = _target(action, response)
    noted = g.get("flow_action_refusal") or g.get("flow_action_failure")
    detail = noted or (_error_message(response) if response.status_code >= 400 else None)
    record_action(action, _outcome(response.status_code), target=target, run_id=run_id,
                  status=response.status_code, detail=detail)
    return response


def _error_message(response: Response) -> str | None:
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))[:2000]
    return None
