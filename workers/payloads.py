"""A task's payload on the worker: secrets resolved (only here, never stored), and a handler's
output checked to be JSON."""

from __future__ import annotations

import json
from typing import Any

from dsl import evaluator
from engine.core.contracts import Failure
from engine.settings import Settings
from workers.handler_api import HandlerError


class Secrets(dict[str, str]):
    """The ``secrets`` root: reading a secret that is not configured is an error, not null.

    The language reads a missing field as null, but a missing secret is an operator mistake that
    would otherwise surface later as a confusing 401 from some API.
    """

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self:
            raise evaluator.EvaluationError(
                f"secret {key!r} is not configured; set FLOW_STEP_SECRET_{key} in the worker's environment"
            )
        return super().get(key)


def resolve_payload(payload: dict[str, Any], settings: Settings) -> dict[str, Any]:
    try:
        resolved = evaluator.resolve(payload, {"secrets": Secrets(settings.secrets)})
    except evaluator.EvaluationError as exc:
        # The evaluator names the missing secret; the caller masks any secret value in the text.
        raise HandlerError(Failure("invalid_input", f"cannot resolve the task payload: {exc}", False)) from None
    return dict(resolved)


def check_json(output: Any) -> None:
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise HandlerError(Failure("handler", f"the handler returned a value that is not JSON: {exc}", False)) from None
