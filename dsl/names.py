"""Name resolution in expressions: what each root means where it is used (E2xx, and W504).

``check_expr`` walks one expression in a ``Scope``, reports unknown or out-of-scope names, and
records the steps it reads (``refs``, for the dependencies) and unguarded reads of nullable outputs.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any

from dsl import ast
from dsl.builder import KEYWORDS
from dsl.errors import Diagnostic, error, warning
from dsl.functions import FUNCTIONS
from dsl.spec import Span
from dsl.types import ERROR_FIELDS, STEP_FIELDS, WORKFLOW_FIELDS

ROOTS = frozenset({"params", "steps", "secrets", "workflow"})
_SECRETS_NOTE = ("note: secrets are resolved on the worker, right before use: only config entries (of steps and "
                 "`compensate`) and `let`s may read them")


def did_you_mean(name: str, candidates: Iterable[str]) -> tuple[str, ...]:
    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
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
    # The place the expression stands in, for messages ("`when`"), and what the place lets it read
    # at run time (docs/language.md, "Scopes"): secrets are resolved on the worker only.
    place: str = "this expression"
    secrets_ok: bool = True
    secret_lets: frozenset[str] = frozenset()  # `let`s whose value reads `secrets`
    step_var: str | None = None  # the loop variable of the step being checked, bound or not here
    types: Any = None  # a dsl.typecheck.TypeEnv: infer and check types after the names

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


def check_expr(expr: ast.Expr, scope: Scope) -> Any:
    """Report every name problem in ``expr``, then (with ``scope.types``) every type problem.

    Returns the inferred type of ``expr`` (a ``dsl.typecheck.Type``), or ``None`` when the names
    were wrong or no types are known.
    """
    before = len(scope.diagnostics)
    _names(expr, scope, False)
    if scope.types is None or any(d.is_error for d in scope.diagnostics[before:]):
        return None
    from dsl.typecheck import infer

    return infer(expr, scope)


def _names(expr: ast.Expr, scope: Scope, guarded: bool) -> None:
    """Report every name problem in ``expr``; ``guarded`` means we are left of a `??`."""
    if isinstance(expr, (ast.Literal, ast.Duration)):
        return
    if isinstance(expr, ast.Name):
        _check_root(expr, scope)
    elif isinstance(expr, ast.Member):
        chain, root = _chain(expr)
        if isinstance(root, ast.Name) and root.name in ("steps", "params", "workflow", "error") and _is_root(root, scope):
            _check_path(root, chain, scope, guarded)
        elif isinstance(root, ast.Name) and root.name == "secrets":
            _check_root(root, scope)
        else:
            _names(expr.obj, scope, guarded)
    elif isinstance(expr, ast.Index):
        _names(expr.obj, scope, guarded)
        _names(expr.index, scope, False)
    elif isinstance(expr, ast.Call):
        if expr.fn not in FUNCTIONS:
            scope.diagnostics.append(error("E210", f"unknown function `{expr.fn}`", expr.fn_loc, *did_you_mean(expr.fn, FUNCTIONS)))
        for arg in expr.args:
            _names(arg, scope, False)
    elif isinstance(expr, ast.Unary):
        _names(expr.arg, scope, False)
    elif isinstance(expr, ast.Binary):
        _names(expr.left, scope, guarded or expr.op == "??")
        _names(expr.right, scope, guarded)
    elif isinstance(expr, ast.Cond):
        _names(expr.test, scope, False)
        _names(expr.then, scope, guarded)
        _names(expr.else_, scope, guarded)
    elif isinstance(expr, ast.ListExpr):
        for item in expr.items:
            _names(item, scope, False)
    elif isinstance(expr, ast.ObjectExpr):
        for entry in expr.entries:
            _names(entry.value, scope, False)
    elif isinstance(expr, ast.Interp):
        for part in expr.parts:
            if not isinstance(part, str):
                _names(part, scope, False)


def names_in_constant(expr: ast.Expr, place: str, diagnostics: list[Diagnostic]) -> bool:
    """Report an E214 for the first name read by ``expr``, which stands where only a constant may.

    Returns whether ``expr`` reads no name (a literal, list or object of literals, an operation on them).
    """
    for node in _walk(expr):
        if isinstance(node, ast.Name):
            diagnostics.append(error(
                "E214", f"{place} takes a constant; `{node.name}` cannot be read here", node.loc,
                "note: it is fixed when the workflow is deployed, before any run has params, steps or lets"))
            return False
    return True


def _walk(expr: ast.Expr) -> list[object]:
    """Every node of ``expr``, parents before children, in source order."""
    out: list[object] = []
    stack: list[object] = [expr]
    while stack:
        node = stack.pop()
        out.append(node)
        kids: list[object] = []
        if isinstance(node, ast.Member):
            kids = [node.obj]
        elif isinstance(node, ast.Index):
            kids = [node.obj, node.index]
        elif isinstance(node, ast.Call):
            kids = list(node.args)
        elif isinstance(node, ast.Unary):
            kids = [node.arg]
        elif isinstance(node, ast.Binary):
            kids = [node.left, node.right]
        elif isinstance(node, ast.Cond):
            kids = [node.test, node.then, node.else_]
        elif isinstance(node, ast.ListExpr):
            kids = list(node.items)
        elif isinstance(node, ast.ObjectExpr):
            kids = [e.value for e in node.entries]
        elif isinstance(node, ast.Interp):
            kids = [p for p in node.parts if not isinstance(p, str)]
        stack.extend(reversed(kids))
    return out


def root_names(expr: ast.Expr) -> set[str]:
    """Every root name that ``expr`` reads (`params` of `params.x`, `t` of `t + 1`)."""
    return {node.name for node in _walk(expr) if isinstance(node, ast.Name)}


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
        elif n == "secrets" and not scope.secrets_ok:
            scope.diagnostics.append(error("E213", f"`secrets` cannot be read in {scope.place}", name.loc, _SECRETS_NOTE))
        elif n in scope.secret_lets and not scope.secrets_ok:
            scope.diagnostics.append(error("E213", f"`{n}` reads `secrets` and cannot be used in {scope.place}", name.loc,
                                           _SECRETS_NOTE))
        return
    if n == scope.step_var:
        scope.diagnostics.append(error(
            "E207", f"loop variable `{n}` is not defined in {scope.place}", name.loc,
            "note: it is bound for each item: in `where`, the config entries and `compensate`; "
            "`when`, the items and `concurrency` are evaluated once for the whole step"))
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
