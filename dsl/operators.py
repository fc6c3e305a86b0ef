"""The operators of the expression language over JSON values (pure); see docs/language.md."""

from __future__ import annotations

from typing import Any

from dsl.values import (
    EvaluationError,
    check_number,
    check_size,
    contains,
    equal,
    is_list,
    is_number,
    is_object,
    type_name,
)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(
            f"'{where}' needs true or false, got {type_name(value)}; use bool(x) to test a value"
        )
    return value


def member(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if is_object(obj):
        return obj.get(key)  # a missing key (also '__class__' and friends) reads as null
    raise EvaluationError(f"cannot read field {key!r} of a {type_name(obj)}")


def index(obj: Any, index: Any) -> Any:
    if obj is None:
        return None
    if is_object(obj):
        if not isinstance(index, str):
            raise EvaluationError(f"object keys are strings, got a {type_name(index)} index")
        return obj.get(index)
    if is_list(obj) or isinstance(obj, str):
        if not isinstance(index, int) or isinstance(index, bool):
            raise EvaluationError(f"{type_name(obj)} index must be an integer, got {type_name(index)}")
        # Negative indexes count from the end, as in Python; out of range reads as null.
        return obj[index] if -len(obj) <= index < len(obj) else None
    raise EvaluationError(f"cannot index a {type_name(obj)}")


def _add(a: Any, b: Any) -> Any:
    if is_number(a) and is_number(b):
        return check_number(a + b)
    if isinstance(a, str) and isinstance(b, str):
        return check_size(a + b)
    if is_list(a) and is_list(b):
        return check_size([*a, *b])
    hint = "; use string(x) to convert" if isinstance(a, str) or isinstance(b, str) else ""
    raise EvaluationError(f"cannot add {type_name(a)} and {type_name(b)}{hint}")


def _arith(symbol: str) -> Any:
    def op(a: Any, b: Any) -> Any:
        if not (is_number(a) and is_number(b)):
            raise EvaluationError(f"'{symbol}' needs numbers, got {type_name(a)} and {type_name(b)}")
        if symbol in "/%" and b == 0:
            raise EvaluationError("division by zero" if symbol == "/" else "modulo by zero")
        if symbol == "-":
            return check_number(a - b)
        if symbol == "*":
            return check_number(a * b)
        if symbol == "%":
            return check_number(a % b)
        # 7 / 2 is 3.5 but 6 / 2 is 3: integers stay integers when the division is exact.
        if isinstance(a, int) and isinstance(b, int) and a % b == 0:
            return check_number(a // b)
        return check_number(a / b)

    return op


def _compare(symbol: str) -> Any:
    def op(a: Any, b: Any) -> bool:
        if not ((is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
            raise EvaluationError(
                f"cannot compare {type_name(a)} {symbol} {type_name(b)}; "
                "'<' and friends compare two numbers or two strings"
            )
        return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[symbol])

    return op


BINARY: dict[str, Any] = {
    "+": _add,
    "-": _arith("-"),
    "*": _arith("*"),
    "/": _arith("/"),
    "%": _arith("%"),
    "==": equal,
    "!=": lambda a, b: not equal(a, b),
    "<": _compare("<"),
    "<=": _compare("<="),
    ">": _compare(">"),
    ">=": _compare(">="),
    "in": lambda a, b: contains(b, a),
}
