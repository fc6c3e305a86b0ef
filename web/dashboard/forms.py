"""The start-run form, generated from a workflow's typed params (pure).

Each param becomes a field whose input suits its type (text, whole number, number, true/false, or
JSON for lists and objects); ``parse`` turns the submitted text back into values and says, per
field, what is wrong. ``engine.core.params`` has the last word when the run starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.params import type_problem

_QUOTED_NAME = re.compile(r"'([^']+)'")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    widget: str  # text | int | float | bool | json
    required: bool
    nullable: bool
    value: str
    error: str | None = None

    @property
    def hint(self) -> str:
        parts = [self.type]
        if not self.required:
            parts.append("optional")
        if self.widget == "json":
            parts.append("JSON")
        return ", ".join(parts)


def _widget(type_: str) -> str:
    base = type_.strip().rstrip("?")
    return {"string": "text", "int": "int", "float": "float", "bool": "bool"}.get(base, "json")


def _text(widget: str, value: Any) -> str:
    if value is None:
        return ""
    if widget == "bool":
        return "true" if value else "false"
    if widget == "text" and isinstance(value, str):
        return value
    if widget in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def fields(params: Sequence[Mapping[str, Any]], submitted: Mapping[str, str] | None = None,
           errors: Mapping[str, str] | None = None) -> list[Field]:
    """The form's fields: the submitted text when re-rendering, else each param's default."""
    out = []
    for param in params:
        name, type_ = str(param["name"]), str(param["type"])
        widget = _widget(type_)
        if submitted is not None:
            value = submitted.get(name, "")
        else:
            value = _text(widget, param.get("default")) if param.get("has_default") else ""
        out.append(Field(name, type_, widget, not param.get("has_default"), type_.strip().endswith("?"),
                         value, (errors or {}).get(name)))
    return out


def _convert(widget: str, text: str) -> Any:
    if widget == "text":
        return text
    if widget == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("enter a whole number, like 42") from None
    if widget == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError("enter a number, like 3.5") from None
    if widget == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise ValueError("choose true or false")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def parse(params: Sequence[Mapping[str, Any]], form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(values, errors)``: values for the run (a blank optional field takes the default) and, per
    field name, what is wrong with it."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields(params, form):
        text = field.value if field.widget == "text" else field.value.strip()
        if text == "":
            if field.nullable and field.widget != "text":
                values[field.name] = None
            elif field.required and field.widget != "text":
                errors[field.name] = "required"
            elif field.required:
                values[field.name] = ""
            continue
        try:
            value = _convert(field.widget, text)
        except ValueError as exc:
            errors[field.name] = str(exc)
            continue
        problem = type_problem(field.type, value)
        if problem:
            errors[field.name] = problem
        else:
            values[field.name] = value
    return values, errors


def assign(problems: Sequence[str], names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split the engine's problems (``param 'n': expected int …``) into per-field errors and the rest."""
    by_field: dict[str, str] = {}
    rest: list[str] = []
    for problem in problems:
        quoted = [n for n in _QUOTED_NAME.findall(problem) if n in names]
        if quoted and quoted[0] not in by_field:
            by_field[quoted[0]] = problem
        else:
            rest.append(problem)
    return by_field, rest
