"""The operations of ``data_processing``, as pure functions ``op(config, items, env) -> output``.

``env`` holds the roots a deferred lambda may still need (``secrets``).

Each raises ``InvalidInput`` for a config or an element it cannot process; the message names the
operation, the config key and, for an element, its index, so that the author can find it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

import jsonschema
from jsonschema.exceptions import SchemaError

from dsl import evaluator
from workers.handler_api import InvalidInput

MAX_REPORTED_ERRORS = 5
_METRIC = re.compile(r"^\s*(sum|avg|min|max|count)\(\s*([A-Za-z_][\w.]*)?\s*\)\s*$")


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _per_item(op: str, key: str, value: Any, env: Mapping[str, Any]) -> Callable[[int, Any], Any]:
    """A function of (index, element) for the config ``key``: a deferred lambda or a constant."""
    if isinstance(value, Mapping) and "$expr" in value:
        def call(index: int, element: Any) -> Any:
            try:
                return evaluator.call_lambda(value, element, env)
            except evaluator.EvaluationError as exc:
                raise InvalidInput(f"{op}: '{key}' failed on item {index}: {exc}", index=index) from None
        return call
    return lambda _index, _element: value


def _require(op: str, config: Mapping[str, Any], key: str) -> Any:
    if key not in config or config[key] is None:
        raise InvalidInput(f"{op}: the config needs '{key}'")
    return config[key]


def field_value(element: Any, path: str) -> Any:
    """``element.a.b`` for the dotted ``path`` (null when a part is missing, like the language)."""
    value = element
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def transform(config: Mapping[str, Any], items: list[Any], env: Mapping[str, Any]) -> list[Any]:
    fn = _per_item("transform", "map", _require("transform", config, "map"), env)
    return [fn(i, element) for i, element in enumerate(items)]


def filter_items(config: Mapping[str, Any], items: list[Any], env: Mapping[str, Any]) -> list[Any]:
    fn = _per_item("filter", "where", _require("filter", config, "where"), env)
    return [element for i, element in enumerate(items) if fn(i, element)]


def validate(config: Mapping[str, Any], items: list[Any], env: Mapping[str, Any]) -> dict[str, Any]:
    schema = _require("validate", config, "schema")
    on_invalid = config.get("on_invalid", "fail")
    if on_invalid not in ("fail", "drop"):
        raise InvalidInput(f"validate: 'on_invalid' must be \"fail\" or \"drop\", not {on_invalid!r}")
    if not isinstance(schema, (Mapping, bool)):
        raise InvalidInput("validate: 'schema' must be a JSON Schema object")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInput(f"validate: the schema is not valid: {exc.message}") from None
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    valid: list[Any] = []
    invalid: list[dict[str, Any]] = []
    for index, element in enumerate(items):
        errors = sorted(validator.iter_errors(element), key=lambda e: list(map(str, e.absolute_path)))
        if not errors:
            valid.append(element)
            continue
        records = [{"path": _json_path(e.absolute_path), "message": e.message} for e in errors]
        invalid.append({"index": index, "item": element, "errors": records})
    if invalid and on_invalid == "fail":
        shown = [
            f"item {entry['index']} at {error['path']}: {error['message']}"
            for entry in invalid
            for error in entry["errors"]
        ][:MAX_REPORTED_ERRORS]
        raise InvalidInput(
            f"validate: {len(invalid)} of {len(items)} items are invalid: " + "; ".join(shown),
            errors=[{"index": e["index"], "errors": e["errors"]} for e in invalid[:MAX_REPORTED_ERRORS]],
            invalid_count=len(invalid),
        )
    return {"valid": valid, "invalid": [{"item": e["item"], "errors": e["errors"]} for e in invalid]}


def _json_path(path: Any) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def aggregate(config: Mapping[str, Any], items: list[Any], env: Mapping[str, Any]) -> list[dict[str, Any]]:
    group_by = config.get("group_by") or []
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(f, str) for f in group_by):
        raise InvalidInput("aggregate: 'group_by' must be a list of field names")
    metrics = config.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise InvalidInput("aggregate: 'metrics' must be an object of name: \"sum(field)\" ...")
    parsed: dict[str, tuple[str, str | None]] = {}
    for name, spec in metrics.items():
        match = _METRIC.match(spec) if isinstance(spec, str) else None
        if match is None or (match.group(1) != "count" and match.group(2) is None):
            raise InvalidInput(
                f"aggregate: metric {name!r} is {spec!r}; use sum(f), avg(f), min(f), max(f) or count()"
            )
        parsed[str(name)] = (match.group(1), match.group(2))

    # Groups keyed by the JSON text of their values: objects and lists are not hashable, and 1 and
    # true must stay different groups. Dicts keep first-seen order.
    groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for element in items:
        values = {field: field_value(element, field) for field in group_by}
        key = json.dumps([values[f] for f in group_by], sort_keys=True)
        groups.setdefault(key, (values, []))[1].append(element)
    if not group_by and not groups:
        groups[""] = ({}, [])  # like SQL: an aggregate without groups has one row, even when empty
    return [
        {**values, **{name: _metric(name, fn, field, members) for name, (fn, field) in parsed.items()}}
        for values, members in groups.values()
    ]


def _metric(name: str, fn: str, field: str | None, members: list[Any]) -> Any:
    if fn == "count":
        if field is None:
            return len(members)
        return sum(1 for m in members if field_value(m, field) is not None)
    assert field is not None
    values = [field_value(m, field) for m in members]
    values = [v for v in values if v is not None]  # nulls are skipped, as in SQL
    if fn in ("sum", "avg"):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidInput(f"aggregate: {name} = {fn}({field}) met a {type_name(v)} value {v!r}")
        if fn == "sum":
            return sum(values)
        return sum(values) / len(values) if values else None
    if not values:
        return None
    try:
        return min(values) if fn == "min" else max(values)
    except TypeError:
        kinds = sorted({type_name(v) for v in values})
        raise InvalidInput(f"aggregate: {name} = {fn}({field}) cannot compare {' and '.join(kinds)}") from None


def batch(config: Mapping[str, Any], items: list[Any], env: Mapping[str, Any]) -> list[list[Any]]:
    size = _require("batch", config, "size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        if isinstance(size, float) and size.is_integer() and size >= 1:
            size = int(size)
        else:
            raise InvalidInput(f"batch: 'size' must be a positive whole number, not {size!r}")
    return [items[i : i + size] for i in range(0, len(items), size)]


def sort(config: Mapping[str, Any], items: list[Any], env: Mapping[str, Any]) -> list[Any]:
    by = config.get("by")
    desc = bool(config.get("desc", False))
    if by is None:
        key_of: Callable[[int, Any], Any] = lambda _i, element: element
    elif isinstance(by, str):
        key_of = lambda _i, element: field_value(element, by)
    elif isinstance(by, Mapping) and "$expr" in by:
        key_of = _per_item("sort", "by", by, env)
    else:
        raise InvalidInput(f"sort: 'by' must be a field name or an expression, not {by!r}")
    keyed = [(_order_key(key_of(i, element)), element) for i, element in enumerate(items)]
    # Python's sort is stable, also with reverse=True: equal keys keep their input order.
    keyed.sort(key=lambda pair: pair[0], reverse=desc)
    return [element for _key, element in keyed]


_RANK = {"null": 0, "bool": 1, "number": 2, "string": 3, "list": 4, "object": 5}


def _order_key(value: Any) -> tuple[int, Any]:
    """A total order over JSON values: null < bools < numbers < strings < lists < objects."""
    kind = type_name(value)
    if kind in ("list", "object"):
        return (_RANK[kind], json.dumps(value, sort_keys=True))
    return (_RANK.get(kind, 6), value if value is not None else 0)

