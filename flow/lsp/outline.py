"""The document outline: workflows, and in each its params, `let`s, schedules and steps."""

from __future__ import annotations

from lsprotocol import types

from dsl import ast, scan
from dsl.spec import Span
from flow.lsp.features import Document
from flow.lsp.symbols import name_span

_KIND = types.SymbolKind


def outline(doc: Document) -> list[types.DocumentSymbol]:
    tree = doc.result.tree
    if tree is None:
        return []
    symbols = [_symbol(doc, let.name, "let", _KIND.Constant, let.loc, let.name_loc) for let in tree.lets]
    symbols += [_workflow(doc, wf) for wf in tree.workflows]
    return symbols


def _workflow(doc: Document, wf: ast.Workflow) -> types.DocumentSymbol:
    children = [_symbol(doc, p.name, p.type.text(), _KIND.Field, p.loc, name_span(p.loc, p.name)) for p in wf.params]
    for item in wf.items:
        if isinstance(item, ast.Step):
            children.append(_step(doc, item))
        elif isinstance(item, ast.Let):
            children.append(_symbol(doc, item.name, "let", _KIND.Constant, item.loc, item.name_loc))
        elif isinstance(item, ast.Schedule):
            children.append(_symbol(doc, f"schedule {item.kind}", _source(doc, item.value.loc), _KIND.Event, item.loc, item.loc))
        elif isinstance(item, ast.OnFailure):
            steps = [_step(doc, s) for s in item.steps]
            children.append(_symbol(doc, "on failure", f"{len(steps)} steps", _KIND.Namespace, item.loc, item.loc, steps))
        elif isinstance(item, ast.Output):
            children.append(_symbol(doc, "output", "", _KIND.Object, item.loc, item.loc))
    return _symbol(doc, wf.name, "workflow", _KIND.Module, wf.loc, wf.name_loc, children)


def _step(doc: Document, step: ast.Step) -> types.DocumentSymbol:
    return _symbol(doc, step.name, step.type, _KIND.Function, step.loc, step.name_loc)


def _source(doc: Document, span: Span) -> str:
    return doc.text[scan.offset(doc.text, span.line, span.column):scan.offset(doc.text, span.end_line, span.end_column)]


def _symbol(doc: Document, name: str, detail: str, kind: types.SymbolKind, whole: Span, selected: Span,
            children: list[types.DocumentSymbol] | None = None) -> types.DocumentSymbol:
    full = doc.lines.range(whole)
    selection = doc.lines.range(selected)
    # The protocol wants the selection inside the whole range; a span that ends early is widened.
    if (selection.end.line, selection.end.character) > (full.end.line, full.end.character):
        full = types.Range(full.start, selection.end)
    return types.DocumentSymbol(name=name, detail=detail, kind=kind, range=full, selection_range=selection,
                                children=children or None)
