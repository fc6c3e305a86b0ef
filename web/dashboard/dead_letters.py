"""Dead letters: tasks that ran out of attempts. Inspect, requeue, discard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, flash, redirect, request, url_for

from engine.core.errors import Conflict, IllegalTransition
from web.api.context import store
from web.audit import note_failure
from web.dashboard.render import is_htmx, page

bp = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")


@bp.get("")
def index() -> Response:
    include_closed = request.args.get("closed") == "1"
    letters = store().list_dead_letters(include_closed=include_closed)
    return page("dead_letters/index.html", "dead_letters/_table.html", letters=letters,
                include_closed=include_closed)


@bp.get("/<letter_id>")
def show(letter_id: str) -> Response:
    return page("dead_letters/show.html", "dead_letters/_letter.html",
                letter=store().get_dead_letter(letter_id), notice=None)


def _act(letter_id: str, action: Callable[[], Any], done: str) -> Any:
    status = 200
    try:
        action()
        notice = {"kind": "ok", "text": done}
    except (IllegalTransition, Conflict) as exc:
        status, notice = 409, {"kind": "error", "text": f"Not done: {exc}"}
        note_failure(notice["text"])
    if not is_htmx():
        flash(notice["text"], notice["kind"])
        return redirect(url_for(".show", letter_id=letter_id), 303)
    return page("dead_letters/show.html", "dead_letters/_letter.html", status=status,
                letter=store().get_dead_letter(letter_id), notice=notice)


@bp.post("/<letter_id>/requeue")
def requeue(letter_id: str) -> Any:
    return _act(letter_id, lambda: store().requeue_dead_letter(letter_id),
                "Requeued: the task runs again with fresh attempts.")


@bp.post("/<letter_id>/discard")
def discard(letter_id: str) -> Any:
    return _act(letter_id, lambda: store().discard_dead_letter(letter_id), "Discarded.")
