"""One step: its checks (types, config, clauses, names) and its lowering to ``StepSpec``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from dsl import ast
from dsl.errors import Diagnostic, error, warning
from dsl.lowering import NOT_CONSTANT, constant, fold, fold_each, is_non_boolean, lambda_, lower
from dsl.names import Scope, check_expr, did_you_mean
from dsl.retry import resolve_retry, seconds
from dsl.plugins import ENTRY_POINT_GROUP, INSTALLED, PluginStepType, StepTypes
from dsl.spec import DEFAULT_RETRYABLE_ERRORS, Compensation, Expr, ForEach, Retry, Span, StepSpec
from dsl.typecheck import ANY, BOOL, CONFIG_TYPES, INT, LIST, NULL, expect, output_type
from dsl.typecheck import elements as element_kinds
from dsl.types import CLAUSES, SIDE_EFFECT_FREE_METHODS, STEP_TYPES, StepType, is_plugin_type, task_type

_SINGLE = (ast.When, ast.ForEach, ast.RetryClause, ast.TimeoutClause, ast.AllowFailure, ast.Doc)
_CLAUSE_WORD = {ast.When: "when", ast.ForEach: "for each", ast.RetryClause: "retry", ast.TimeoutClause: "timeout",
                ast.AllowFailure: "allow_failure", ast.Doc: "doc"}


@dataclass(frozen=True)
class StepDefaults:
    retry: Retry = Retry()
    timeout: float | None = None


@dataclass
class CompiledStep:
    spec: StepSpec
    deps: set[str]
    never_runs: bool  # provably: `when` folds to false, or `for each` to no element


def compile_step(
    step: ast.Step,
    base: Scope,
    lets: Mapping[str, ast.Let],
    defaults: StepDefaults,
    diags: list[Diagnostic],
    side_effects_matter: bool = True,
    constants: Mapping[str, Any] | None = None,
    plugins: StepTypes = INSTALLED,
) -> CompiledStep:
    """Check ``step`` and lower it; problems go to ``diags``.

    ``base`` must share ``diags`` as its ``diagnostics`` and have a fresh ``refs`` for this step.
    ``constants`` are the values of the `let`s known at compile time (for W501); ``plugins`` the
    dotted step types whose config can be checked.
    """
    constants = constants or {}
    singles: dict[type, object] = {}
    for entry in step.entries:
        if isinstance(entry, _SINGLE) or isinstance(entry, (ast.Compensate, ast.CompensateNone)):
            kind = ast.Compensate if isinstance(entry, ast.CompensateNone) else type(entry)
            if kind in singles:
                word = _CLAUSE_WORD.get(kind, "compensate")
                diags.append(error("E313", f"step `{step.name}` has more than one `{word}` clause", entry.loc))
                continue
            singles[kind] = entry
    for_each = singles.get(ast.ForEach)
    loop_var = for_each.var if isinstance(for_each, ast.ForEach) else None
    scope = base.but(loop_var=loop_var, step_var=loop_var)
    if isinstance(for_each, ast.ForEach) and scope.types is not None:
        scope.types.elements[for_each.var] = element_kinds(for_each.items, scope)

    config = _config(step.type, step.type_loc, step.entries, scope, diags, f"step `{step.name}`", plugins)
    if scope.types is not None:  # `self.output` in `compensate`: this step's output (an item's, for a fan-out)
        own = scope.types.config.get("output", ANY) if step.type == "noop" else output_type(step.type, False, False)
        scope.types.self_output = own
    after = [e for e in step.entries if isinstance(e, ast.After)]
    for clause in after:
        for name, loc in clause.names:
            if name == step.name:
                diags.append(error("E401", f"dependency cycle: {name} -> {name}", loc))
            elif name not in scope.steps:
                diags.append(error("E201", f"unknown step `{name}`", loc, *did_you_mean(name, scope.steps)))

    when_expr = None
    when = singles.get(ast.When)
    never_runs = False
    if isinstance(when, ast.When):
        kinds = check_expr(when.expr, scope.but(loop_var=None, place="`when`", secrets_ok=False))
        when_expr = lower(when.expr)
        if is_non_boolean(when.expr):
            diags.append(error("E305", "`when` needs a boolean condition", when.expr.loc, "help: compare it, e.g. `x > 0` or `x != null`"))
        elif expect(kinds, BOOL | NULL, when.expr, "`when`", diags, code="E305"):
            pass
        elif fold(when_expr, constants) is False:
            never_runs = True
            why = "`when false`" if isinstance(when.expr, ast.Literal) else "its `when` is always false"
            diags.append(warning("W501", f"step `{step.name}` can never run ({why})", when.loc))

    fe_spec = _for_each(for_each, scope, diags, constants) if isinstance(for_each, ast.ForEach) else None
    if fe_spec is not None and isinstance(for_each, ast.ForEach) and not never_runs:
        elements = fold_each((fe_spec.items, fe_spec.where), fe_spec.var, constants)
        if elements == []:
            never_runs = True
            why = "`for each` over an empty list" if fold(fe_spec.items, constants) == [] else "`where` is false for every element"
            diags.append(warning("W501", f"step `{step.name}` can never run ({why})", for_each.loc))
    retry = defaults.retry
    retry_clause = singles.get(ast.RetryClause)
    if isinstance(retry_clause, ast.RetryClause):
        retry = resolve_retry(retry_clause, lets, diags)
    retry = _plugin_retry(step.type, retry)
    timeout = defaults.timeout
    timeout_clause = singles.get(ast.TimeoutClause)
    if isinstance(timeout_clause, ast.TimeoutClause):
        timeout = seconds(timeout_clause.value, "timeout", diags)
    compensation = _compensation(singles.get(ast.Compensate), scope, lets, diags, plugins)
    doc = singles.get(ast.Doc)

    deps = {name for clause in after for name, _ in clause.names if name in scope.steps and name != step.name}
    deps |= set(scope.refs) - {step.name}
    if step.name in scope.refs:
        diags.append(error("E401", f"dependency cycle: {step.name} -> {step.name}", scope.refs[step.name],
                           "note: a step cannot read its own output; use `self` inside `compensate`"))
    spec = StepSpec(
        name=step.name, type=step.type, task_type=_task_type(step.type, plugins), config=config,
        depends_on=tuple(sorted(deps)), when=when_expr, for_each=fe_spec, retry=retry, timeout=timeout,
        compensate=compensation, allow_failure=ast.AllowFailure in singles,
        doc=doc.text if isinstance(doc, ast.Doc) else None, span=step.loc,
    )
    if side_effects_matter:
        _side_effect_warnings(step, spec, diags)
    return CompiledStep(spec, deps, never_runs)


def _config(type_name: str, type_loc: Span, entries: tuple[ast.Entry, ...], scope: Scope, diags: list[Diagnostic], what: str,
            plugins: StepTypes, place: str = "config") -> dict[str, Expr]:
    known = STEP_TYPES.get(type_name)
    plugin = None
    any_key = False  # a plugin without a closed set of keys
    if known is None and not is_plugin_type(type_name):
        diags.append(error("E301", f"unknown step type `{type_name}`", type_loc, *did_you_mean(type_name, STEP_TYPES),
                           "note: plugin step types are dotted, e.g. `acme.email`"))
    elif known is None:
        plugin = _plugin(type_name, type_loc, plugins, diags)
        if plugin is not None:
            known = StepType(plugin.keys or frozenset(), plugin.required)
            any_key = plugin.keys is None
    config: dict[str, Expr] = {}
    values: dict[str, Any] = {}
    types = scope.types
    if types is not None:
        types.config = {}
        data = next((e for e in entries if isinstance(e, ast.Config) and e.key == "input"), None)
        types.item = element_kinds(data.value, scope) if data is not None else ANY
    for entry in entries:
        if not isinstance(entry, ast.Config):
            continue
        if entry.key in config:
            diags.append(error("E313", f"config key `{entry.key}` is given twice", entry.loc))
            continue
        lambdas = known.lambdas if known else frozenset()
        is_lambda = entry.key in lambdas and not (type_name == "sort" and isinstance(entry.value, ast.Literal))
        kinds = check_expr(entry.value, scope.but(item_ok=is_lambda, place=f"{place} `{entry.key}`"))
        if types is not None and kinds is not None:
            types.config[entry.key] = kinds
        wanted = CONFIG_TYPES.get((type_name, entry.key))
        if wanted is not None and not is_lambda:
            expect(kinds, wanted, entry.value, f"config `{entry.key}` of `{type_name}`", diags)
        if known is not None and not any_key and entry.key not in known.keys:
            diags.append(error("E302", f"unknown config key `{entry.key}` for `{type_name}` steps", entry.loc,
                               *_key_help(entry.key, known)))
        config[entry.key] = lambda_(entry.value) if is_lambda else lower(entry.value)
        if config[entry.key]["op"] == "lit":
            values[entry.key] = config[entry.key]["value"]
    if known is not None:
        for key in sorted(known.required - set(config)):
            diags.append(error("E303", f"{what} misses required config `{key}` for `{type_name}`", type_loc))
    if plugin is not None:
        locs = {e.key: e.value.loc for e in entries if isinstance(e, ast.Config)}
        for key, message in plugin.check_values(values):
            diags.append(error("E320", f"config `{key}` does not match the schema of `{type_name}`: {message}", locs[key]))
    return config


def _plugin(type_name: str, type_loc: Span, plugins: StepTypes, diags: list[Diagnostic]) -> PluginStepType | None:
    """The plugin step type ``type_name``, or ``None`` (and a W505) when its config cannot be checked."""
    plugin = plugins.get(type_name)
    if plugin is None:
        diags.append(warning("W505", f"no plugin installed for `{type_name}`; its config is not checked", type_loc,
                             *did_you_mean(type_name, plugins),
                             f"note: plugins declare step types in the entry point group `{ENTRY_POINT_GROUP}`",
                             "note: for a step type written in Python, check with `--import MODULE`, or with "
                             "`--steps FILE` from `flow steps export`"))
        return None
    if plugin.problem is not None:
        diags.append(warning("W505", f"the plugin of `{type_name}` cannot be read ({plugin.problem}); its config is not checked",
                             type_loc))
        return None
    return plugin


def _plugin_retry(type_name: str, retry: Retry) -> Retry:
    """A dotted step type (a Python function or a plugin) also retries ``handler`` failures, the
    exceptions its code raises, unless the policy lists its own ``errors``: user code fails for
    passing reasons (a lost connection, a lock) that the built-in handlers classify themselves."""
    if is_plugin_type(type_name) and retry.errors == DEFAULT_RETRYABLE_ERRORS:
        return replace(retry, errors=(*retry.errors, "handler"))
    return retry


def _task_type(type_name: str, plugins: StepTypes) -> str | None:
    plugin = plugins.get(type_name) if is_plugin_type(type_name) else None
    return plugin.task_type if plugin is not None and plugin.problem is None else task_type(type_name)


def _key_help(key: str, known: StepType) -> tuple[str, ...]:
    clause = key.replace("_", " ") if key != "allow_failure" else key
    if clause in CLAUSES:
        return (f"help: `{clause}` is a clause: write `{clause} ...` without `:`",)
    return did_you_mean(key, known.keys) or (f"note: known keys: {', '.join(sorted(known.keys))}",)


def _for_each(fe: ast.ForEach, inner: Scope, diags: list[Diagnostic], constants: Mapping[str, Any]) -> ForEach:
    once = inner.but(loop_var=None, secrets_ok=False)  # evaluated by the coordinator, once for the step
    expect(check_expr(fe.items, once.but(place="the items of `for each`")), LIST, fe.items, "the items of `for each`", diags)
    if fe.where is not None:
        kinds = check_expr(fe.where, inner.but(place="`where`", secrets_ok=False))
        if is_non_boolean(fe.where):
            diags.append(error("E305", "`where` needs a boolean condition", fe.where.loc))
        else:
            expect(kinds, BOOL | NULL, fe.where, "`where`", diags, code="E305")
    if fe.concurrency is not None:
        expect(check_expr(fe.concurrency, once.but(place="`concurrency`")), INT, fe.concurrency, "`concurrency`", diags)
        value = fold(lower(fe.concurrency), constants)
        if value is not NOT_CONSTANT and not (type(value) is int and value >= 1):
            diags.append(error("E316", "`concurrency` must be a whole number of at least 1", fe.concurrency.loc))
    return ForEach(
        fe.var, lower(fe.items), lower(fe.where) if fe.where is not None else None,
        lower(fe.concurrency) if fe.concurrency is not None else None,
    )


def _compensation(clause: object, step_scope: Scope, lets: Mapping[str, ast.Let], diags: list[Diagnostic],
                  plugins: StepTypes) -> Compensation | None:
    if isinstance(clause, ast.CompensateNone):
        return Compensation(none_reason=clause.reason or "")
    if not isinstance(clause, ast.Compensate):
        return None
    # `steps.X` read by the undo action are no dependencies of the step: a fresh `refs`.
    if task_type(clause.type) is None:
        # Compensations are tasks that a worker runs; these types have no worker (dsl.spec.BUILTIN_TASK_TYPES).
        diags.append(error(
            "E324", f"a `compensate` action cannot be of type `{clause.type}`", clause.type_loc,
            f"note: `{clause.type}` steps are run by the coordinator itself, and compensations are tasks run by workers",
            "help: undo with a worker step type (`http`, `noop`, a data step or a plugin type)"))
    # The undo action runs during the saga, which has no `error` (only `on failure` steps do).
    scope = step_scope.but(self_ok=True, error_ok=False, refs={})
    for entry in clause.entries:
        if not isinstance(entry, (ast.Config, ast.RetryClause)):
            diags.append(error("E317", "a `compensate` block takes config entries and `retry` only", entry.loc))
    config = _config(clause.type, clause.type_loc, clause.entries, scope, diags, "`compensate`", plugins, "`compensate` config")
    retry_clause = next((e for e in clause.entries if isinstance(e, ast.RetryClause)), None)
    retry = resolve_retry(retry_clause, lets, diags) if retry_clause else None
    return Compensation(type=clause.type, task_type=_task_type(clause.type, plugins), config=config, retry=retry)


def _side_effect_warnings(step: ast.Step, spec: StepSpec, diags: list[Diagnostic]) -> None:
    if step.type != "http":
        return
    method_entry = next((e for e in step.entries if isinstance(e, ast.Config) and e.key == "method"), None)
    method = constant(method_entry.value) if method_entry else "GET"
    if not isinstance(method, str):
        return
    method = method.upper()
    if method not in SIDE_EFFECT_FREE_METHODS and spec.compensate is None:
        diags.append(warning(
            "W502", f"step `{step.name}` has side effects ({method}) but no `compensate`", step.name_loc,
            "help: add `compensate TYPE { ... }` to undo it, or `compensate none \"reason\"`",
        ))
    if method in ("POST", "PATCH") and spec.retry.attempts > 1 and not _has_idempotency_key(step):
        diags.append(warning(
            "W503", f"step `{step.name}` retries a {method} without an `Idempotency-Key` header", step.name_loc,
            "note: the engine's key changes with each attempt (it guards redeliveries); a key stable across retries, e.g. `\"charge-${params.order_id}\"`, guards against a retry repeating an effect whose response was lost",
        ))


def _has_idempotency_key(step: ast.Step) -> bool:
    headers = next((e.value for e in step.entries if isinstance(e, ast.Config) and e.key == "headers"), None)
    if not isinstance(headers, ast.ObjectExpr):
        return headers is not None  # a computed header object may well hold one
    return any(e.key.lower() == "idempotency-key" for e in headers.entries)
