"""AST expressions -> the JSON expression trees of the spec (docs/spec.md, "Expr")."""

from __future__ import annotations

from typing import Any, Mapping

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
        pairs = [(e.key, lower(e.value)) for e in expr.entries]
        if all(v["op"] == "lit" for _, v in pairs):
            return lit({k: v["value"] for k, v in pairs})
        return {"op": "object", "entries": [[k, v] for k, v in pairs]}
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
_MAX_FOLD_ITEMS = 1000


def fold(tree: Expr, env: Mapping[str, Any]) -> Any:
    """The value of a lowered expression that reads only names of ``env``, or ``NOT_CONSTANT``.

    ``env`` holds what is known when compiling (constant `let`s, a loop variable bound to one
    element): ``1 > 2`` and ``not debug`` (with ``let debug = true``) fold; ``params.x`` does not.
    An expression that fails to evaluate is not constant either: the run reports that error.
    """
    if tree["op"] == "lit":
        return tree["value"]
    if not _names(tree) <= env.keys():
        return _NOT_CONSTANT
    from dsl.evaluator import EvaluationError, evaluate, is_deferred

    try:
        value = evaluate(tree, env)
    except (EvaluationError, RecursionError):
        return _NOT_CONSTANT
    return _NOT_CONSTANT if is_deferred(value) else value


def fold_each(trees: tuple[Expr, Expr | None], var: str, env: Mapping[str, Any]) -> list[Any] | None:
    """The elements a constant `for each` runs for (``where`` applied), or ``None`` when unknown."""
    items_tree, where = trees
    items = fold(items_tree, env)
    if not isinstance(items, list) or len(items) > _MAX_FOLD_ITEMS:
        return None
    if where is None:
        return items
    kept = []
    for item in items:
        keep = fold(where, {**env, var: item})
        if not isinstance(keep, bool):  # not constant, or an error the run reports
            return None
        if keep is True:
            kept.append(item)
    return kept


def _names(tree: Any) -> set[str]:
    """Root names read anywhere in ``tree`` (a lambda's own parameter included: never folded)."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("op") == "name":
                found.add(node["name"])
            elif node.get("op") != "lit":
                stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


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
