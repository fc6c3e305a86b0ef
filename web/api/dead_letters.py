"""Dead letters: tasks that ran out of attempts. List, inspect, requeue, discard."""

from __future__ import annotations

from flask import Blueprint, Response

from web.api.context import store
from web.api.operations import operation
from web.api.render import json_response

bp = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")

ERRORS = {404: ("No such dead letter", "Error"), 409: ("Already requeued or discarded", "Error")}


@bp.get("")
@operation("Dead letters, newest first", tag="dead-letters", role="viewer",
           responses={200: ("The dead letters", "DeadLetterList")})
def list_all() -> Response:
    return json_response({"dead_letters": list(store().list_dead_letters())})


@bp.get("/<letter_id>")
@operation("One dead letter: the task, its last error and the message", tag="dead-letters", role="viewer",
           responses={200: ("The dead letter", "DeadLetter"), 404: ERRORS[404]})
def get(letter_id: str) -> Response:
    return json_response(store().get_dead_letter(letter_id))


@bp.post("/<letter_id>/requeue")
@operation("Requeue a dead letter: its task runs again with fresh attempts", tag="dead-letters",
           role="operator", responses={200: ("The dead letter, requeued", "DeadLetter"), **ERRORS})
def requeue(letter_id: str) -> Response:
    store().requeue_dead_letter(letter_id)
    return json_response(store().get_dead_letter(letter_id))


@bp.delete("/<letter_id>")
@operation("Discard a dead letter", tag="dead-letters", role="operator",
           responses={204: ("Discarded", None), **ERRORS})
def discard(letter_id: str) -> Response:
    store().discard_dead_letter(letter_id)
    return Response(status=204)
