"""Semantic pass and lowering: ``ast.File`` -> ``WorkflowSpec``s, collecting every diagnostic.

Steps are handled in dsl/steps.py, schedules and params in dsl/declarations.py, graph order in
dsl/dag.py; this module ties them together per workflow.
"""

from __future__ import annotations

from typing import Any

from dsl import ast
from dsl.dag import find_cycle, topo_order
from dsl.declarations import compile_params, compile_schedule
from dsl.errors import Diagnostic, error
from dsl.lowering import NOT_CONSTANT, constant, fold, lower
from dsl.names import ROOTS, Scope, check_expr, root_names
from dsl.plugins import INSTALLED, StepTypes
from dsl.retry import resolve_retry, seconds
from dsl.search import compile_search
from dsl.spec import Let, StepSpec, WorkflowSpec
from dsl.steps import CompiledStep, StepDefaults, compile_step
from dsl.typecheck import ANY, Type, TypeEnv, element_type, kind_of, output_type, param_type

MAX_STEPS = 1000


def compile_ast(tree: ast.File, step_types: StepTypes = INSTALLED) -> tuple[list[WorkflowSpec], list[Diagnostic]]:
    """Check and lower every workflow of ``tree``; a workflow with errors yields no spec.

    ``step_types`` are the plugin step types whose config is checked (default: the installed ones).
    """
    diags: list[Diagnostic] = []
    file_types = TypeEnv()
    file_lets = _check_lets(tree.lets, {}, frozenset(), diags, file_types, secret_lets(tree.lets))
    specs: list[WorkflowSpec] = []
    seen: dict[str, ast.Workflow] = {}
    for wf in tree.workflows:
        if wf.name in seen:
            first = seen[wf.name].name_loc
            diags.append(error("E203", f"duplicate workflow `{wf.name}`", wf.name_loc,
                               f"note: first defined at {first.line}:{first.column}"))
            continue
        seen[wf.name] = wf
        own: list[Diagnostic] = []
        spec = _compile_workflow(wf, tree.lets, file_lets, own, step_types, file_types)
        diags.extend(own)
        if spec is not None and not any(d.is_error for d in own):
            specs.append(spec)
    return specs, diags


def _check_lets(lets: tuple[ast.Let, ...], earlier: dict[str, ast.Let], params: frozenset[str],
                diags: list[Diagnostic], types: TypeEnv, secret: frozenset[str]) -> dict[str, ast.Let]:
    """Each let sees the ones before it; lets run before any step, so `steps` is out of reach.

    ``types`` gets the type of each let, and its value when it is a constant.
    """
    known = dict(earlier)
    for let in lets:
        if let.name in known or let.name in ROOTS:
            diags.append(error("E209", f"`{let.name}` is already defined", let.name_loc))
            continue
        scope = Scope(frozenset(known), params, frozenset(), {}, allow_steps=False, diagnostics=diags, place="a `let`",
                      types=types)
        kinds = check_expr(let.expr, scope)
        # A let that reads a secret is deferred to the worker: its type is known, its value is not.
        types.lets[let.name] = ANY if kinds is None else kinds
        value = fold(lower(let.expr), types.constants)
        if value is not NOT_CONSTANT and let.name not in secret:
            types.constants[let.name] = value
        known[let.name] = let
    return known


def _compile_workflow(wf: ast.Workflow, file_lets: tuple[ast.Let, ...], file_known: dict[str, ast.Let],
                      diags: list[Diagnostic], step_types: StepTypes, file_types: TypeEnv) -> WorkflowSpec | None:
    params = compile_params(wf.params, diags)
    param_names = frozenset(p.name for p in params)
    wf_lets: tuple[ast.Let, ...] = tuple(wf.of_type(ast.Let))
    secret = secret_lets(file_lets + wf_lets)
    types = TypeEnv({p.name: param_type(p.type) for p in params}, {}, dict(file_types.lets), dict(file_types.constants))
    types.param_elements = {p.name: kinds for p in params if (kinds := element_type(p.type)) is not None}
    lets = _check_lets(wf_lets, file_known, param_names, diags, types, secret)

    main: list[ast.Step] = wf.of_type(ast.Step)
    on_failure: list[ast.Step] = [s for block in wf.of_type(ast.OnFailure) for s in block.steps]
    if len(main) + len(on_failure) > MAX_STEPS:
        diags.append(error("E112", f"workflow `{wf.name}` has {len(main) + len(on_failure)} steps; the limit is {MAX_STEPS}",
                           wf.name_loc, "help: split it into subflows"))
        return None
    all_steps = _unique_steps(main + on_failure, diags)
    kept = {id(s) for s in all_steps}  # identity: dataclass equality would make this quadratic
    loop_vars = {e.var: s.name for s in all_steps for e in s.entries if isinstance(e, ast.ForEach)}
    nullable = frozenset(s.name for s in all_steps if any(isinstance(e, (ast.When, ast.AllowFailure)) for e in s.entries))
    defaults = _defaults(wf, lets, diags)

    types.outputs = {s.name: _output_type(s, s.name in nullable) for s in all_steps}
    types.values = {s.name: v for s in all_steps if s.name not in nullable and (v := _constant_output(s)) is not NOT_CONSTANT}

    def base(steps: frozenset[str], error_ok: bool) -> Scope:
        return Scope(frozenset(lets), param_names, steps, loop_vars, nullable, error_ok=error_ok, refs={}, diagnostics=diags,
                     secret_lets=secret, types=types)

    main_names = frozenset(s.name for s in main)
    constants = _constants(file_lets + wf_lets, lets)
    compiled = [compile_step(s, base(main_names, False), lets, defaults, diags, constants=constants, plugins=step_types)
                for s in main if id(s) in kept]
    failure_names = main_names | {s.name for s in on_failure}
    compiled_failure = [compile_step(s, base(failure_names, True), lets, defaults, diags, side_effects_matter=False,
                                     constants=constants, plugins=step_types) for s in on_failure if id(s) in kept]
    steps = _order(compiled, main, diags)
    failure_steps = _order(compiled_failure, on_failure, diags, within=frozenset(s.name for s in on_failure))

    output = None
    for out in wf.of_type(ast.Output):
        check_expr(out.value, base(main_names, False).but(place="`output`", secrets_ok=False))
        output = lower(out.value)
    timeout = None
    for t in wf.of_type(ast.WorkflowTimeout):
        timeout = seconds(t.value, "timeout", diags)
    docs = wf.of_type(ast.Doc)
    schedules = tuple(filter(None, (compile_schedule(s, params, diags) for s in wf.of_type(ast.Schedule))))
    search = compile_search(wf.of_type(ast.Search), base(frozenset(), False), diags)
    return WorkflowSpec(
        name=wf.name, steps=steps, params=params,
        lets=tuple(Let(x.name, lower(x.expr)) for x in file_lets + wf_lets if lets.get(x.name) is x),
        doc=docs[0].text if docs else None, timeout=timeout, on_failure=failure_steps, output=output,
        schedules=schedules, span=wf.loc, search=search,
    )


def _output_type(step: ast.Step, nullable: bool) -> Type:
    fan_out = any(isinstance(e, ast.ForEach) for e in step.entries)
    noop = next((constant(e.value) for e in step.entries if isinstance(e, ast.Config) and e.key == "output"), None)
    noop_type = None if noop is NOT_CONSTANT else kind_of(noop)
    return output_type(step.type, fan_out, nullable, noop_type)


def _constant_output(step: ast.Step) -> Any:
    """The output of a `noop` step without `for each` whose `output` is a constant, else NOT_CONSTANT."""
    if step.type != "noop" or any(isinstance(e, ast.ForEach) for e in step.entries):
        return NOT_CONSTANT
    entry = next((e for e in step.entries if isinstance(e, ast.Config) and e.key == "output"), None)
    return None if entry is None else constant(entry.value)


def secret_lets(declared: tuple[ast.Let, ...]) -> frozenset[str]:
    """The `let`s whose value reads `secrets`, directly or through an earlier such `let`.

    Their value is deferred to the worker like a secret, so they may stand where secrets may.
    """
    found: set[str] = set()
    for let in declared:
        if root_names(let.expr) & (found | {"secrets"}):
            found.add(let.name)
    return frozenset(found)


def _constants(declared: tuple[ast.Let, ...], kept: dict[str, ast.Let]) -> dict[str, Any]:
    """The `let`s whose value is known when compiling (literals, and folds of earlier constants)."""
    values: dict[str, Any] = {}
    for let in declared:
        if kept.get(let.name) is let:
            value = fold(lower(let.expr), values)
            if value is not NOT_CONSTANT:
                values[let.name] = value
    return values


def _unique_steps(steps: list[ast.Step], diags: list[Diagnostic]) -> list[ast.Step]:
    seen: dict[str, ast.Step] = {}
    for step in steps:
        if step.name in seen:
            first = seen[step.name].name_loc
            diags.append(error("E202", f"duplicate step `{step.name}`", step.name_loc,
                               f"note: first defined at {first.line}:{first.column}"))
        else:
            seen[step.name] = step
    return list(seen.values())


def _defaults(wf: ast.Workflow, lets: dict[str, ast.Let], diags: list[Diagnostic]) -> StepDefaults:
    result = StepDefaults()
    for block in wf.of_type(ast.Defaults):
        for entry in block.entries:
            if isinstance(entry, ast.RetryClause):
                result = StepDefaults(resolve_retry(entry, lets, diags), result.timeout)
            elif isinstance(entry, ast.TimeoutClause):
                result = StepDefaults(result.retry, seconds(entry.value, "timeout", diags))
            else:
                diags.append(error("E317", "`defaults` takes `timeout` and `retry` only", entry.loc))
    return result


def _order(compiled: list[CompiledStep], asts: list[ast.Step], diags: list[Diagnostic],
           within: frozenset[str] | None = None) -> tuple[StepSpec, ...]:
    """Topological order (ties in source order); a cycle is reported once as a path."""
    names = [c.spec.name for c in compiled]
    deps = {c.spec.name: sorted(d for d in c.deps if within is None or d in within) for c in compiled}
    cycle = find_cycle(names, deps)
    if cycle and len(cycle) > 2:  # self-loops are reported by compile_step
        loc = next(s.name_loc for s in asts if s.name == cycle[0])
        diags.append(error("E401", f"dependency cycle: {' -> '.join(cycle)}", loc,
                           "note: dependencies are `after` plus every `steps.NAME` read outside `compensate`"))
    by_name = {c.spec.name: c.spec for c in compiled}
    return tuple(by_name[n] for n in topo_order(names, deps))
