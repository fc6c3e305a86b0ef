"""What the compiler knows about step types, parameter types, retry policies and error classes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from dsl.spec import BUILTIN_TASK_TYPES


@dataclass(frozen=True)
class StepType:
    keys: frozenset[str]
    required: frozenset[str] = frozenset()
    lambdas: frozenset[str] = frozenset()  # keys evaluated per element by the worker (over `item`)


_DATA = frozenset({"input"})
STEP_TYPES: dict[str, StepType] = {
    "http": StepType(frozenset({"method", "url", "headers", "query", "body", "expect", "follow_redirects"}), frozenset({"url"})),
    "transform": StepType(_DATA | {"map"}, _DATA | {"map"}, frozenset({"map"})),
    "filter": StepType(_DATA | {"where"}, _DATA | {"where"}, frozenset({"where"})),
    "validate": StepType(_DATA | {"schema", "on_invalid"}, _DATA | {"schema"}),
    "aggregate": StepType(_DATA | {"group_by", "metrics"}, _DATA),
    "batch": StepType(_DATA | {"size"}, _DATA | {"size"}),
    # Without `by`, sort orders the elements themselves (numbers, strings).
    "sort": StepType(_DATA | {"by", "desc"}, _DATA, frozenset({"by"})),
    "noop": StepType(frozenset({"output"})),
    "sleep": StepType(frozenset({"duration"}), frozenset({"duration"})),
    "approval": StepType(frozenset({"prompt", "timeout"})),
    "subflow": StepType(frozenset({"workflow", "params"}), frozenset({"workflow"})),
}
assert set(STEP_TYPES) == set(BUILTIN_TASK_TYPES)

CLAUSES = ("after", "when", "for each", "retry", "timeout", "compensate", "allow_failure", "doc")
SIDE_EFFECT_FREE_METHODS = frozenset({"GET", "HEAD"})
STEP_FIELDS = frozenset({"output", "status", "error", "attempts"})
WORKFLOW_FIELDS = frozenset({"name", "run_id", "scheduled_at"})
ERROR_FIELDS = frozenset({"step", "message"})

ERROR_CLASSES = ("timeout", "network", "http.4xx", "http.429", "http.5xx", "invalid_input", "handler")
_HTTP_CODE = re.compile(r"http\.[1-5][0-9][0-9]")

RETRY_FIELDS = ("attempts", "delay", "backoff", "max_delay", "jitter", "errors")

SCALAR_TYPES = frozenset({"string", "int", "float", "bool", "object", "any"})
TYPE_NAMES = SCALAR_TYPES | {"list"}


def task_type(step_type: str) -> str | None:
    """The worker queue of a step type; a plugin's dotted type is its own queue."""
    return BUILTIN_TASK_TYPES.get(step_type, step_type)


def is_plugin_type(step_type: str) -> bool:
    return "." in step_type


def is_error_class(name: str) -> bool:
    return name in ERROR_CLASSES or bool(_HTTP_CODE.fullmatch(name))


def value_matches(value: Any, type_text: str) -> bool:
    """Whether a JSON value fits a parameter type as written (``list<object>?``)."""
    if type_text.endswith("?"):
        return value is None or value_matches(value, type_text[:-1])
    if value is None:
        return type_text == "any"
    if type_text.startswith("list<"):
        inner = type_text[5:-1]
        return isinstance(value, list) and all(value_matches(v, inner) for v in value)
    checks = {
        "string": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),  # an int is a float
        "bool": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "any": lambda v: True,
        "list": lambda v: isinstance(v, list),
    }
    check: Callable[[Any], bool] = checks.get(type_text, lambda v: True)
    return check(value)
