"""Render an expression tree back to its source form (``secrets.TOKEN``, ``"Bearer ${secrets.TOKEN}"``).

Used to show deferred values in logs and the dashboard without their result, and in diagnostics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from dsl.values import EvaluationError, is_list, is_number, is_object

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Binding strength, loosest first (the order of the reference, section 5).
_COND, _OR, _AND, _NOT, _CMP, _COALESCE, _ADD, _MUL, _NEG, _POSTFIX, _ATOM = range(1, 12)
_BINARY_PREC = {
    "==": _CMP, "!=": _CMP, "<": _CMP, "<=": _CMP, ">": _CMP, ">=": _CMP, "in": _CMP,
    "??": _COALESCE, "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL,
}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def describe(expr: Any) -> str:
    """The source form of an expression tree (or of a deferred value ``{"$expr": tree}``)."""
    if isinstance(expr, Mapping) and set(expr) == {"$expr"}:
        expr = expr["$expr"]
    try:
        return _render(expr)[0]
    except RecursionError:
        raise EvaluationError("expression nested too deeply to show") from None


def is_identifier(name: str) -> bool:
    """Whether ``name`` can stand bare as an object key or after `.` (keywords can: `{ step: 1 }`)."""
    return bool(_IDENT.match(name))


def quote(text: str) -> str:
    """A double-quoted string literal of the language (``${`` escaped so it stays text)."""
    return '"' + _escape(text) + '"'


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out).replace("${", "\\${")


def _key(key: str) -> str:
    return key if is_identifier(key) else quote(key)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return quote(value)
    if value is None or isinstance(value, bool) or is_number(value):
        return json.dumps(value)
    if is_list(value):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if is_object(value):
        return "{" + ", ".join(f"{_key(str(k))}: {_value(v)}" for k, v in value.items()) + "}"
    raise EvaluationError(f"cannot show a value of Python type {type(value).__name__}")


def _wrap(rendered: tuple[str, int], minimum: int) -> str:
    text, prec = rendered
    return text if prec >= minimum else f"({text})"


def _render(node: Any) -> tuple[str, int]:
    if not isinstance(node, Mapping) or not isinstance(node.get("op"), str):
        raise EvaluationError("malformed expression: expected a node with an 'op' field")
    op = node["op"]
    if op == "lit":
        return _value(node.get("value")), _ATOM
    if op == "name":
        return str(node.get("name")), _ATOM
    if op == "get":
        obj = _wrap(_render(node.get("obj")), _POSTFIX)
        key = str(node.get("key"))
        return (f"{obj}.{key}" if is_identifier(key) else f"{obj}[{quote(key)}]"), _POSTFIX
    if op == "index":
        obj = _wrap(_render(node.get("obj")), _POSTFIX)
        return f"{obj}[{_render(node.get('index'))[0]}]", _POSTFIX
    if op == "call":
        args = _list(node, "args")
        return f"{node.get('fn')}({', '.join(_render(a)[0] for a in args)})", _POSTFIX
    if op == "unary":
        if node.get("operator") == "not":
            return f"not {_wrap(_render(node.get('arg')), _NOT)}", _NOT
        return f"-{_wrap(_render(node.get('arg')), _NEG)}", _NEG
    if op == "binary":
        operator = str(node.get("operator"))
        prec = _BINARY_PREC.get(operator, _CMP)
        left = _wrap(_render(node.get("left")), prec + 1 if prec == _CMP else prec)
        right = _wrap(_render(node.get("right")), prec + 1)
        return f"{left} {operator} {right}", prec
    if op in ("and", "or"):
        prec = _AND if op == "and" else _OR
        left = _wrap(_render(node.get("left")), prec)
        return f"{left} {op} {_wrap(_render(node.get('right')), prec + 1)}", prec
    if op == "cond":
        test = _wrap(_render(node.get("test")), _COND + 1)
        then = _render(node.get("then"))[0]
        return f"{test} ? {then} : {_render(node.get('else'))[0]}", _COND
    if op == "list":
        items = _list(node, "items")
        return "[" + ", ".join(_render(i)[0] for i in items) + "]", _ATOM
    if op == "object":
        entries = _list(node, "entries")
        if not all(isinstance(e, (list, tuple)) and len(e) == 2 for e in entries):
            raise EvaluationError("malformed expression: object entries are [key, expr] pairs")
        body = ", ".join(f"{_key(str(k))}: {_render(v)[0]}" for k, v in entries)
        return "{" + body + "}", _ATOM
    if op == "interp":
        parts = _list(node, "parts")
        text = "".join(_escape(p) if isinstance(p, str) else "${" + _render(p)[0] + "}" for p in parts)
        return f'"{text}"', _ATOM
    if op == "lambda":
        # The language has no lambda syntax: a lambda is written as its body over `item` (or the
        # loop variable), so its source form is the body.
        return _render(node.get("body"))
    raise EvaluationError(f"malformed expression: unknown operation {op!r}")


def _list(node: Mapping[str, Any], key: str) -> list[Any]:
    value = node.get(key)
    return value if isinstance(value, list) else []
