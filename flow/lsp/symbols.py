"""What a .flow document declares and where it reads each declaration: the index behind hover,
go-to-definition and completion.

Built from the syntax tree the compiler parsed (``CompileResult.tree``), so a document with errors
still has an index of every declaration that parsed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

from dsl import ast
from dsl.spec import Span

# What a reference names: a step, a param, a `let`, a loop variable, a function or a step type.
STEP, PARAM, LET, LOOP_VAR, FUNCTION, STEP_TYPE = "step", "param", "let", "loop variable", "function", "step type"


@dataclass(frozen=True)
class Reference:
    """A name in the text (a use, or the declaration itself) and what it stands for."""

    kind: str
    name: str
    span: Span
    workflow: ast.Workflow | None  # None: at the top level of the file
    step: ast.Step | None = None  # the step the name stands in (for a step type: the step it types)


@dataclass
class WorkflowIndex:
    """The declarations of one workflow, by name; file-level `let`s are included."""

    workflow: ast.Workflow
    steps: dict[str, ast.Step] = field(default_factory=dict)
    failure_steps: frozenset[str] = frozenset()
    params: dict[str, ast.Param] = field(default_factory=dict)
    lets: dict[str, ast.Let] = field(default_factory=dict)
    loop_vars: dict[str, ast.ForEach] = field(default_factory=dict)


@dataclass
class DocumentIndex:
    workflows: list[WorkflowIndex]
    file_lets: dict[str, ast.Let]
    references: list[Reference]

    def workflow_at(self, line: int, column: int) -> WorkflowIndex | None:
        """The workflow whose text holds the 1-based ``line``:``column``."""
        for index in self.workflows:
            if contains(index.workflow.loc, line, column):
                return index
        return None

    def reference_at(self, line: int, column: int) -> Reference | None:
        """The innermost reference under the 1-based ``line``:``column`` (its end included, as editors place the cursor after a word)."""
        best: Reference | None = None
        for ref in self.references:
            if contains(ref.span, line, column) and (best is None or _size(ref.span) <= _size(best.span)):
                best = ref
        return best


def contains(span: Span, line: int, column: int) -> bool:
    return (span.line, span.column) <= (line, column) <= (span.end_line, span.end_column)


def _size(span: Span) -> tuple[int, int]:
    return span.end_line - span.line, span.end_column - span.column


def build_index(tree: ast.File) -> DocumentIndex:
    """Every declaration and every name that reads one, over the whole file."""
    file_lets = {let.name: let for let in tree.lets}
    references: list[Reference] = [Reference(LET, let.name, let.name_loc, None) for let in tree.lets]
    for let in tree.lets:
        references.extend(_expression_refs(let.expr, None, None, file_lets, frozenset()))
    workflows: list[WorkflowIndex] = []
    for wf in tree.workflows:
        index = _workflow_index(wf, file_lets)
        workflows.append(index)
        references.extend(_workflow_refs(index))
    return DocumentIndex(workflows, file_lets, references)


def _workflow_index(wf: ast.Workflow, file_lets: dict[str, ast.Let]) -> WorkflowIndex:
    index = WorkflowIndex(wf, lets=dict(file_lets))
    failure: set[str] = set()
    for item in wf.items:
        if isinstance(item, ast.Step):
            index.steps.setdefault(item.name, item)
        elif isinstance(item, ast.OnFailure):
            for step in item.steps:
                index.steps.setdefault(step.name, step)
                failure.add(step.name)
        elif isinstance(item, ast.Let):
            index.lets.setdefault(item.name, item)
    index.failure_steps = frozenset(failure)
    index.params = {p.name: p for p in wf.params}
    for step in index.steps.values():
        for entry in step.entries:
            if isinstance(entry, ast.ForEach):
                index.loop_vars.setdefault(entry.var, entry)
    return index


def _workflow_refs(index: WorkflowIndex) -> Iterator[Reference]:
    wf = index.workflow
    names = frozenset(index.loop_vars)
    for param in wf.params:
        yield Reference(PARAM, param.name, name_span(param.loc, param.name), wf)
        if param.default is not None:
            yield from _expression_refs(param.default, wf, None, index.lets, names)
    for item in wf.items:
        steps = item.steps if isinstance(item, ast.OnFailure) else (item,)
        for node in steps:
            if isinstance(node, ast.Step):
                yield from _step_refs(node, wf, index, names)
            elif isinstance(node, ast.Let):
                yield Reference(LET, node.name, node.name_loc, wf)
                yield from _expression_refs(node.expr, wf, None, index.lets, names)
            else:
                yield from _expression_refs(node, wf, None, index.lets, names)


def _step_refs(step: ast.Step, wf: ast.Workflow, index: WorkflowIndex, names: frozenset[str]) -> Iterator[Reference]:
    yield Reference(STEP, step.name, step.name_loc, wf, step)
    yield Reference(STEP_TYPE, step.type, step.type_loc, wf, step)
    for entry in step.entries:
        if isinstance(entry, ast.After):
            for name, loc in entry.names:
                yield Reference(STEP, name, loc, wf, step)
        elif isinstance(entry, ast.ForEach):
            yield Reference(LOOP_VAR, entry.var, entry.var_loc, wf, step)
        elif isinstance(entry, ast.Compensate):
            yield Reference(STEP_TYPE, entry.type, entry.type_loc, wf, step)
        yield from _expression_refs(entry, wf, step, index.lets, names)


def name_span(loc: Span, name: str) -> Span:
    """The span of a declaration's name, which starts it (a param: `name: type = default`)."""
    return Span(loc.file, loc.line, loc.column, loc.line, loc.column + len(name))


def _expression_refs(node: Any, wf: ast.Workflow | None, step: ast.Step | None, lets: dict[str, ast.Let],
                     loop_vars: frozenset[str]) -> Iterator[Reference]:
    """The names read anywhere under ``node`` (an expression, a clause or a whole entry)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Member) and isinstance(current.obj, ast.Name) and current.obj.name in ("steps", "params"):
            kind = STEP if current.obj.name == "steps" else PARAM
            yield Reference(kind, current.key, current.key_loc, wf, step)
            continue
        if isinstance(current, ast.Name):
            # A loop variable shadows a `let` of its name.
            if current.name in loop_vars:
                yield Reference(LOOP_VAR, current.name, current.loc, wf, step)
            elif current.name in lets:
                yield Reference(LET, current.name, current.loc, wf, step)
            continue
        if isinstance(current, ast.Call):
            yield Reference(FUNCTION, current.fn, current.fn_loc, wf, step)
        if isinstance(current, tuple):
            stack.extend(current)
        elif dataclasses.is_dataclass(current) and not isinstance(current, (Span, ast.Step)):
            stack.extend(getattr(current, f.name) for f in dataclasses.fields(current))

