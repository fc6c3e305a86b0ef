"""The answers of the language server, as pure functions of a document: diagnostics, hover,
definition, completion and the outline. Positions in and out are LSP's (see flow/lsp/positions.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from lsprotocol import types

import dsl
from dsl import ast, scan
from dsl.errors import Diagnostic
from dsl.lowering import NOT_CONSTANT, constant
from dsl.plugins import PluginStepType
from dsl.spec import Span
from dsl.typecheck import FUNCTION_TYPES, KINDS, Type
from dsl.types import STEP_TYPES
from flow.lsp.positions import LineIndex
from flow.lsp.symbols import FUNCTION, LET, LOOP_VAR, PARAM, STEP, STEP_TYPE, DocumentIndex, Reference, WorkflowIndex, build_index, name_span

SOURCE = "flow"

# What each built-in step type produces (docs/language.md, "Built-in step types").
OUTPUT_SHAPES = {
    "http": "`{status, headers, body}` (body decoded as JSON when it is JSON)",
    "transform": "a list: `map` of each element", "filter": "a list: the elements that pass `where`",
    "validate": "`{valid, invalid}`", "aggregate": "a list of groups", "batch": "a list of lists",
    "sort": "a list", "sleep": "`null`", "approval": "`{approved, by, comment}`",
    "subflow": "the child run's output", "noop": "its `output` entry (`null` without one)",
}
_SEVERITY = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}


@dataclass
class Document:
    """One open document: its text, its compile result and (built on first use) its index."""

    uri: str
    text: str
    result: dsl.CompileResult
    lines: LineIndex
    # The latest earlier version without syntax errors: its names stand in for completion while
    # the text being typed does not parse. (Its index is built only then, off the path of diagnostics.)
    last_parsed: Document | None = None
    _index: DocumentIndex | None = None

    @property
    def index(self) -> DocumentIndex:
        if self._index is None:
            tree = self.result.tree or ast.File(self.uri, None, (), ())
            self._index = build_index(tree)
        return self._index

    @property
    def parses(self) -> bool:
        return not any(d.code.startswith("E1") for d in self.result.errors)

    def where(self, position: types.Position) -> tuple[int, int, int]:
        """The text offset and the compiler's 1-based line and column of an LSP position."""
        offset = self.lines.offset(position)
        line, column = scan.position(self.text, offset)
        return offset, line, column


def analyse(uri: str, text: str, step_types: Mapping[str, PluginStepType] | None = None,
            encoding: str = "utf-16", previous: Document | None = None) -> Document:
    """Compile ``text`` as ``flow check`` does and keep what the other answers need.

    ``previous`` is the document's earlier version, whose names stand in while this one does not parse.
    """
    # The compiler drops a byte order mark, which would shift line 1 by a character against the
    # editor's text (when the editor sends the mark at all); a space in its place keeps the columns.
    result = dsl.compile_source(" " + text[1:] if text.startswith("\ufeff") else text, uri, step_types)
    last_parsed = None if previous is None else (previous if previous.parses else previous.last_parsed)
    return Document(uri, text, result, LineIndex(text, encoding), last_parsed)


def diagnostics(doc: Document) -> list[types.Diagnostic]:
    """The compiler's diagnostics, with their codes and notes, at LSP positions."""
    return [_diagnostic(d, doc.lines) for d in doc.result.diagnostics]


def _diagnostic(diag: Diagnostic, lines: LineIndex) -> types.Diagnostic:
    message = "\n".join([diag.message, *diag.notes])
    return types.Diagnostic(range=lines.range(diag.span), message=message, severity=_SEVERITY.get(diag.severity),
                            code=diag.code, source=SOURCE)


# ---- hover ---------------------------------------------------------------------------------------


def hover(doc: Document, position: types.Position, step_types: Mapping[str, PluginStepType]) -> types.Hover | None:
    """What the name under the cursor stands for: a step (type, output, doc), a param, a `let`,
    a loop variable, a function or a step type."""
    _, line, column = doc.where(position)
    ref = doc.index.reference_at(line, column)
    if ref is None:
        return None
    text = _hover_text(doc, ref, step_types)
    if text is None:
        return None
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text), doc.lines.range(ref.span))


def _hover_text(doc: Document, ref: Reference, step_types: Mapping[str, PluginStepType]) -> str | None:
    wf = doc.index.workflow_at(ref.span.line, ref.span.column) if ref.workflow is not None else None
    if ref.kind == STEP and wf is not None and ref.name in wf.steps:
        return _step_hover(wf.steps[ref.name], ref.name in wf.failure_steps)
    if ref.kind == PARAM and wf is not None and ref.name in wf.params:
        param = wf.params[ref.name]
        default = f" = {_source_of(doc, param.default.loc)}" if param.default is not None else " (required)"
        return f"**param** `{param.name}: {param.type.text()}`{default}"
    if ref.kind == LET:
        let = wf.lets.get(ref.name) if wf is not None else doc.index.file_lets.get(ref.name)
        return None if let is None else f"**let** `{let.name}` = `{_source_of(doc, let.expr.loc)}`"
    if ref.kind == LOOP_VAR and (loop := _loop(wf, ref)) is not None:
        return f"**loop variable** `{loop.var}`: each element of `{_source_of(doc, loop.items.loc)}`"
    if ref.kind == FUNCTION and ref.name in FUNCTION_TYPES:
        return f"**function** `{function_signature(ref.name)}`"
    if ref.kind == STEP_TYPE:
        return _step_type_hover(ref.name, step_types)
    return None


def _loop(wf: WorkflowIndex | None, ref: Reference) -> ast.ForEach | None:
    """The `for each` that binds the loop variable ``ref``: its own step's (each step has its own)."""
    if ref.step is not None:
        for entry in ref.step.entries:
            if isinstance(entry, ast.ForEach) and entry.var == ref.name:
                return entry
    return None if wf is None else wf.loop_vars.get(ref.name)


def _step_hover(step: ast.Step, in_on_failure: bool) -> str:
    fan_out = next((e for e in step.entries if isinstance(e, ast.ForEach)), None)
    nullable = any(isinstance(e, (ast.When, ast.AllowFailure)) for e in step.entries)
    shape = OUTPUT_SHAPES.get(step.type, "what the step type returns")
    if step.type == "noop":
        entry = next((e for e in step.entries if isinstance(e, ast.Config) and e.key == "output"), None)
        value = None if entry is None else constant(entry.value)
        if entry is None or value is not NOT_CONSTANT:
            shape = f"`{json.dumps(value)}`"
    if fan_out is not None:
        shape = f"a list, one output per element of `{fan_out.var}`, each {shape}"
    if nullable:
        shape += ", or `null` (the step has `when` or `allow_failure`)"
    lines = [f"**step** `{step.name}`: `{step.type}`" + (" (in `on failure`)" if in_on_failure else ""),
             f"output: {shape}"]
    after = [name for e in step.entries if isinstance(e, ast.After) for name, _ in e.names]
    if after:
        lines.append("after: " + ", ".join(f"`{n}`" for n in after))
    doc = next((e.text for e in step.entries if isinstance(e, ast.Doc)), None)
    if doc:
        lines.append(doc)
    return "\n\n".join(lines)


def _step_type_hover(name: str, step_types: Mapping[str, PluginStepType]) -> str | None:
    if name in STEP_TYPES:
        known = STEP_TYPES[name]
        keys = ", ".join(f"`{k}`" + (" (required)" if k in known.required else "") for k in sorted(known.keys))
        return f"**step type** `{name}`\n\nconfig: {keys or 'none'}\n\noutput: {OUTPUT_SHAPES[name]}"
    plugin = step_types.get(name)
    if plugin is None:
        return None
    keys = "any" if plugin.keys is None else ", ".join(f"`{k}`" for k in sorted(plugin.keys)) or "none"
    return f"**step type** `{name}` (plugin, queue `{plugin.task_type}`)\n\nconfig: {keys}"


def function_signature(name: str) -> str:
    """``len(string | list | object | null) -> int``; a repeating last argument is marked ``...``."""
    fn = FUNCTION_TYPES[name]
    count = fn.low if fn.high is None else fn.high
    args = [_type_text(fn.args[min(i, len(fn.args) - 1)]) for i in range(max(count, 1))]
    rendered = [a if i < fn.low else f"[{a}]" for i, a in enumerate(args)]
    if fn.high is None:
        rendered.append("...")
    return f"{name}({', '.join(rendered)}) -> {_type_text(fn.result)}"


def _type_text(kinds: Type) -> str:
    known = [k for k in KINDS if k in kinds]
    if len(known) == len(KINDS):
        return "any"
    return " | ".join(sorted(known, key=lambda k: k == "null"))  # `T | null`, as nullable types read


def _source_of(doc: Document, span: Span) -> str:
    start = scan.offset(doc.text, span.line, span.column)
    end = scan.offset(doc.text, span.end_line, span.end_column)
    text = " ".join(doc.text[start:end].split())
    return text if len(text) <= 80 else text[:77] + "..."


# ---- definition ----------------------------------------------------------------------------------


def definition(doc: Document, position: types.Position) -> types.Location | None:
    """Where the step, param, `let` or loop variable under the cursor is declared."""
    _, line, column = doc.where(position)
    ref = doc.index.reference_at(line, column)
    if ref is None:
        return None
    wf = doc.index.workflow_at(ref.span.line, ref.span.column) if ref.workflow is not None else None
    target = None
    if ref.kind == STEP and wf is not None and ref.name in wf.steps:
        target = wf.steps[ref.name].name_loc
    elif ref.kind == PARAM and wf is not None and ref.name in wf.params:
        target = name_span(wf.params[ref.name].loc, ref.name)
    elif ref.kind == LET:
        let = wf.lets.get(ref.name) if wf is not None else doc.index.file_lets.get(ref.name)
        target = None if let is None else let.name_loc
    elif ref.kind == LOOP_VAR and (loop := _loop(wf, ref)) is not None:
        target = loop.var_loc
    return None if target is None else types.Location(doc.uri, doc.lines.range(target))


# ---- references ----------------------------------------------------------------------------------


def references(doc: Document, position: types.Position, include_declaration: bool) -> list[types.Location]:
    """Every place that names the step, param, `let` or loop variable under the cursor."""
    _, line, column = doc.where(position)
    ref = doc.index.reference_at(line, column)
    if ref is None or ref.kind in (FUNCTION, STEP_TYPE):
        return []
    declaration = definition(doc, position)

    def same(other: Reference) -> bool:
        if other.kind != ref.kind or other.name != ref.name:
            return False
        if ref.kind == LET and doc.index.file_lets.get(ref.name) is not None and not _shadowed(doc, ref) \
                and not _shadowed(doc, other):
            return True  # a file-level `let` is read from every workflow
        if other.workflow is not ref.workflow:
            return False
        return ref.kind != LOOP_VAR or other.step is ref.step

    found = [doc.lines.range(other.span) for other in doc.index.references if same(other)]
    if not include_declaration and declaration is not None:
        found = [r for r in found if r != declaration.range]
    return [types.Location(doc.uri, r) for r in found]


def _shadowed(doc: Document, ref: Reference) -> bool:
    """Whether a workflow-level `let` of the same name hides the file-level one where ``ref`` stands."""
    if ref.workflow is None:
        return False
    return any(isinstance(item, ast.Let) and item.name == ref.name for item in ref.workflow.items)
