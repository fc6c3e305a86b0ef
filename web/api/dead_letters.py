"""Dead letters: tasks that ran out of attempts. List, inspect, requeue, discard."""

from __future__ import annotations

from flask import Blueprint, Response

from web.api.context import store
from web.api.operations import operation
from web.api.render import json_response
from web.api.validation import query_args

bp = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")

LIST_QUERY = {
    "type": "object",
    "properties": {
        "include_closed": {"type": "string", "enum": ["true", "false"], "default": "false",
                           "description": "true: also the dead letters already requeued or discarded."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
    },
}
ERRORS = {404: ("No such dead letter", "Error"), 409: ("Already requeued or discarded", "Error")}


@bp.get("")
@operation("Dead letters, newest first: the open ones, or all with include_closed=true",
           tag="dead-letters", role="viewer", query=LIST_QUERY,
           responses={200: ("The dead letters", "DeadLetterList"), 400: ("Bad query parameter", "Error")})
def list_all() -> Response:
    args = query_args(LIST_QUERY)
    letters = store().list_dead_letters(include_closed=args.get("include_closed") == "true",
                                        limit=args.get("limit", 100))
    return json_response({"dead_letters": list(letters)})


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
