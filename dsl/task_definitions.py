"""Compile the task API's JSON workflow definitions (``initialTask`` + ``transitions``) to a spec.

``initialTask`` is the first step; ``transitions["<task type>"]`` is the task that runs after the
step of that task type. The chain is followed from the initial task, so a definition is one linear
sequence of steps. Transitions that the chain never reaches are ignored, as the original task API
ignored them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from dsl.errors import FlowError
from dsl.spec import Retry, StepSpec, WorkflowSpec

# The payload keys of an ``http_request`` task that are config keys of the ``http`` step type.
HTTP_KEYS = ("method", "url", "headers", "query", "body", "expect", "follow_redirects")

_TASK = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*$", "maxLength": 100},
        "payload": {"type": "object"},
        "maxRetries": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "additionalProperties": False,
}

SEED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "definition"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string"},
        "definition": {
            "type": "object",
            "required": ["initialTask"],
            "properties": {
                "initialTask": _TASK,
                "transitions": {"type": "object", "additionalProperties": _TASK},
            },
            "additionalProperties": False,
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(SEED_SCHEMA)


class TaskDefinitionError(FlowError, ValueError):
    """A JSON workflow definition (the task API's) is invalid; the message names the JSON path of the problem."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def _path(parts: Any) -> str:
    out = "$"
    for part in parts:
        is_plain = isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part)
        out += f".{part}" if is_plain else f"[{part!r}]" if isinstance(part, str) else f"[{part}]"
    return out


def _validate(definition: Any) -> None:
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(definition))
    if error is not None:
        raise TaskDefinitionError(error.message, _path(error.absolute_path))


def _lit(value: Any) -> dict[str, Any]:
    return {"op": "lit", "value": value}


def _step(task: Mapping[str, Any], name: str, after: str | None, path: str) -> StepSpec:
    task_type: str = task["type"]
    payload: Mapping[str, Any] = task.get("payload") or {}
    retry = Retry(attempts=task["maxRetries"] + 1) if "maxRetries" in task else Retry()
    if task_type == "http_request":
        unknown = sorted(set(payload) - set(HTTP_KEYS))
        if unknown:
            raise TaskDefinitionError(
                f"unknown http_request payload key {unknown[0]!r}; the keys are {', '.join(HTTP_KEYS)}",
                f"{path}.payload",
            )
        if not isinstance(payload.get("url"), str) or not payload["url"]:
            raise TaskDefinitionError("an http_request task needs a 'url' string", f"{path}.payload")
        step_type = "http"
    else:
        # data_processing, compensation or any other task type of the task API: the free-form payload
        # (e.g. {"operation": "process_order"}) goes to the worker as it was given.
        step_type = task_type
    return StepSpec(
        name=name,
        type=step_type,
        task_type=task_type,
        config={key: _lit(value) for key, value in payload.items()},
        depends_on=(after,) if after else (),
        retry=retry,
    )


def compile_task_definition(definition: Mapping[str, Any]) -> WorkflowSpec:
    """Compile a JSON definition of the task API ``{"name", "definition": {"initialTask", "transitions"}}``.

    Raises:
        TaskDefinitionError: the definition does not match the task API's format, an http task lacks
            a url, or the transitions loop back to a task type already run.
    """
    _validate(definition)
    body = definition["definition"]
    transitions: Mapping[str, Any] = body.get("transitions") or {}
    steps: list[StepSpec] = []
    seen_types: dict[str, int] = {}
    followed: list[str] = []
    task, path = body["initialTask"], "$.definition.initialTask"
    while True:
        task_type = task["type"]
        seen_types[task_type] = seen_types.get(task_type, 0) + 1
        base = re.sub(r"\W", "_", task_type)
        name = base if seen_types[task_type] == 1 else f"{base}_{seen_types[task_type]}"
        steps.append(_step(task, name, steps[-1].name if steps else None, path))
        if task_type not in transitions:
            break
        if task_type in followed:
            loop = " -> ".join([*followed[followed.index(task_type):], task_type])
            raise TaskDefinitionError(
                f"the transitions loop back ({loop}); a workflow definition must end",
                _path(["definition", "transitions", task_type]),
            )
        followed.append(task_type)
        task, path = transitions[task_type], _path(["definition", "transitions", task_type])
    return WorkflowSpec(name=definition["name"], steps=tuple(steps), doc=definition.get("description"))
