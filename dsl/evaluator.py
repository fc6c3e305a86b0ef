"""The expression evaluator: a fixed interpreter over the JSON expression trees of docs/spec.md.

It never calls ``eval``, never reaches an attribute of a Python object (objects are read with
``Mapping`` lookups only) and only calls the functions of ``dsl.functions.FUNCTIONS``.

Deferral: with ``defer=("secrets",)`` a sub-tree that reads a deferred root, and every ``lambda``,
becomes a *deferred value* ``{"$expr": tree}`` whose other names are replaced by their values, so
that the tree can travel to a worker and be finished there (``resolve`` / ``call_lambda``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from dsl.describe import describe
from dsl.functions import FUNCTIONS
from dsl.operators import BINARY, boolean, member
from dsl.operators import index as index_
from dsl.values import (
    MAX_DEPTH,
    MAX_STRING,
    EvaluationError,
    check_number,
    check_size,
    is_list,
    is_number,
    is_object,
    to_text,
    type_name,
)

__all__ = ["EvaluationError", "evaluate", "resolve", "call_lambda", "describe", "is_deferred"]

Expr = Mapping[str, Any]
DEFERRED_KEY = "$expr"


@dataclass(frozen=True)
class _Deferred:
    """An unfinished value: its closed ``tree``, and for lists/objects the value to hand out."""

    tree: dict[str, Any]
    shape: Any = None


def _lit(value: Any) -> dict[str, Any]:
    return {"op": "lit", "value": value}


def _tree(value: Any) -> dict[str, Any]:
    return value.tree if isinstance(value, _Deferred) else _lit(value)


def _export(value: Any) -> Any:
    if isinstance(value, _Deferred):
        return value.shape if value.shape is not None else {DEFERRED_KEY: value.tree}
    return value


def is_deferred(value: Any) -> bool:
    """True for a deferred value ``{"$expr": tree}``."""
    return is_object(value) and len(value) == 1 and DEFERRED_KEY in value


def _field(node: Expr, key: str, kind: type | tuple[type, ...]) -> Any:
    value = node.get(key)
    if not isinstance(value, kind):
        raise EvaluationError(f"malformed expression: {node.get('op')!r} node needs a valid {key!r}")
    return value


def _node(expr: Any) -> tuple[Expr, str]:
    if not isinstance(expr, Mapping) or not isinstance(expr.get("op"), str):
        raise EvaluationError("malformed expression: expected a node with an 'op' field")
    return expr, expr["op"]


class _Evaluator:
    def __init__(self, env: Mapping[str, Any], defer: Collection[str]) -> None:
        self.env = env
        self.defer = frozenset(defer)

    def eval(self, expr: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise EvaluationError(f"expression nested too deeply (more than {MAX_DEPTH} levels)")
        node, op = _node(expr)
        method = _OPS.get(op)
        if method is None:
            raise EvaluationError(f"malformed expression: unknown operation {op!r}")
        return method(self, node, depth + 1)

    # --- leaves and access ---------------------------------------------------------------------

    def lit(self, node: Expr, depth: int) -> Any:
        if "value" not in node:
            raise EvaluationError("malformed expression: 'lit' node needs a 'value'")
        return node["value"]

    def name(self, node: Expr, depth: int) -> Any:
        name = _field(node, "name", str)
        if name in self.defer:
            return _Deferred({"op": "name", "name": name})
        if name not in self.env:
            raise EvaluationError(f"undefined name {name!r}")
        value = self.env[name]
        if self.defer and is_deferred(value):
            # A `let` that read a secret: its deferred tree stands in for it, so that
            # `"Bearer ${token}"` defers the whole string instead of showing the tree as text.
            return _Deferred(dict(value[DEFERRED_KEY]))
        return value

    def get(self, node: Expr, depth: int) -> Any:
        key = _field(node, "key", str)
        obj = self.eval(node.get("obj"), depth)
        if isinstance(obj, _Deferred):
            return _Deferred({"op": "get", "obj": obj.tree, "key": key})
        return member(obj, key)

    def index(self, node: Expr, depth: int) -> Any:
        obj = self.eval(node.get("obj"), depth)
        index = self.eval(node.get("index"), depth)
        if isinstance(obj, _Deferred) or isinstance(index, _Deferred):
            return _Deferred({"op": "index", "obj": _tree(obj), "index": _tree(index)})
        return index_(obj, index)

    def call(self, node: Expr, depth: int) -> Any:
        fn_name = _field(node, "fn", str)
        fn = FUNCTIONS.get(fn_name)
        if fn is None:
            raise EvaluationError(
                f"unknown function {fn_name!r}; the functions are: {', '.join(FUNCTIONS)}"
            )
        args = [self.eval(arg, depth) for arg in _field(node, "args", list)]
        if any(isinstance(a, _Deferred) for a in args):
            return _Deferred({"op": "call", "fn": fn_name, "args": [_tree(a) for a in args]})
        return fn(*args)

    # --- operators -----------------------------------------------------------------------------

    def unary(self, node: Expr, depth: int) -> Any:
        operator = _field(node, "operator", str)
        arg = self.eval(node.get("arg"), depth)
        if isinstance(arg, _Deferred):
            return _Deferred({"op": "unary", "operator": operator, "arg": arg.tree})
        if operator == "-":
            if not is_number(arg):
                raise EvaluationError(f"cannot negate a {type_name(arg)}")
            return check_number(-arg)
        if operator == "not":
            return not boolean(arg, "not")
        raise EvaluationError(f"malformed expression: unknown unary operator {operator!r}")

    def binary(self, node: Expr, depth: int) -> Any:
        operator = _field(node, "operator", str)
        if operator not in BINARY and operator != "??":
            raise EvaluationError(f"malformed expression: unknown operator {operator!r}")
        left = self.eval(node.get("left"), depth)
        if operator == "??":
            if isinstance(left, _Deferred):
                right_tree = self.close(node.get("right"), frozenset(), depth)
                return _Deferred(_binary("??", left.tree, right_tree))
            return self.eval(node.get("right"), depth) if left is None else left
        right = self.eval(node.get("right"), depth)
        if isinstance(left, _Deferred) or isinstance(right, _Deferred):
            return _Deferred(_binary(operator, _tree(left), _tree(right)))
        return BINARY[operator](left, right)

    def logic(self, node: Expr, depth: int) -> Any:
        op = node["op"]
        left = self.eval(node.get("left"), depth)
        if isinstance(left, _Deferred):
            right_tree = self.close(node.get("right"), frozenset(), depth)
            return _Deferred({"op": op, "left": left.tree, "right": right_tree})
        if boolean(left, op) == (op == "or"):
            return left  # short circuit: true or …, false and …
        right = self.eval(node.get("right"), depth)
        if isinstance(right, _Deferred):
            return _Deferred({"op": op, "left": _lit(left), "right": right.tree})
        return boolean(right, op)

    def cond(self, node: Expr, depth: int) -> Any:
        test = self.eval(node.get("test"), depth)
        if isinstance(test, _Deferred):
            branches = {k: self.close(node.get(k), frozenset(), depth) for k in ("then", "else")}
            return _Deferred({"op": "cond", "test": test.tree, **branches})
        return self.eval(node.get("then" if boolean(test, "?:") else "else"), depth)

    # --- constructors --------------------------------------------------------------------------

    def list_(self, node: Expr, depth: int) -> Any:
        items = [self.eval(item, depth) for item in _field(node, "items", list)]
        if any(isinstance(x, _Deferred) for x in items):
            tree = {"op": "list", "items": [_tree(x) for x in items]}
            return _Deferred(tree, [_export(x) for x in items])
        return check_size(items)

    def object_(self, node: Expr, depth: int) -> Any:
        entries = []
        for entry in _field(node, "entries", list):
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
                raise EvaluationError("malformed expression: object entries are [key, expr] pairs")
            entries.append((entry[0], self.eval(entry[1], depth)))
        if any(isinstance(v, _Deferred) for _, v in entries):
            tree = {"op": "object", "entries": [[k, _tree(v)] for k, v in entries]}
            return _Deferred(tree, {k: _export(v) for k, v in entries})
        return check_size(dict(entries))

    def interp(self, node: Expr, depth: int) -> Any:
        parts: list[Any] = []
        length = 0
        for part in _field(node, "parts", list):
            value = part if isinstance(part, str) else self.eval(part, depth)
            parts.append(value if isinstance(value, _Deferred) else to_text(value))
            length += len(parts[-1]) if isinstance(parts[-1], str) else 0
            if length > MAX_STRING:
                raise EvaluationError(f"string too long (the limit is {MAX_STRING} characters)")
        if any(isinstance(p, _Deferred) for p in parts):
            # Known parts are folded into the text, so the tree shows only what is still unknown.
            merged: list[Any] = []
            for part in parts:
                if isinstance(part, str) and merged and isinstance(merged[-1], str):
                    merged[-1] += part
                else:
                    merged.append(part if isinstance(part, str) else part.tree)
            return _Deferred({"op": "interp", "parts": merged})
        return check_size("".join(parts))

    def lambda_(self, node: Expr, depth: int) -> Any:
        param = _field(node, "param", str)
        body = self.close(node.get("body"), frozenset({param}), depth)
        return _Deferred({"op": "lambda", "param": param, "body": body})

    # --- closing a tree that is not evaluated now ----------------------------------------------

    def close(self, expr: Any, bound: frozenset[str], depth: int) -> dict[str, Any]:
        """``expr`` with every name that is known now replaced by its value.

        Sub-trees that need neither a deferred root nor a bound name are evaluated right away when
        that succeeds (they are pure); an error is left for the worker to meet, if it gets there.
        """
        if depth > MAX_DEPTH:
            raise EvaluationError(f"expression nested too deeply (more than {MAX_DEPTH} levels)")
        node, op = _node(expr)
        if op != "lambda" and not (_free_names(node) & (bound | self.defer)):
            try:
                value = self.eval(node, depth)
                if not isinstance(value, _Deferred):
                    return _lit(value)
            except EvaluationError:
                pass
        if op == "name":
            name = node["name"]
            if name in bound or name in self.defer or name not in self.env:
                return dict(node)
            value = self.env[name]
            return dict(value[DEFERRED_KEY]) if self.defer and is_deferred(value) else _lit(value)
        if op == "lambda":
            inner = bound | {_field(node, "param", str)}
            return {**node, "body": self.close(node.get("body"), inner, depth + 1)}
        return _map_children(node, lambda child: self.close(child, bound, depth + 1))


def _map_children(node: Expr, fn: Any) -> dict[str, Any]:
    """A copy of ``node`` with ``fn`` applied to each child expression."""
    out = dict(node)
    for key in ("obj", "index", "arg", "left", "right", "test", "then", "else", "body"):
        if key in node:
            out[key] = fn(node[key])
    if isinstance(node.get("args"), list):
        out["args"] = [fn(a) for a in node["args"]]
    if isinstance(node.get("items"), list):
        out["items"] = [fn(a) for a in node["items"]]
    if isinstance(node.get("entries"), list):
        out["entries"] = [
            [e[0], fn(e[1])] if isinstance(e, (list, tuple)) and len(e) == 2 else e
            for e in node["entries"]
        ]
    if node.get("op") == "interp" and isinstance(node.get("parts"), list):
        out["parts"] = [p if isinstance(p, str) else fn(p) for p in node["parts"]]
    return out


def _free_names(node: Expr) -> frozenset[str]:
    """The root names an expression reads (a lambda's parameter is not free inside it)."""
    names: set[str] = set()

    def visit(expr: Any, bound: frozenset[str]) -> None:
        if not isinstance(expr, Mapping):
            return
        if expr.get("op") == "name" and isinstance(expr.get("name"), str):
            if expr["name"] not in bound:
                names.add(expr["name"])
        elif expr.get("op") == "lambda":
            param = expr.get("param")
            visit(expr.get("body"), bound | {param} if isinstance(param, str) else bound)
        else:
            _map_children(expr, lambda child: visit(child, bound))

    visit(node, frozenset())
    return frozenset(names)


def _binary(operator: str, left: Any, right: Any) -> dict[str, Any]:
    return {"op": "binary", "operator": operator, "left": left, "right": right}


_OPS: dict[str, Any] = {
    "lit": _Evaluator.lit,
    "name": _Evaluator.name,
    "get": _Evaluator.get,
    "index": _Evaluator.index,
    "call": _Evaluator.call,
    "unary": _Evaluator.unary,
    "binary": _Evaluator.binary,
    "and": _Evaluator.logic,
    "or": _Evaluator.logic,
    "cond": _Evaluator.cond,
    "list": _Evaluator.list_,
    "object": _Evaluator.object_,
    "interp": _Evaluator.interp,
    "lambda": _Evaluator.lambda_,
}


def _run(evaluator: _Evaluator, expr: Any) -> Any:
    try:
        return _export(evaluator.eval(expr, 0))
    except RecursionError:
        # Deeply nested *values* (not trees) can still exhaust the stack in equality or json().
        raise EvaluationError("value nested too deeply to evaluate") from None
    except ArithmeticError:
        # Only reachable with numbers JSON cannot hold (huge integers, infinities in the env).
        raise EvaluationError("number out of range") from None


def evaluate(expr: Any, env: Mapping[str, Any], *, defer: Collection[str] = ()) -> Any:
    """Evaluate an expression tree.

    Parameters:
        expr: an expression tree (docs/spec.md, "Expr").
        env: the root names (``params``, ``steps``, ``let`` names, …) and their JSON values.
        defer: root names that are not known here (``secrets``): sub-trees reading them, and
            lambdas, come back as deferred values ``{"$expr": closed_tree}``.
    Returns:
        A JSON value, possibly with deferred values inside.
    Raises:
        EvaluationError: the expression is ill-typed, too big, or not a valid tree.
    """
    return _run(_Evaluator(env, defer), expr)


def resolve(value: Any, env: Mapping[str, Any]) -> Any:
    """``value`` with each deferred value inside replaced by its evaluation in ``env``.

    Deferred lambdas are left as they are (see ``call_lambda``).
    """
    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise EvaluationError(f"value nested too deeply (more than {MAX_DEPTH} levels)")
        if is_deferred(item):
            tree = item[DEFERRED_KEY]
            if isinstance(tree, Mapping) and tree.get("op") == "lambda":
                return item
            return evaluate(tree, env)
        if is_list(item):
            return [walk(x, depth + 1) for x in item]
        if is_object(item):
            return {k: walk(v, depth + 1) for k, v in item.items()}
        return item

    return walk(value, 0)


def call_lambda(value: Any, arg: Any, env: Mapping[str, Any] | None = None) -> Any:
    """Evaluate a deferred lambda ``{"$expr": {"op": "lambda", ...}}`` with its param bound to ``arg``.

    ``env`` gives the roots that were deferred when the lambda was made (``secrets``).
    """
    tree = value[DEFERRED_KEY] if is_deferred(value) else value
    if not isinstance(tree, Mapping) or tree.get("op") != "lambda":
        raise EvaluationError("expected a lambda (an expression evaluated per element)")
    param = _field(tree, "param", str)
    return _run(_Evaluator({**(env or {}), param: arg}, ()), tree.get("body"))
