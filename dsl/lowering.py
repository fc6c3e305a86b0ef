"""AST expressions -> the JSON expression trees of the spec (docs/spec.md, "Expr")."""

from __future__ import annotations

from typing import Any

from dsl import ast
from dsl.spec import Expr

_NOT_CONSTANT = object()


def lower(expr: ast.Expr) -> Expr:
    """The spec tree of ``expr``; lists and objects made only of literals fold to one `lit`."""
    if isinstance(expr, ast.Literal):
        return lit(expr.value)
    if isinstance(expr, ast.Duration):
        return lit(expr.seconds)
    if isinstance(expr, ast.Name):
        return {"op": "name", "name": expr.name}
    if isinstance(expr, ast.Member):
        return {"op": "get", "obj": lower(expr.obj), "key": expr.key}
    if isinstance(expr, ast.Index):
        return {"op": "index", "obj": lower(expr.obj), "index": lower(expr.index)}
    if isinstance(expr, ast.Call):
        return {"op": "call", "fn": expr.fn, "args": [lower(a) for a in expr.args]}
    if isinstance(expr, ast.Unary):
        arg = lower(expr.arg)
        value = arg.get("value")
        if expr.op == "-" and arg["op"] == "lit" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return lit(-value)
        return {"op": "unary", "operator": expr.op, "arg": arg}
    if isinstance(expr, ast.Binary):
        if expr.op in ("and", "or"):
            return {"op": expr.op, "left": lower(expr.left), "right": lower(expr.right)}
        return {"op": "binary", "operator": expr.op, "left": lower(expr.left), "right": lower(expr.right)}
    if isinstance(expr, ast.Cond):
        return {"op": "cond", "test": lower(expr.test), "then": lower(expr.then), "else": lower(expr.else_)}
    if isinstance(expr, ast.ListExpr):
        items = [lower(i) for i in expr.items]
        if all(i["op"] == "lit" for i in items):
            return lit([i["value"] for i in items])
        return {"op": "list", "items": items}
    if isinstance(expr, ast.ObjectExpr):
        entries = [[e.key, lower(e.value)] for e in expr.entries]
        if all(v["op"] == "lit" for _, v in entries):
            return lit({k: v["value"] for k, v in entries})
        return {"op": "object", "entries": entries}
    if isinstance(expr, ast.Interp):
        return {"op": "interp", "parts": [p if isinstance(p, str) else lower(p) for p in expr.parts]}
    raise TypeError(f"not an expression: {type(expr).__name__}")


def lit(value: Any) -> Expr:
    return {"op": "lit", "value": value}


def lambda_(expr: ast.Expr) -> Expr:
    """An expression the worker evaluates per element, with the element bound to `item`."""
    return {"op": "lambda", "param": "item", "body": lower(expr)}


def constant(expr: ast.Expr) -> Any:
    """The JSON value of a constant expression, or ``NOT_CONSTANT``."""
    tree = lower(expr)
    return tree["value"] if tree["op"] == "lit" else _NOT_CONSTANT


NOT_CONSTANT = _NOT_CONSTANT


def is_non_boolean(expr: ast.Expr) -> bool:
    """Whether ``expr`` can obviously never be a boolean (a literal string, number, list ...)."""
    if isinstance(expr, ast.Literal):
        return not isinstance(expr.value, bool)
    if isinstance(expr, (ast.Duration, ast.ListExpr, ast.ObjectExpr, ast.Interp)):
        return True
    if isinstance(expr, ast.Binary):
        return expr.op in ("+", "-", "*", "/", "%")
    if isinstance(expr, ast.Unary):
        return expr.op == "-"
    if isinstance(expr, ast.Cond):
        return is_non_boolean(expr.then) and is_non_boolean(expr.else_)
    return False
