"""The allow-listed pure functions of the expression language (``FUNCTIONS``).

Each takes evaluated JSON values and returns a JSON value, or raises ``EvaluationError`` with a
message that names the function. docs/language.md documents the exact semantics.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Sequence
from typing import Any

from dsl.values import (
    MAX_ITEMS,
    MAX_STRING,
    EvaluationError,
    check_number,
    check_size,
    contains,
    is_list,
    is_number,
    is_object,
    to_json_text,
    to_text,
    truthy,
    type_name,
)

Function = Callable[..., Any]


def _arity(name: str, args: Sequence[Any], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if low <= len(args) <= high:
        return
    if low == high:
        wanted = f"{low} argument" + ("" if low == 1 else "s")
    elif high >= 99:
        wanted = f"at least {low} argument" + ("" if low == 1 else "s")
    else:
        wanted = f"{low} to {high} arguments"
    raise EvaluationError(f"{name}() takes {wanted}, got {len(args)}")


def _want(name: str, value: Any, kind: str) -> Any:
    ok = {
        "string": isinstance(value, str),
        "number": is_number(value) and math.isfinite(value),
        "list": is_list(value),
        "object": is_object(value),
    }[kind]
    if not ok:
        raise EvaluationError(f"{name}() expects a {kind}, got {type_name(value)}")
    return value


def _text_fn(name: str, op: Callable[[str], str]) -> Function:
    def fn(*args: Any) -> Any:
        _arity(name, args, 1)
        return check_size(op(_want(name, args[0], "string")))

    return fn


def _len(*args: Any) -> int:
    _arity("len", args, 1)
    value = args[0]
    if value is None:
        return 0
    if isinstance(value, str) or is_list(value) or is_object(value):
        return len(value)
    raise EvaluationError(f"len() expects a string, list or object, got {type_name(value)}")


def _merge(*args: Any) -> dict[str, Any]:
    _arity("merge", args, 1, 99)
    merged: dict[str, Any] = {}
    for value in args:
        if value is None:
            continue
        merged.update(_want("merge", value, "object"))
    return check_size(merged)


def _keys(*args: Any) -> list[Any]:
    _arity("keys", args, 1)
    return list(_want("keys", args[0], "object").keys())


def _values(*args: Any) -> list[Any]:
    _arity("values", args, 1)
    return list(_want("values", args[0], "object").values())


def _split(*args: Any) -> list[str]:
    _arity("split", args, 2)
    text: str = _want("split", args[0], "string")
    sep: str = _want("split", args[1], "string")
    if not sep:
        raise EvaluationError("split() needs a non-empty separator")
    if text.count(sep) >= MAX_ITEMS:
        raise EvaluationError(f"split() would make more parts than the limit of {MAX_ITEMS}")
    return text.split(sep)


def _join(*args: Any) -> str:
    _arity("join", args, 1, 2)
    items = _want("join", args[0], "list")
    sep = _want("join", args[1], "string") if len(args) > 1 else ""
    parts = [to_text(item) for item in items]
    if sum(map(len, parts)) + len(sep) * max(len(parts) - 1, 0) > MAX_STRING:
        raise EvaluationError(f"join() would make a string over the limit of {MAX_STRING} characters")
    return sep.join(parts)


def _contains(*args: Any) -> bool:
    _arity("contains", args, 2)
    return contains(args[0], args[1])


def _startswith(*args: Any) -> bool:
    _arity("startswith", args, 2)
    return bool(_want("startswith", args[0], "string").startswith(_want("startswith", args[1], "string")))


def _endswith(*args: Any) -> bool:
    _arity("endswith", args, 2)
    return bool(_want("endswith", args[0], "string").endswith(_want("endswith", args[1], "string")))


def _replace(*args: Any) -> str:
    _arity("replace", args, 3)
    text: str
    old: str
    new: str
    text, old, new = (_want("replace", a, "string") for a in args)
    if not old:
        raise EvaluationError("replace() needs a non-empty text to find")
    # Predict the size first: replacing in a 1 MiB string can ask for terabytes.
    if len(text) + text.count(old) * (len(new) - len(old)) > MAX_STRING:
        raise EvaluationError(f"replace() would make a string over the limit of {MAX_STRING} characters")
    return text.replace(old, new)


def _round(*args: Any) -> Any:
    _arity("round", args, 1, 2)
    value = _want("round", args[0], "number")
    digits = _want("round", args[1], "number") if len(args) > 1 else 0
    if isinstance(digits, float) or not -20 <= digits <= 20:
        raise EvaluationError("round() digits must be an integer between -20 and 20")
    # Half away from zero, on the shortest decimal form: round(2.5) is 3, round(2.675, 2) is 2.68.
    exact = decimal.Decimal(repr(value)).quantize(
        decimal.Decimal(1).scaleb(-digits), rounding=decimal.ROUND_HALF_UP,
        context=decimal.Context(prec=400),
    )
    return check_number(int(exact) if digits <= 0 else float(exact))


def _floor_ceil(name: str, op: Callable[[float], int]) -> Function:
    def fn(*args: Any) -> Any:
        _arity(name, args, 1)
        return check_number(op(_want(name, args[0], "number")))

    return fn


def _numbers_or_strings(name: str, args: Sequence[Any]) -> list[Any]:
    _arity(name, args, 1, 99)
    items = list(_want(name, args[0], "list")) if len(args) == 1 else list(args)
    if all(is_number(x) for x in items) or all(isinstance(x, str) for x in items):
        return items
    kinds = sorted({type_name(x) for x in items})
    raise EvaluationError(f"{name}() compares numbers or strings, got {', '.join(kinds)}")


def _min(*args: Any) -> Any:
    items = _numbers_or_strings("min", args)
    return min(items) if items else None


def _max(*args: Any) -> Any:
    items = _numbers_or_strings("max", args)
    return max(items) if items else None


def _sum(*args: Any) -> Any:
    _arity("sum", args, 1)
    items = _want("sum", args[0], "list")
    total: Any = 0
    for item in items:
        if not is_number(item):
            raise EvaluationError(f"sum() adds numbers, got a {type_name(item)} in the list")
        total = check_number(total + item)
    return total


def _abs(*args: Any) -> Any:
    _arity("abs", args, 1)
    return check_number(abs(_want("abs", args[0], "number")))


def _int(*args: Any) -> int:
    _arity("int", args, 1)
    value = args[0]
    if isinstance(value, bool):
        return int(value)
    if is_number(value):
        return check_number(int(value))  # towards zero, as in most languages
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= 20 and text.lstrip("+-").isdigit() and text.isascii():
            return check_number(int(text))
        raise EvaluationError(f"int() cannot read {value[:40]!r} as an integer")
    raise EvaluationError(f"int() expects a number, string or bool, got {type_name(value)}")


def _float(*args: Any) -> float:
    _arity("float", args, 1)
    value = args[0]
    if isinstance(value, bool) or is_number(value):
        return check_number(float(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            result = float(text) if len(text) <= 400 and text.isascii() else math.nan
        except ValueError:
            result = math.nan
        if not math.isfinite(result):
            raise EvaluationError(f"float() cannot read {value[:40]!r} as a number")
        return result
    raise EvaluationError(f"float() expects a number, string or bool, got {type_name(value)}")


def _string(*args: Any) -> str:
    _arity("string", args, 1)
    return check_size(to_text(args[0]))


def _bool(*args: Any) -> bool:
    _arity("bool", args, 1)
    return truthy(args[0])


def _json(*args: Any) -> str:
    _arity("json", args, 1)
    return to_json_text(args[0])


FUNCTIONS: dict[str, Function] = {
    "len": _len,
    "merge": _merge,
    "keys": _keys,
    "values": _values,
    "upper": _text_fn("upper", str.upper),
    "lower": _text_fn("lower", str.lower),
    "trim": _text_fn("trim", str.strip),
    "split": _split,
    "join": _join,
    "contains": _contains,
    "startswith": _startswith,
    "endswith": _endswith,
    "replace": _replace,
    "round": _round,
    "floor": _floor_ceil("floor", math.floor),
    "ceil": _floor_ceil("ceil", math.ceil),
    "min": _min,
    "max": _max,
    "sum": _sum,
    "abs": _abs,
    "int": _int,
    "float": _float,
    "string": _string,
    "bool": _bool,
    "json": _json,
}
