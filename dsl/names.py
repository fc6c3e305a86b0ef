"""Name resolution in expressions: what each root means where it is used (E2xx, and W504).

``check_expr`` walks one expression in a ``Scope``, reports unknown or out-of-scope names, and
records the steps it reads (``refs``, for the dependencies) and unguarded reads of nullable outputs.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field

from dsl import ast
from dsl.builder import KEYWORDS
from dsl.errors import Diagnostic, error, warning
from dsl.functions import FUNCTIONS
from dsl.spec import Span
from dsl.types import ERROR_FIELDS, STEP_FIELDS, WORKFLOW_FIELDS

ROOTS = frozenset({"params", "steps", "secrets", "workflow"})


def did_you_mean(name: str, candidates: object) -> tuple[str, ...]:
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)  # type: ignore[arg-type]
    return (f"help: did you mean `{match[0]}`?",) if match else ()


@dataclass
class Scope:
    """What an expression may see; ``steps`` are the readable steps, ``nullable`` those whose output may be null."""

    lets: frozenset[str]
    params: frozenset[str]
    steps: frozenset[str]
    loop_vars: dict[str, str]  # every loop variable of the workflow -> its step
    nullable: frozenset[str] = frozenset()
    loop_var: str | None = None
    self_ok: bool = False
    error_ok: bool = False
    item_ok: bool = False
    allow_steps: bool = True
    refs: dict[str, Span] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def but(self, **changes: object) -> "Scope":
        """A copy with ``changes``; shares ``refs`` and ``diagnostics`` unless they are given.

        (``dataclasses.replace`` does the same at several times the cost, once per config entry.)
        """
        scope = copy.copy(self)
        scope.__dict__.update(changes)
        return scope

    def visible(self) -> set[str]:
        names = set(self.lets) | ROOTS
        for flag, name in ((self.self_ok, "self"), (self.error_ok, "error"), (self.item_ok, "item")):
            if flag:
                names.add(name)
        if self.loop_var:
            names.add(self.loop_var)
        return names


def check_expr(expr: ast.Expr, scope: Scope, guarded: bool = False) -> None:
    """Report every name problem in ``expr``; ``guarded`` means we are left of a `??`."""
    if isinstance(expr, (ast.Literal, ast.Duration)):
        return
    if isinstance(expr, ast.Name):
        _check_root(expr, scope)
    elif isinstance(expr, ast.Member):
        chain, root = _chain(expr)
        if isinstance(root, ast.Name) and root.name in ("steps", "params", "workflow", "error") and _is_root(root, scope):
            _check_path(root, chain, scope, guarded)
        else:
            check_expr(expr.obj, scope, guarded)
    elif isinstance(expr, ast.Index):
        check_expr(expr.obj, scope, guarded)
        check_expr(expr.index, scope)
    elif isinstance(expr, ast.Call):
        if expr.fn not in FUNCTIONS:
            scope.diagnostics.append(error("E210", f"unknown function `{expr.fn}`", expr.fn_loc, *did_you_mean(expr.fn, FUNCTIONS)))
        for arg in expr.args:
            check_expr(arg, scope)
    elif isinstance(expr, ast.Unary):
        check_expr(expr.arg, scope)
    elif isinstance(expr, ast.Binary):
        check_expr(expr.left, scope, guarded or expr.op == "??")
        check_expr(expr.right, scope, guarded)
    elif isinstance(expr, ast.Cond):
        check_expr(expr.test, scope)
        check_expr(expr.then, scope, guarded)
        check_expr(expr.else_, scope, guarded)
    elif isinstance(expr, ast.ListExpr):
        for item in expr.items:
            check_expr(item, scope)
    elif isinstance(expr, ast.ObjectExpr):
        for entry in expr.entries:
            check_expr(entry.value, scope)
    elif isinstance(expr, ast.Interp):
        for part in expr.parts:
            if not isinstance(part, str):
                check_expr(part, scope)


def _is_root(name: ast.Name, scope: Scope) -> bool:
    # A let or loop variable may shadow nothing: roots are reserved by the checks on declarations.
    return name.name != "error" or scope.error_ok


def _chain(expr: ast.Member) -> tuple[list[ast.Member], ast.Expr]:
    chain: list[ast.Member] = []
    node: ast.Expr = expr
    while isinstance(node, ast.Member):
        chain.append(node)
        node = node.obj
    chain.reverse()
    return chain, node


def _check_path(root: ast.Name, chain: list[ast.Member], scope: Scope, guarded: bool) -> None:
    first = chain[0]
    if root.name == "params":
        if first.key not in scope.params:
            scope.diagnostics.append(error("E204", f"unknown parameter `{first.key}`", first.key_loc, *did_you_mean(first.key, scope.params)))
    elif root.name == "workflow":
        if first.key not in WORKFLOW_FIELDS:
            scope.diagnostics.append(error("E211", f"`workflow` has no field `{first.key}`", first.key_loc,
                                           f"note: it has {', '.join(sorted(WORKFLOW_FIELDS))}"))
    elif root.name == "error":
        if first.key not in ERROR_FIELDS:
            scope.diagnostics.append(error("E211", f"`error` has no field `{first.key}`", first.key_loc, "note: it has message, step"))
    else:
        _check_step_path(root, chain, scope, guarded)


def _check_step_path(root: ast.Name, chain: list[ast.Member], scope: Scope, guarded: bool) -> None:
    first = chain[0]
    name = first.key
    if not scope.allow_steps:
        scope.diagnostics.append(error("E212", "`steps` cannot be used here", root.loc, "note: lets and schedules are evaluated before any step runs"))
        return
    if name not in scope.steps:
        scope.diagnostics.append(error("E201", f"unknown step `{name}`", first.key_loc, *did_you_mean(name, scope.steps)))
        return
    scope.refs.setdefault(name, first.key_loc)
    if len(chain) < 2:
        return
    fld = chain[1]
    if fld.key not in STEP_FIELDS:
        scope.diagnostics.append(error("E211", f"a step has no field `{fld.key}`", fld.key_loc,
                                       "note: a step has output, status, error, attempts", *did_you_mean(fld.key, STEP_FIELDS)))
    elif fld.key == "output" and name in scope.nullable and not guarded:
        scope.diagnostics.append(warning(
            "W504", f"output of `{name}` may be null (the step has `when` or `allow_failure`)", fld.loc,
            f"help: give a fallback: `{_text(chain[-1])} ?? ...`",
        ))


def _text(expr: ast.Expr) -> str:
    if isinstance(expr, ast.Member):
        return f"{_text(expr.obj)}.{expr.key}"
    if isinstance(expr, ast.Name):
        return expr.name
    return "..."


def _check_root(name: ast.Name, scope: Scope) -> None:
    n = name.name
    if n in KEYWORDS - {"workflow"}:
        return  # already reported as a reserved word by the parser
    if n in scope.visible():
        if n == "steps" and not scope.allow_steps:
            scope.diagnostics.append(error("E212", "`steps` cannot be used here", name.loc))
        return
    if n == "self":
        scope.diagnostics.append(error("E205", "`self` is only defined inside a `compensate` block", name.loc))
    elif n == "error":
        scope.diagnostics.append(error("E206", "`error` is only defined in the steps of `on failure`", name.loc))
    elif n == "item":
        scope.diagnostics.append(error("E208", "`item` is only defined in per-element expressions (`map`, `where` of filter, `by` of sort)", name.loc))
    elif n in scope.loop_vars:
        scope.diagnostics.append(error("E207", f"loop variable `{n}` is only defined inside step `{scope.loop_vars[n]}`", name.loc))
    else:
        scope.diagnostics.append(error("E204", f"undefined name `{n}`", name.loc, *did_you_mean(n, scope.visible())))
