"""JSON-value semantics shared by the expression evaluator and its built-in functions (pure).

Values are JSON values as Python objects: ``None``, ``bool``, ``int``, ``float``, ``str``, lists
(``list``/``tuple``) and objects (any ``Mapping`` with string keys). Nothing here ever reaches an
attribute of a Python object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from dsl.errors import FlowError

T = TypeVar("T")

# Limits on what one expression may produce: step inputs and outputs are capped at 1 MiB anyway,
# and an expression must not be a way to make a coordinator allocate gigabytes.
MAX_STRING = 1 << 20  # characters
MAX_ITEMS = 100_000  # list elements or object entries
MAX_INT = 1 << 63  # integers stay within 64 bits, like every JSON reader we talk to
MAX_DEPTH = 200  # nesting of an expression tree


class EvaluationError(FlowError, ValueError):
    """An expression could not be evaluated; the message is meant for the workflow author."""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def type_name(value: Any) -> str:
    """The JSON type of ``value`` as a workflow author calls it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if is_list(value):
        return "list"
    if is_object(value):
        return "object"
    raise EvaluationError(f"unsupported value of Python type {type(value).__name__}")


def check_number(value: T) -> T:
    """``value`` if it is a number JSON can hold, else an error (infinity, NaN, huge integers)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise EvaluationError("number out of range (the result is not a finite number)")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value < MAX_INT:
        raise EvaluationError("integer out of range (more than 64 bits)")
    return value


def check_size(value: T) -> T:
    """``value`` if it is within the size limits, else an error naming the limit."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise EvaluationError(
            f"string too long ({len(value)} characters; the limit is {MAX_STRING})"
        )
    if isinstance(value, (list, tuple, Mapping)) and len(value) > MAX_ITEMS:
        raise EvaluationError(
            f"{type_name(value)} too large ({len(value)} entries; the limit is {MAX_ITEMS})"
        )
    return value


def equal(a: Any, b: Any) -> bool:
    """Deep JSON equality: ``1 == 1.0``, but ``true != 1`` and ``"1" != 1``."""
    if is_number(a) and is_number(b):
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if is_list(a) and is_list(b):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if is_object(a) and is_object(b):
        return len(a) == len(b) and all(k in b and equal(v, b[k]) for k, v in a.items())
    type_name(a), type_name(b)  # unsupported Python values are an error, not "unequal"
    return False


def contains(haystack: Any, needle: Any) -> bool:
    """``needle in haystack``: list membership, substring, or object key; ``null`` holds nothing."""
    if haystack is None:
        return False
    if is_list(haystack):
        return any(equal(needle, item) for item in haystack)
    if isinstance(haystack, str):
        if not isinstance(needle, str):
            raise EvaluationError(
                f"cannot look for a {type_name(needle)} in a string; use string(x) to convert"
            )
        return needle in haystack
    if is_object(haystack):
        if not isinstance(needle, str):
            raise EvaluationError(
                f"object keys are strings; cannot look for a {type_name(needle)} key"
            )
        return needle in haystack
    raise EvaluationError(
        f"'in' needs a list, string or object on its right, got {type_name(haystack)}"
    )


def _plain(value: Any) -> Any:
    """A copy of ``value`` that ``json`` can encode (tuples and mappings made plain)."""
    if is_list(value):
        return [_plain(v) for v in value]
    if is_object(value):
        return {_key(k): _plain(v) for k, v in value.items()}
    type_name(value)
    return value


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise EvaluationError(f"object keys must be strings, got {type_name(key)}")
    return key


def to_json_text(value: Any) -> str:
    """Compact JSON text of ``value`` (keys in their order, non-ASCII kept as is)."""
    try:
        text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise EvaluationError("cannot write infinity or NaN as JSON") from None
    return check_size(text)


def to_text(value: Any) -> str:
    """The text of a value as ``string()`` and ``${...}`` show it."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else str(value)
    return to_json_text(value)


def truthy(value: Any) -> bool:
    """``bool()``: false for ``null``, ``false``, ``0``, ``""``, ``[]`` and ``{}``."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if is_number(value) or isinstance(value, str) or is_list(value) or is_object(value):
        return bool(value)
    type_name(value)
    return True
