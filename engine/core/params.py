"""Check a run's params against the workflow's typed params (pure).

Types, as normalised by the compiler (docs/spec.md, "Param"): ``string int float bool object any``,
``list<T>``, and a trailing ``?`` for nullable. An ``int`` is accepted where a ``float`` is expected
(JSON does not tell them apart reliably); a ``bool`` is never a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsl.spec import Param
from engine.core.errors import InvalidParams

_SCALARS = ("string", "int", "float", "bool", "object", "any")


def check_params(
    declared: Sequence[Param], given: Mapping[str, Any] | None, workflow: str = ""
) -> dict[str, Any]:
    """The params of a run with defaults applied.

    Raises:
        InvalidParams: listing every problem at once (missing, unknown, wrong type), so that a
            caller fixes them in one go.
    """
    given = dict(given or {})
    problems: list[str] = []
    result: dict[str, Any] = {}
    names = {p.name for p in declared}
    for name in sorted(set(given) - names):
        expected = ", ".join(sorted(names)) or "none"
        problems.append(f"unknown param {name!r} (this workflow takes: {expected})")
    for param in declared:
        if param.name not in given:
            if param.has_default:
                result[param.name] = param.default
            else:
                problems.append(f"missing required param {param.name!r} of type {param.type}")
            continue
        value = given[param.name]
        problem = type_problem(param.type, value)
        if problem:
            problems.append(f"param {param.name!r}: {problem}")
        else:
            result[param.name] = value
    if problems:
        raise InvalidParams(problems, workflow)
    return result


def type_problem(type_: str, value: Any, path: str = "") -> str | None:
    """Why ``value`` is not of ``type_``, or None when it is."""
    type_ = type_.strip()
    if type_.endswith("?"):
        if value is None:
            return None
        type_ = type_[:-1]
    if type_.startswith("list<") and type_.endswith(">"):
        if not isinstance(value, (list, tuple)):
            return f"expected {type_}{path}, got {_json_type(value)}"
        inner = type_[len("list<"):-1]
        for index, element in enumerate(value):
            problem = type_problem(inner, element, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if not _matches(type_, value):
        where = f" at {path}" if path else ""
        return f"expected {type_}{where}, got {_json_type(value)} {_preview(value)}"
    return None


def _matches(type_: str, value: Any) -> bool:
    if type_ == "any":
        return True
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ == "object":
        return isinstance(value, Mapping)
    if type_ not in _SCALARS:
        # A type this version does not know (a newer compiler?): accept rather than refuse runs.
        return True
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
