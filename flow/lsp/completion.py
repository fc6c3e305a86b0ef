"""Completion: what may be typed at the cursor, judged from the text before it.

The text being typed rarely parses, so the context comes from the characters before the cursor
(``steps.``, ``step name: ``) and from the block the cursor is in (the innermost open ``{``); the
names come from the document's index, which keeps every declaration that parsed.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from lsprotocol import types

from dsl import ast, scan
from dsl.names import ROOTS
from dsl.parser import parse_partial
from dsl.plugins import PluginStepType
from dsl.typecheck import FUNCTION_TYPES
from dsl.types import CLAUSES, ERROR_FIELDS, STEP_FIELDS, STEP_TYPES, WORKFLOW_FIELDS
from flow.lsp.features import OUTPUT_SHAPES, Document, function_signature
from flow.lsp.symbols import DocumentIndex, WorkflowIndex, build_index, contains

_KIND = types.CompletionItemKind
WORKFLOW_ITEMS = ("step", "let", "schedule", "defaults", "on failure", "output", "timeout", "doc")
_MEMBER = re.compile(r"(?<![\w.])(steps|params|workflow|error)\.(\w*)$")
_STEP_FIELD = re.compile(r"(?<![\w.])steps\.(\w+)\.(\w*)$")
_AFTER = re.compile(r"(?<![\w.])after\s+(?:\w+\s*,\s*)*\w*$")
_STEP_TYPE = re.compile(r"(?:(?<![\w.])step\s+\w+\s*:|(?<![\w.])compensate)\s+([\w.]*)$")
_LINE_START = re.compile(r"^\s*(\w*)$")
_STEP_HEADER = re.compile(r"(?<![\w.])step\s+(\w+)\s*:\s*([\w.]+)\s*$")
_COMPENSATE_HEADER = re.compile(r"(?<![\w.])compensate\s+([\w.]+)\s*$")
_WORKFLOW_HEADER = re.compile(r"(?:\)|\bon\s+failure)\s*$")


def completion(doc: Document, position: types.Position, step_types: Mapping[str, PluginStepType]) -> types.CompletionList:
    offset, line, column = doc.where(position)
    before = doc.text[doc.text.rfind("\n", 0, offset) + 1:offset]
    in_interpolation = before.rfind("${") > before.rfind("}")  # `"... ${steps.` is an expression again
    # The character before the cursor decides: at the end of a comment the cursor is still in it.
    if offset > 0 and scan.in_string_or_comment(doc.text, offset - 1) and not in_interpolation:
        return types.CompletionList(False, [])
    index = _names(doc, offset)
    wf = index.workflow_at(line, column) or _nearest_workflow(index, line)
    # A step cannot read itself (a self-loop is an error), so the step the cursor is in is not offered.
    here = next((s.name for s in wf.steps.values() if contains(s.loc, line, column)), None) if wf else None
    return types.CompletionList(False, list(_items(doc, offset, before, wf, here, step_types)))


def _items(doc: Document, offset: int, before: str, wf: WorkflowIndex | None, here: str | None,
           step_types: Mapping[str, PluginStepType]) -> Iterable[types.CompletionItem]:
    if match := _STEP_FIELD.search(before):
        return [_item(f, _KIND.Field, f"steps.{match.group(1)}.{f}") for f in sorted(STEP_FIELDS)]
    if match := _MEMBER.search(before):
        return _members(match.group(1), wf, here)
    if _STEP_TYPE.search(before):
        return _step_types(step_types)
    if _AFTER.search(before):
        return _members("steps", wf, here)
    block = _block(doc.text, offset)
    if _LINE_START.match(before):
        if block[0] == "step":
            return [*_config_keys(block[1], step_types), *_clauses()]
        if block[0] == "workflow":
            return [_item(w, _KIND.Keyword, "workflow item") for w in WORKFLOW_ITEMS]
        if block[0] == "top":
            return [_item(w, _KIND.Keyword, "declaration") for w in ("workflow", "let")]
    return _expression_names(wf)


def _members(root: str, wf: WorkflowIndex | None, here: str | None) -> list[types.CompletionItem]:
    if root == "steps":
        steps = [] if wf is None else [s for s in wf.steps.values() if s.name != here]
        return [_item(s.name, _KIND.Reference, f"step: {s.type}", _step_doc(s)) for s in steps]
    if root == "params":
        params = [] if wf is None else list(wf.params.values())
        return [_item(p.name, _KIND.Variable, f"param: {p.type.text()}") for p in params]
    fields = WORKFLOW_FIELDS if root == "workflow" else ERROR_FIELDS
    return [_item(f, _KIND.Field, f"{root}.{f}") for f in sorted(fields)]


def _step_types(step_types: Mapping[str, PluginStepType]) -> list[types.CompletionItem]:
    items = [_item(name, _KIND.Class, "step type", f"output: {OUTPUT_SHAPES[name]}") for name in sorted(STEP_TYPES)]
    items += [_item(name, _KIND.Class, f"plugin step type (queue {t.task_type})") for name, t in sorted(step_types.items())]
    return items


def _config_keys(type_name: str, step_types: Mapping[str, PluginStepType]) -> list[types.CompletionItem]:
    if type_name in STEP_TYPES:
        known = STEP_TYPES[type_name]
        keys, required = known.keys, known.required
    elif type_name in step_types and step_types[type_name].keys is not None:
        plugin = step_types[type_name]
        keys, required = plugin.keys or frozenset(), plugin.required
    else:
        return []
    return [_item(k, _KIND.Property, f"{type_name} config" + (" (required)" if k in required else ""),
                  insert=f"{k}: ") for k in sorted(keys)]


def _clauses() -> list[types.CompletionItem]:
    return [_item(c, _KIND.Keyword, "step clause") for c in CLAUSES]


def _expression_names(wf: WorkflowIndex | None) -> list[types.CompletionItem]:
    items = [_item(name, _KIND.Function, function_signature(name), insert=f"{name}(") for name in sorted(FUNCTION_TYPES)]
    items += [_item(root, _KIND.Module, "root") for root in sorted(ROOTS)]
    if wf is not None:
        items += [_item(name, _KIND.Constant, "let") for name in sorted(wf.lets)]
        items += [_item(name, _KIND.Variable, "loop variable") for name in sorted(wf.loop_vars)]
    return items


def _block(text: str, offset: int) -> tuple[str, str]:
    """The kind of the innermost open ``{`` at ``offset``: ``("step", TYPE)``, ``("workflow", "")``,
    ``("top", "")`` outside any, or ``("other", "")`` (an object, a list, parentheses)."""
    opened = scan.open_brackets(text, offset)
    if not opened:
        return "top", ""
    at = opened[-1]
    if text[at] != "{":
        return "other", ""
    head = text[max(0, at - 200):at]
    if match := _STEP_HEADER.search(head):
        return "step", match.group(2)
    if match := _COMPENSATE_HEADER.search(head):
        return "step", match.group(1)
    if _WORKFLOW_HEADER.search(head):
        return "workflow", ""
    return "other", ""


def _names(doc: Document, offset: int) -> DocumentIndex:
    """The declarations to complete from. A line being typed (`steps.`) rarely parses, and the parser
    drops the declaration around a syntax error: then the text is parsed again without the cursor's
    line, and failing that the names of the last version that parsed are used."""
    if doc.parses:
        return doc.index
    start = doc.text.rfind("\n", 0, offset) + 1
    end = doc.text.find("\n", offset)
    end = len(doc.text) if end < 0 else end
    tree, found = parse_partial(doc.text[:start] + " " * (end - start) + doc.text[end:], doc.uri)
    if not any(d.is_error for d in found) or doc.last_parsed is None:
        return build_index(tree)
    return doc.last_parsed.index


def _nearest_workflow(doc_index: DocumentIndex, line: int) -> WorkflowIndex | None:
    """The last workflow that starts before ``line``: the one being typed in when its end no longer parses."""
    found = None
    for index in doc_index.workflows:
        if index.workflow.loc.line <= line:
            found = index
    return found


def _step_doc(step: ast.Step) -> str | None:
    return next((e.text for e in step.entries if isinstance(e, ast.Doc)), None)


def _item(label: str, kind: types.CompletionItemKind, detail: str, documentation: str | None = None,
          insert: str | None = None) -> types.CompletionItem:
    return types.CompletionItem(label=label, kind=kind, detail=detail, documentation=documentation,
                                insert_text=insert)
