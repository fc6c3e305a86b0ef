"""Schedules: what fires next, and pause / resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, flash, redirect, url_for

from engine.store.schedule_values import ScheduleNotFound
from web.api.context import services
from web.audit import note_failure
from web.dashboard.render import is_htmx, page

bp = Blueprint("schedules", __name__, url_prefix="/schedules")


def _rows() -> list[dict[str, Any]]:
    return [info.to_json() for info in services().schedules.list_schedules()]


@bp.get("")
def index() -> Response:
    return page("schedules/index.html", "schedules/_table.html", schedules=_rows(), notice=None)


def _act(action: Callable[[], None], done: str) -> Any:
    status = 200
    try:
        action()
        notice = {"kind": "ok", "text": done}
    except ScheduleNotFound as exc:
        status, notice = 404, {"kind": "error", "text": str(exc)}
        note_failure(notice["text"])
    if not is_htmx():
        flash(notice["text"], notice["kind"])
        return redirect(url_for(".index"), 303)
    return page("schedules/index.html", "schedules/_table.html", status=status, schedules=_rows(), notice=notice)


@bp.post("/<schedule_id>/pause")
def pause(schedule_id: str) -> Any:
    return _act(lambda: services().schedules.pause(schedule_id), "Paused: it will not fire until resumed.")


@bp.post("/<schedule_id>/resume")
def resume(schedule_id: str) -> Any:
    return _act(lambda: services().schedules.resume(schedule_id), "Resumed: it fires again from now on.")
