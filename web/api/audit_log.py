"""``GET /api/audit``: the audit trail of operator actions, newest first (admin only)."""

from __future__ import annotations

from flask import Blueprint, Response

from engine.core.errors import InvalidParams
from web.api.context import store
from web.api.errors import ApiError
from web.api.operations import operation
from web.api.render import json_response
from web.api.timeparse import parse_time
from web.api.validation import query_args

bp = Blueprint("audit", __name__, url_prefix="/audit")

AUDIT_QUERY = {
    "type": "object",
    "properties": {
        "actor": {"type": "string", "minLength": 1, "maxLength": 200,
                  "description": "Who: a user's or token's name (`admin` is FLOW_API_TOKEN)."},
        "action": {"type": "string", "minLength": 1, "maxLength": 64,
                   "description": "What: an action such as `run.cancel`, or an area ending in `.` (`run.`)."},
        "run_id": {"type": "string", "minLength": 1, "maxLength": 36},
        "since": {"type": "string", "format": "date-time", "description": "At or after (ISO 8601)."},
        "until": {"type": "string", "format": "date-time", "description": "Before (ISO 8601)."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
        "cursor": {"type": "integer", "minimum": 1, "description": "`next_cursor` of the previous page."},
    },
    "additionalProperties": False,
}


@bp.get("")
@operation("The audit trail: who did what, to what, when, from where, and the outcome", tag="audit",
           role="admin", query=AUDIT_QUERY,
           description="One row per operator action through the API, the dashboard or `flow token`/`flow user`, "
                       "and per login (ok, failed or refused by the throttle). Newest first; page with "
                       "`cursor`. Rows older than FLOW_RETENTION_DAYS are pruned with the finished work.",
           responses={200: ("The audit rows", "AuditPage"), 400: ("Bad query parameter", "Error"),
                      401: ("No token, or not a valid one", "Error"), 403: ("Not an admin token", "Error")})
def list_events() -> Response:
    args = query_args(AUDIT_QUERY)
    try:
        page = store().access.list_audit(
            actor=args.get("actor"), action=args.get("action"), run_id=args.get("run_id"),
            since=parse_time(args["since"], "since") if "since" in args else None,
            until=parse_time(args["until"], "until") if "until" in args else None,
            before=args.get("cursor"), limit=args.get("limit", 100),
        )
    except InvalidParams as exc:
        raise ApiError(400, "invalid_query", "; ".join(exc.problems), exc.problems) from None
    return json_response(page)
