"""The audit trail page (admins only): operator actions and logins, filtered by who, what and when."""

from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, request

from engine.core.errors import InvalidParams
from web.api.context import store
from web.audit import ACTIONS, CLI_ACTIONS, SESSION_ACTIONS
from web.dashboard.runs import _time_arg
from web.dashboard.security import is_admin

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE_SIZE = 100
ACTION_NAMES = sorted({*ACTIONS.values(), *CLI_ACTIONS, *SESSION_ACTIONS})


@bp.get("")
def index() -> Response:
    """The newest actions first, ``PAGE_SIZE`` a page."""
    if not is_admin():
        abort(403, "The audit trail is for admins.")
    problems: list[str] = []
    filters = {key: request.args.get(key, "").strip() for key in ("actor", "action", "since", "until")}
    since, until = _time_arg("since", problems), _time_arg("until", problems)
    raw_cursor = request.args.get("cursor", "")
    cursor = int(raw_cursor) if raw_cursor.isdigit() else None
    events: list[dict[str, object]] = []
    next_cursor = None
    if not problems:
        try:
            page = store().access.list_audit(actor=filters["actor"] or None, action=filters["action"] or None,
                                             since=since, until=until, before=cursor, limit=PAGE_SIZE)
            events, next_cursor = page["events"], page["next_cursor"]
        except InvalidParams as exc:
            problems.extend(exc.problems)
    active = {key: value for key, value in filters.items() if value}
    return render_template("audit/index.html", audit=events, next_cursor=next_cursor, filters=filters,
                           active=active, problems=problems, actions=ACTION_NAMES)  # type: ignore[return-value]
