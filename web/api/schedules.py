"""Schedules of workflows and tasks: list them, and backfill one over a past range."""

from __future__ import annotations

from flask import Blueprint, Response

from engine.store import backfill as backfills
from web.api import schemas
from web.api.context import services
from web.api.errors import ApiError
from web.api.operations import operation
from web.api.render import json_response
from web.api.timeparse import parse_time
from web.api.validation import json_body

bp = Blueprint("schedules", __name__, url_prefix="/schedules")

NOT_FOUND = {404: ("No such schedule", "Error")}


@bp.get("")
@operation("Every schedule (from .flow files and the scheduler API) with its next fire times", tag="schedules",
           role="viewer", responses={200: ("The schedules, soonest first", "ScheduleList")})
def list_schedules() -> Response:
    return json_response({"schedules": services().schedules.list_schedules()})


@bp.post("/<schedule_id>/backfill")
@operation(
    "Backfill a schedule: one run per fire time in a past range, each fire time at most once",
    tag="schedules", role="operator", body="Backfill",
    description="Each run gets its fire time as `workflow.scheduled_at` and the backfill's id as "
                "`backfill_id`. Fire times already recorded (fired by the scheduler or by an earlier "
                "backfill) are listed in `already` and not run again, so repeating a backfill starts "
                "nothing new. With `max_parallel` the rest are queued and the scheduler starts them as "
                "earlier ones finish.",
    responses={201: ("The backfill: fire times, the fires started and queued", "BackfillResult"),
               200: ("A dry run, or a range whose fire times have all fired: nothing started", "BackfillResult"),
               400: ("Malformed body or time", "Error"), **NOT_FOUND,
               422: ("The range is empty, ends in the future, or holds more than 10,000 fire times", "Error")},
)
def backfill(schedule_id: str) -> Response:
    body = json_body(schemas.BACKFILL)
    result = backfills.backfill(
        services().schedules, schedule_id, parse_time(body["from"], "from"), parse_time(body["to"], "to"),
        max_parallel=body.get("max_parallel"), dry_run=bool(body.get("dry_run")),
    )
    return json_response(result.to_json(), 201 if result.backfill_id else 200)


@bp.get("/<schedule_id>/backfills")
@operation("The newest backfills of a schedule, with their fires counted by status", tag="schedules",
           role="viewer", responses={200: ("The backfills, newest first", "BackfillList"), **NOT_FOUND})
def list_backfills(schedule_id: str) -> Response:
    services().schedules.get(schedule_id)  # 404 for an unknown schedule rather than an empty list
    return json_response({"backfills": backfills.list_backfills(services().schedules, schedule_id)})


@bp.post("/<schedule_id>/backfills/<backfill_id>/cancel")
@operation(
    "Cancel a backfill: drop its queued fires (their runs never start); runs it started go on",
    tag="schedules", role="operator",
    responses={200: ("How many queued fires were dropped", "BackfillCancelled"),
               404: ("No such schedule or backfill", "Error")},
)
def cancel_backfill(schedule_id: str, backfill_id: str) -> Response:
    services().schedules.get(schedule_id)  # 404 names the schedule when it is the one missing
    try:
        dropped = backfills.cancel_backfill(services().schedules, schedule_id, backfill_id)
    except backfills.BackfillNotFound as exc:
        raise ApiError(404, "not_found", f"{exc} for schedule {schedule_id!r}") from None
    return json_response({"backfill_id": backfill_id, "dropped": dropped})
