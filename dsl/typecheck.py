"""Types where they are known: the JSON kinds an expression can have, and the operations that must fail.

A type is the set of kinds a value may have at run time (``null bool int float string list
object``). Params have their declared types, literals and functions theirs, step outputs the shape
of their step type; the rest (fields of objects, loop variables, `item`) may be anything. An
operation is an error only when it fails for *every* kind its operands may have, so nothing the run
could do is refused: ``len(params.count)`` with ``count: int`` is E321, ``len(steps.a.output.x)``
is not. Wrong numbers of arguments are E323; a constant expression that always fails (``1 / 0``) is
E322; an `==` between types that can never be equal is W506.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from dsl import ast
from dsl.errors import Diagnostic, error, warning
from dsl.spec import Span

Type = frozenset[str]

KINDS = ("null", "bool", "int", "float", "string", "list", "object")
UNKNOWN = "?"  # a member of every type that comes from something unknown (a field, an element)
ANY: Type = frozenset(KINDS) | {UNKNOWN}
NULL: Type = frozenset({"null"})
BOOL: Type = frozenset({"bool"})
INT: Type = frozenset({"int"})
FLOAT: Type = frozenset({"float"})
NUMBER: Type = frozenset({"int", "float"})
STRING: Type = frozenset({"string"})
LIST: Type = frozenset({"list"})
OBJECT: Type = frozenset({"object"})

_PARAM_KINDS = {"string": STRING, "int": INT, "float": NUMBER, "bool": BOOL, "object": OBJECT, "any": ANY}
# What a step of each built-in type produces (docs/language.md, section 4).
_OUTPUTS = {
    "http": OBJECT, "transform": LIST, "filter": LIST, "validate": OBJECT, "aggregate": LIST, "batch": LIST,
    "sort": LIST, "sleep": NULL, "approval": OBJECT,
}
_STEP_FIELDS = {"status": STRING | NULL, "error": OBJECT | NULL, "attempts": INT}
_FIXED_FIELDS = {
    ("workflow", "name"): STRING, ("workflow", "run_id"): STRING, ("workflow", "scheduled_at"): STRING | NULL,
    ("error", "step"): STRING | NULL, ("error", "message"): STRING,
}


@dataclass(frozen=True)
class Function:
    low: int
    high: int | None  # None: no upper bound
    args: tuple[Type, ...]  # accepted kinds per position; the last one repeats
    result: Type


_F = Function
FUNCTION_TYPES: dict[str, Function] = {
    "len": _F(1, 1, (STRING | LIST | OBJECT | NULL,), INT),
    "merge": _F(1, None, (OBJECT | NULL,), OBJECT),
    "keys": _F(1, 1, (OBJECT,), LIST), "values": _F(1, 1, (OBJECT,), LIST),
    "upper": _F(1, 1, (STRING,), STRING), "lower": _F(1, 1, (STRING,), STRING), "trim": _F(1, 1, (STRING,), STRING),
    "split": _F(2, 2, (STRING, STRING), LIST), "join": _F(1, 2, (LIST, STRING), STRING),
    "contains": _F(2, 2, (LIST | STRING | OBJECT | NULL, ANY), BOOL),
    "startswith": _F(2, 2, (STRING, STRING), BOOL), "endswith": _F(2, 2, (STRING, STRING), BOOL),
    "replace": _F(3, 3, (STRING, STRING, STRING), STRING),
    "round": _F(1, 2, (NUMBER, NUMBER), NUMBER), "floor": _F(1, 1, (NUMBER,), INT), "ceil": _F(1, 1, (NUMBER,), INT),
    "min": _F(1, None, (ANY,), ANY), "max": _F(1, None, (ANY,), ANY), "sum": _F(1, 1, (LIST,), NUMBER),
    "abs": _F(1, 1, (NUMBER,), NUMBER),
    "int": _F(1, 1, (NUMBER | STRING | BOOL,), INT), "float": _F(1, 1, (NUMBER | STRING | BOOL,), FLOAT),
    "string": _F(1, 1, (ANY,), STRING), "bool": _F(1, 1, (ANY,), BOOL), "json": _F(1, 1, (ANY,), STRING),
}


@dataclass
class TypeEnv:
    """What is known of the roots: param types, step output types, `let` types, constant `let` values."""

    params: dict[str, Type] = field(default_factory=dict)
    outputs: dict[str, Type] = field(default_factory=dict)
    lets: dict[str, Type] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # constant outputs (of `noop` steps that always run)
    elements: dict[str, Type] = field(default_factory=dict)  # loop variable -> the kinds of its elements
    param_elements: dict[str, Type] = field(default_factory=dict)  # `list<T>` param -> the kinds of T
    item: Type = ANY  # `item` of the per-element config being checked: an element of its `input`
    self_output: Type = ANY  # `self.output` in the `compensate` being checked: the step's (or item's) output
    config: dict[str, Type] = field(default_factory=dict)  # the kinds of the config entries just checked


# Config entries of built-in step types whose kind the worker insists on.
CONFIG_TYPES: dict[tuple[str, str], Type] = {
    **{(t, "input"): LIST for t in ("transform", "filter", "validate", "aggregate", "batch", "sort")},
    ("http", "url"): STRING, ("http", "method"): STRING | NULL, ("http", "headers"): OBJECT | NULL,
    ("http", "query"): OBJECT | NULL, ("batch", "size"): INT, ("aggregate", "group_by"): LIST,
    ("aggregate", "metrics"): OBJECT, ("validate", "schema"): OBJECT, ("sleep", "duration"): NUMBER,
    ("subflow", "workflow"): STRING, ("subflow", "params"): OBJECT | NULL, ("approval", "prompt"): STRING | NULL,
}


def element_type(text: str) -> Type | None:
    """The kinds of the elements of a param typed ``list<T>`` (or ``list<T>?``), else ``None``."""
    text = text.removesuffix("?")
    return param_type(text[5:-1]) if text.startswith("list<") else None


def param_type(text: str) -> Type:
    """The kinds of a param type as written: ``int`` -> int, ``list<object>?`` -> list or null."""
    if text.endswith("?"):
        return param_type(text[:-1]) | NULL
    if text.startswith("list<"):
        return LIST
    return _PARAM_KINDS.get(text, ANY)


def output_type(step_type: str, fan_out: bool, nullable: bool, noop_output: Type | None = None) -> Type:
    """The kinds of ``steps.X.output``: a fan-out's is the list of its items' outputs."""
    kinds = LIST if fan_out else (noop_output if step_type == "noop" and noop_output is not None
                                  else _OUTPUTS.get(step_type, ANY))
    return kinds | NULL if nullable else kinds


def show(kinds: Type) -> str:
    """``int``, ``string or null``, ``number``: how a message names a type."""
    kinds = kinds - {UNKNOWN}
    if kinds == ANY - {UNKNOWN}:
        return "any value"
    names = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "int":
            names.append("number" if "float" in kinds else "int")
        elif kind != "float" or "int" not in kinds:
            names.append(kind)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _article(kinds: Type) -> str:
    text = show(kinds)
    return ("an " if text[0] in "aeiou" else "a ") + text if text != "null" else "null"


def infer(expr: ast.Expr, scope: Any) -> Type:
    """The type of ``expr`` in ``scope`` (a ``dsl.names.Scope`` with ``types``); problems go to its diagnostics."""
    return _Infer(scope).expr(expr)


def elements(items: ast.Expr, scope: Any) -> Type:
    """The kinds of the elements of ``items`` (a `for each` list) where known, else any value."""
    return _Infer(scope).elements(items)


def expect(kinds: Type | None, wanted: Type, expr: ast.Expr, what: str, diagnostics: list[Diagnostic],
           code: str = "E321") -> bool:
    """Report ``code`` when ``expr`` (of type ``kinds``) cannot be one of ``wanted``; whether it did.

    Refused: no kind it may have fits, or it is fully known (no unknown part) and one of its kinds
    other than null does not fit.
    """
    if kinds is None:
        return False
    real = kinds - {UNKNOWN}
    if real & wanted and (UNKNOWN in kinds or not real - wanted - NULL):
        return False
    shown = wanted - NULL or wanted  # "a string" rather than "null or a string": null is rarely what is meant
    diagnostics.append(error(code, f"{what} must be {_article(shown)}, but {_source(expr)} is {_article(kinds)}", expr.loc))
    return True


def _source(expr: ast.Expr) -> str:
    from dsl.describe import describe
    from dsl.lowering import lower

    try:
        text = describe(lower(expr))
    except Exception:  # noqa: BLE001 - only a message is at stake
        return "this expression"
    return f"`{text}`" if len(text) <= 40 else "this expression"


class _Infer:
    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self.env: TypeEnv = scope.types
        self.diags: list[Diagnostic] = scope.diagnostics
        # During the saga and `on failure`, any step may not have run: every output may be null.
        self.maybe_unrun = bool(scope.self_ok or scope.error_ok)

    def fail(self, code: str, message: str, loc: Span) -> Type:
        self.diags.append(error(code, message, loc))
        return ANY

    def expr(self, node: ast.Expr) -> Type:
        before = len(self.diags)
        kinds = self._expr(node)
        if len(self.diags) == before and not isinstance(node, (ast.Literal, ast.Duration, ast.Name)):
            self._fold(node)
        return kinds

    def _fold(self, node: ast.Expr) -> None:
        """E322 when ``node`` reads only constants and its evaluation fails."""
        from dsl.evaluator import EvaluationError, evaluate
        from dsl.lowering import lower
        from dsl.names import root_names

        names = root_names(node)
        if not names <= self.env.constants.keys():
            return
        try:
            evaluate(lower(node), self.env.constants)
        except EvaluationError as exc:
            self.diags.append(error("E322", f"this expression always fails: {exc}", node.loc))
        except RecursionError:
            pass

    def _expr(self, node: ast.Expr) -> Type:
        if isinstance(node, ast.Literal):
            return kind_of(node.value)
        if isinstance(node, ast.Duration):
            return FLOAT  # seconds
        if isinstance(node, ast.Name):
            return self._name(node.name)
        if isinstance(node, ast.Member):
            return self._member(node)
        if isinstance(node, ast.Index):
            return self._index(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Unary):
            arg = self._expr(node.arg)
            if node.op == "-":
                expect(arg, NUMBER, node.arg, "the operand of `-`", self.diags)
                return arg & NUMBER or NUMBER
            expect(arg, BOOL, node.arg, "the operand of `not`", self.diags)
            return BOOL
        if isinstance(node, ast.Binary):
            return self._binary(node)
        if isinstance(node, ast.Cond):
            expect(self._expr(node.test), BOOL, node.test, "the condition of `? :`", self.diags)
            return self._expr(node.then) | self._expr(node.else_)
        if isinstance(node, ast.ListExpr):
            for item in node.items:
                self._expr(item)
            return LIST
        if isinstance(node, ast.ObjectExpr):
            for entry in node.entries:
                self._expr(entry.value)
            return OBJECT
        if isinstance(node, ast.Interp):
            for part in node.parts:
                if not isinstance(part, str):
                    self._expr(part)
            return STRING
        return ANY

    def _name(self, name: str) -> Type:
        if name in ("params", "steps", "secrets", "workflow", "error", "self"):
            return OBJECT
        if name in self.env.constants:
            return kind_of(self.env.constants[name])
        if name == self.scope.loop_var and name in self.env.elements:
            return self.env.elements[name]
        if name == "item" and self.scope.item_ok:
            return self.env.item
        return self.env.lets.get(name, ANY)  # other loop variables and `item`: any element

    def elements(self, items: ast.Expr) -> Type:
        """The kinds of the elements of the list ``items`` where known (a `list<T>` param, a literal list)."""
        if isinstance(items, ast.Member) and isinstance(items.obj, ast.Name) and items.obj.name == "params":
            return self.env.param_elements.get(items.key, ANY)
        if isinstance(items, ast.ListExpr) and items.items:
            return frozenset().union(*(self._expr(i) for i in items.items))
        value = self._value(items)
        if isinstance(value, list) and value:
            return frozenset().union(*(kind_of(v) for v in value))
        return ANY

    def _value(self, node: ast.Expr) -> Any:
        """The value of ``node`` when the compiler knows it (a path into a constant), else ``_UNKNOWN``."""
        if isinstance(node, ast.Literal):
            return node.value
        if isinstance(node, ast.Name):
            return self.env.constants.get(node.name, _UNKNOWN)
        if isinstance(node, ast.Member):
            obj = node.obj
            if isinstance(obj, ast.Member) and isinstance(obj.obj, ast.Name) and obj.obj.name == "steps":
                if node.key != "output" or self.maybe_unrun:
                    return _UNKNOWN
                return self.env.values.get(obj.key, _UNKNOWN)
            value = self._value(obj)
            if isinstance(value, dict):
                return value.get(node.key)
            return None if value is None else _UNKNOWN
        return _UNKNOWN

    def _member(self, node: ast.Member) -> Type:
        value = self._value(node)
        if value is not _UNKNOWN:
            return kind_of(value)
        if self.maybe_unrun:  # the step may not have run: its constant output, or null
            self.maybe_unrun = False
            value = self._value(node)
            self.maybe_unrun = True
            if value is not _UNKNOWN:
                return kind_of(value) | NULL
        root = node.obj
        if isinstance(root, ast.Name):
            if root.name == "params" and node.key in self.env.params:
                return self.env.params[node.key]
            if root.name == "secrets":
                return STRING
            if root.name == "self" and node.key == "output":
                return self.env.self_output
            fixed = _FIXED_FIELDS.get((root.name, node.key))
            if fixed is not None:
                return fixed
        if isinstance(root, ast.Member) and isinstance(root.obj, ast.Name) and root.obj.name == "steps":
            if node.key == "output":
                kinds = self.env.outputs.get(root.key, ANY)
                return kinds | NULL if self.maybe_unrun else kinds
            return _STEP_FIELDS.get(node.key, ANY)
        obj = self._expr(root)
        if not obj & (OBJECT | NULL) or (UNKNOWN not in obj and obj - OBJECT - NULL):
            bad = obj - OBJECT - NULL - {UNKNOWN} or obj
            where = f"{_source(root)}" if bad == obj else f"{_source(root)} is {_article(obj)}"
            return self.fail("E321", f"cannot read field `{node.key}` of {_article(bad)} ({where})", node.key_loc)
        return ANY if "object" in obj else NULL

    def _index(self, node: ast.Index) -> Type:
        obj, idx = self._expr(node.obj), self._expr(node.index)
        works = []
        if "object" in obj and "string" in idx:
            works.append(ANY)
        if obj & (LIST | STRING) and "int" in idx:
            works.append((ANY if "list" in obj else STRING) | NULL)
        if "null" in obj:
            works.append(NULL)
        if not works:
            return self.fail("E321", f"cannot index {_article(obj)} ({_source(node.obj)}) with {_article(idx)}", node.loc)
        return frozenset().union(*works)

    def _call(self, node: ast.Call) -> Type:
        args = [self._expr(a) for a in node.args]
        fn = FUNCTION_TYPES.get(node.fn)
        if fn is None:
            return ANY  # an unknown function is E210 (dsl.names)
        count = len(args)
        if count < fn.low or (fn.high is not None and count > fn.high):
            if fn.high is None:
                wanted = f"at least {fn.low} argument{'s' if fn.low != 1 else ''}"
            elif fn.low == fn.high:
                wanted = f"{fn.low} argument{'s' if fn.low != 1 else ''}"
            else:
                wanted = f"{fn.low} to {fn.high} arguments"
            return self.fail("E323", f"{node.fn}() takes {wanted}, got {count}", node.loc)
        before = len(self.diags)
        for i, (kinds, arg) in enumerate(zip(args, node.args)):
            accepted = fn.args[min(i, len(fn.args) - 1)]
            if node.fn in ("min", "max") and count == 1:
                accepted = LIST
            expect(kinds, accepted, arg, f"argument {i + 1} of {node.fn}()", self.diags)
        if len(self.diags) > before:
            return ANY  # one report per mistake
        if node.fn in ("min", "max"):
            return self._min_max(node, args)
        return fn.result

    def _min_max(self, node: ast.Call, args: list[Type]) -> Type:
        """`min(list)` or `min(a, b, ...)` of numbers, or of strings."""
        if len(args) == 1:
            return NUMBER | STRING | NULL | {UNKNOWN}
        known = [a for a in args if UNKNOWN not in a]
        numbers, strings = any(a <= NUMBER for a in known), any(a <= STRING for a in known)
        wrong = next((i for i, a in enumerate(args) if not a & (NUMBER | STRING)), None)
        if wrong is not None or (numbers and strings):
            which = node.args[wrong] if wrong is not None else node
            return self.fail("E321", f"{node.fn}() compares numbers, or strings, not {', '.join(show(a) for a in args)}",
                             which.loc)
        return frozenset().union(*args) & (NUMBER | STRING | {UNKNOWN})

    def _binary(self, node: ast.Binary) -> Type:
        op = node.op
        before = len(self.diags)
        left = self._expr(node.left)
        right = self._expr(node.right)
        if len(self.diags) > before:
            return ANY  # an operand is wrong already: one report per mistake
        if op == "??":
            return (left - NULL) | right
        if op in ("and", "or"):
            expect(left, BOOL, node.left, f"the left operand of `{op}`", self.diags)
            expect(right, BOOL, node.right, f"the right operand of `{op}`", self.diags)
            return BOOL
        if op in ("==", "!="):
            if _never_equal(left, right):
                self.diags.append(warning(
                    "W506", f"{_source(node.left)} is {_article(left)} and {_source(node.right)} is {_article(right)}: "
                    f"`{op}` is always {'false' if op == '==' else 'true'}", node.loc,
                    "help: convert one side, e.g. `string(x)` or `int(x)`"))
            return BOOL
        if op == "in":
            if not right & (LIST | OBJECT | STRING | NULL):
                return self.fail("E321", f"`in` needs a list, string or object on its right, but {_source(node.right)} "
                                 f"is {_article(right)}", node.right.loc)
            if not right & (LIST | OBJECT | NULL) and not left & STRING:
                return self.fail("E321", f"`in` a string looks for a string, but {_source(node.left)} is {_article(left)}",
                                 node.left.loc)
            return BOOL
        pairs: list[tuple[Type, Type, Callable[[], Type]]] = []
        if op == "+":
            pairs = [(NUMBER, NUMBER, lambda: _sum_type(left, right)), (STRING, STRING, lambda: STRING), (LIST, LIST, lambda: LIST)]
        elif op in ("-", "*", "/", "%"):
            pairs = [(NUMBER, NUMBER, lambda: NUMBER if op == "/" else _sum_type(left, right))]
        else:  # < <= > >=
            pairs = [(NUMBER, NUMBER, lambda: BOOL), (STRING, STRING, lambda: BOOL)]
        results = [make() for a, b, make in pairs if left & a and right & b]
        if results and UNKNOWN not in left and UNKNOWN not in right:
            # Fully known operands: every pair of their kinds must work (null aside: W504's business).
            combos = [(x, y) for x in left - NULL for y in right - NULL]
            if any(not any(x in a and y in b for a, b, _ in pairs) for x, y in combos):
                results = []
        if not results:
            verb = {"+": "add", "<": "compare", "<=": "compare", ">": "compare", ">=": "compare"}.get(op)
            what = (f"cannot {verb} {show(left)} and {show(right)}" if verb == "add"
                    else f"cannot compare {show(left)} {op} {show(right)}" if verb
                    else f"`{op}` needs numbers")
            return self.fail("E321", f"{what}: {_source(node.left)} is {_article(left)}, {_source(node.right)} is "
                             f"{_article(right)}", node.loc)
        return frozenset().union(*results)


_UNKNOWN = object()


def _sum_type(left: Type, right: Type) -> Type:
    return INT if left & NUMBER <= INT and right & NUMBER <= INT else NUMBER


def _never_equal(left: Type, right: Type) -> bool:
    """Both sides are known, exclude null, and share no kind (int and float are both numbers)."""
    if UNKNOWN in left or UNKNOWN in right or "null" in left or "null" in right:
        return False
    def widen(t: Type) -> Type:
        return t | NUMBER if t & NUMBER else t

    return not widen(left) & widen(right)


def kind_of(value: Any) -> Type:
    """The kind of a JSON value."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return LIST
    return OBJECT
