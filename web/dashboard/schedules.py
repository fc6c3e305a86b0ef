"""Schedules: what fires next, pause / resume, and backfill a past range."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datetime import UTC, datetime

from flask import Blueprint, Response, flash, redirect, request, url_for

from engine.core.timing import ScheduleError
from engine.store import backfill as backfills
from engine.store.backfill import BackfillResult
from engine.store.schedule_values import ScheduleNotFound
from web.api.context import services
from web.audit import note_failure
from web.dashboard.render import is_htmx, page

bp = Blueprint("schedules", __name__, url_prefix="/schedules")


RECENT_BACKFILLS = 10


def _rows() -> list[dict[str, Any]]:
    return [info.to_json() for info in services().schedules.list_schedules()]


def _listing() -> dict[str, Any]:
    """The schedules and the newest backfills (of any schedule), named by their schedule."""
    schedules = _rows()
    names = {s["id"]: s["name"] for s in schedules}
    recent = backfills.list_backfills(services().schedules, None, limit=RECENT_BACKFILLS)
    return {"schedules": schedules, "backfills": [{**b, "schedule": names.get(b["schedule_id"], "?")} for b in recent]}


@bp.get("")
def index() -> Response:
    return page("schedules/index.html", "schedules/_table.html", **_listing(), notice=None)


def _act(action: Callable[[], Any], done: str | Callable[[Any], str]) -> Any:
    status = 200
    try:
        outcome = action()
        notice = {"kind": "ok", "text": done(outcome) if callable(done) else done}
    except (ScheduleNotFound, backfills.BackfillNotFound) as exc:
        status, notice = 404, {"kind": "error", "text": str(exc)}
        note_failure(notice["text"])
    except (ScheduleError, ValueError) as exc:
        status, notice = 422, {"kind": "error", "text": f"Not backfilled: {exc}"}
        note_failure(notice["text"])
    if not is_htmx():
        flash(notice["text"], notice["kind"])
        return redirect(url_for(".index"), 303)
    return page("schedules/index.html", "schedules/_table.html", status=status, **_listing(), notice=notice)


@bp.post("/<schedule_id>/pause")
def pause(schedule_id: str) -> Any:
    return _act(lambda: services().schedules.pause(schedule_id), "Paused: it will not fire until resumed.")


@bp.post("/<schedule_id>/resume")
def resume(schedule_id: str) -> Any:
    return _act(lambda: services().schedules.resume(schedule_id), "Resumed: it fires again from now on.")


@bp.post("/<schedule_id>/backfill")
def backfill(schedule_id: str) -> Any:
    """Backfill from the form: ``from`` and ``to`` (UTC), ``max_parallel``, ``dry_run``."""
    def run() -> BackfillResult:
        start, end = _form_time("from"), _form_time("to")
        raw = request.form.get("max_parallel", "").strip()
        if raw and not raw.isdigit():
            raise ValueError(f"at most in flight: {raw!r} is not a whole number")
        return backfills.backfill(services().schedules, schedule_id, start, end,
                                  max_parallel=int(raw) if raw else None, dry_run=bool(request.form.get("dry_run")))

    return _act(run, _summary)


@bp.post("/<schedule_id>/backfills/<backfill_id>/cancel")
def cancel_backfill(schedule_id: str, backfill_id: str) -> Any:
    return _act(lambda: backfills.cancel_backfill(services().schedules, schedule_id, backfill_id), lambda dropped: f"Backfill cancelled: {dropped} queued fire{'s' if dropped != 1 else ''} "
                                     "dropped; the runs it started go on.")


def _form_time(name: str) -> datetime:
    raw = request.form.get(name, "").strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a time like 2030-01-31T09:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _summary(result: BackfillResult) -> str:
    head = (f"{len(result.fire_times)} fire time{'s' if len(result.fire_times) != 1 else ''} in the range, "
            f"{len(result.already)} already fired.")
    if result.dry_run:
        shown = ", ".join(t.strftime("%Y-%m-%d %H:%M:%S") for t in result.new[:10])
        more = f" and {len(result.new) - 10} more" if len(result.new) > 10 else ""
        return f"Dry run: {head} Would run {len(result.new)}" + (f": {shown}{more}." if result.new else ".")
    if not result.backfill_id:
        return f"{head} Nothing to start."
    failed = sum(1 for s in result.started if s["error"])
    return (f"Backfill started: {head} {len(result.started) - failed} started, {result.queued} queued"
            + (f", {failed} could not start" if failed else "") + ". They show as backfill in the runs list.")
