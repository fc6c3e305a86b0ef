"""`retry` and `timeout` clauses -> ``Retry`` and seconds, with their E3xx checks."""

from __future__ import annotations

from typing import Mapping

from dsl import ast
from dsl.errors import Diagnostic, error
from dsl.lowering import NOT_CONSTANT, constant
from dsl.names import did_you_mean, names_in_constant
from dsl.spec import Retry
from dsl.types import ERROR_CLASSES, RETRY_FIELDS, is_error_class


def resolve_retry(clause: ast.RetryClause, lets: Mapping[str, ast.Let], diags: list[Diagnostic]) -> Retry:
    """`retry 5`, `retry { ... }`, or `retry NAME` with NAME a `let` bound to one of those."""
    value = clause.value
    if isinstance(value, ast.Name) and value.name in lets:
        value = lets[value.name].expr
    if not isinstance(value, ast.Name) and not names_in_constant(value, "`retry`", diags):
        return Retry()  # a bare name that is no `let` gets E315 below, which says what `retry` takes
    if isinstance(value, ast.Literal) and type(value.value) is int:
        if value.value < 1:
            diags.append(error("E312", "`retry` needs at least 1 attempt (the first try counts)", value.loc))
            return Retry()
        return Retry(attempts=value.value)
    if isinstance(value, ast.ObjectExpr):
        return _retry_object(value, diags)
    diags.append(error(
        "E315", "`retry` takes a number of attempts, an object, or the name of a `let` bound to one", clause.value.loc,
        "help: e.g. `retry 3` or `retry { attempts: 5, delay: 1s }`",
    ))
    return Retry()


def _retry_object(obj: ast.ObjectExpr, diags: list[Diagnostic]) -> Retry:
    base = Retry()
    fields: dict[str, object] = {}
    spans = {}
    for entry in obj.entries:
        if entry.key not in RETRY_FIELDS:
            diags.append(error("E312", f"unknown retry field `{entry.key}`", entry.loc, *did_you_mean(entry.key, RETRY_FIELDS)))
            continue
        checked = _field(entry, diags)
        if checked is not NOT_CONSTANT:
            fields[entry.key] = checked
            spans[entry.key] = entry.value.loc
    retry = Retry(
        attempts=int(fields.get("attempts", base.attempts)),  # type: ignore[call-overload]
        delay=float(fields.get("delay", base.delay)),  # type: ignore[arg-type]
        backoff=float(fields.get("backoff", base.backoff)),  # type: ignore[arg-type]
        max_delay=float(fields.get("max_delay", base.max_delay)),  # type: ignore[arg-type]
        jitter=bool(fields.get("jitter", base.jitter)),
        errors=tuple(fields.get("errors", base.errors)),  # type: ignore[arg-type]
    )
    if retry.max_delay < retry.delay:
        where = spans.get("max_delay") or spans.get("delay") or obj.loc
        diags.append(error("E310", f"retry `max_delay` ({retry.max_delay:g}s) is less than `delay` ({retry.delay:g}s)", where))
    return retry


def _field(entry: ast.ObjectEntry, diags: list[Diagnostic]) -> object:
    key, value = entry.key, constant(entry.value)
    loc = entry.value.loc
    if key == "attempts":
        if type(value) is int and value >= 1:
            return value
        diags.append(error("E312", "retry `attempts` must be a whole number of at least 1", loc))
    elif key in ("delay", "max_delay"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        diags.append(error("E312", f"retry `{key}` must be a duration such as `1s`", loc))
    elif key == "backoff":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            return float(value)
        diags.append(error("E312", "retry `backoff` must be a number of at least 1", loc))
    elif key == "jitter":
        if isinstance(value, bool):
            return value
        diags.append(error("E312", "retry `jitter` must be `true` or `false`", loc))
    else:
        return _errors(entry.value, value, diags)
    return NOT_CONSTANT


def _errors(expr: ast.Expr, value: object, diags: list[Diagnostic]) -> object:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        diags.append(error("E312", "retry `errors` must be a list of error class names", expr.loc))
        return NOT_CONSTANT
    items = expr.items if isinstance(expr, ast.ListExpr) else ()
    for i, name in enumerate(value):
        if not is_error_class(name):
            loc = items[i].loc if i < len(items) else expr.loc
            diags.append(error("E311", f"unknown error class `{name}`", loc,
                               *did_you_mean(name, ERROR_CLASSES), f"note: known classes: {', '.join(ERROR_CLASSES)}, http.NNN"))
    return value


def seconds(expr: ast.Expr, what: str, diags: list[Diagnostic]) -> float | None:
    """A duration (or plain number of seconds) as a float; an error otherwise."""
    if not names_in_constant(expr, f"`{what}`", diags):
        return None
    value = constant(expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    diags.append(error("E316", f"`{what}` takes a positive duration such as `30s` or `1h30m`", expr.loc))
    return None
