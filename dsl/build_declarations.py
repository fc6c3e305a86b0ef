"""The rules of the file, its declarations and the entries of a step: nodes of dsl/ast.py."""

from __future__ import annotations

from typing import Any

from lark import Token

from dsl import ast
from dsl.build_base import BuilderBase
from dsl.errors import error
from dsl.spec import Span


class DeclarationRules(BuilderBase):
    """`start`, `let`, `workflow`, params and types, workflow clauses, `step` and its entries."""


    def start(self, children: list[Any]) -> ast.File:
        version = None
        lets: list[ast.Let] = []
        workflows: list[ast.Workflow] = []
        for child in children:
            if isinstance(child, ast.Let):
                lets.append(child)
            elif isinstance(child, ast.Workflow):
                workflows.append(child)
            else:
                version = child
        return ast.File(self._state.filename, version, tuple(lets), tuple(workflows))

    def version(self, children: list[Any]) -> int:
        if str(children[1]) != "1":
            self._state.diagnostics.append(error(
                "E108", "unsupported language version; this compiler reads `flow 1`", self._whole(children)
            ))
        return 1

    def let_decl(self, children: list[Any]) -> ast.Let:
        _let, tok, _eq, expr = children
        return ast.Let(self._name(tok, "a `let` name"), expr, self._whole(children), self._token_span(tok))

    def workflow(self, children: list[Any]) -> ast.Workflow:
        tok = children[1]
        rest = self._nodes(children[2:])
        params = tuple(c for c in rest if isinstance(c, ast.Param))
        items = tuple(c for c in rest if not isinstance(c, ast.Param))
        return ast.Workflow(self._name(tok, "a workflow name"), self._token_span(tok), params, items, self._whole(children))

    def param(self, children: list[Any]) -> ast.Param:
        tok, _colon, type_ref = children[:3]
        default = children[4] if len(children) > 4 else None
        return ast.Param(self._name(tok, "a parameter name"), type_ref, default, self._whole(children))

    def _type(self, children: list[Any], nullable: bool) -> ast.TypeRef:
        name = children[0]
        arg = next((c for c in children[1:] if isinstance(c, ast.TypeRef)), None)
        return ast.TypeRef(str(name), arg, nullable, self._whole(children))

    def type_plain(self, children: list[Any]) -> ast.TypeRef:
        return self._type(children, False)

    def type_nullable(self, children: list[Any]) -> ast.TypeRef:
        return self._type(children, True)

    def wf_doc(self, children: list[Any]) -> ast.Doc:
        return ast.Doc(self._text(children[1]), self._whole(children))

    def wf_timeout(self, children: list[Any]) -> ast.WorkflowTimeout:
        return ast.WorkflowTimeout(children[1], self._whole(children))

    def defaults(self, children: list[Any]) -> ast.Defaults:
        return ast.Defaults(tuple(self._nodes(children)), self._whole(children))

    def output(self, children: list[Any]) -> ast.Output:
        return ast.Output(children[1], self._whole(children))

    def on_failure(self, children: list[Any]) -> ast.OnFailure:
        return ast.OnFailure(tuple(self._nodes(children)), self._whole(children))

    def schedule(self, children: list[Any]) -> ast.Schedule:
        _schedule, kind, value, *options = children
        return ast.Schedule(str(kind), value, options[0] if options else None, self._whole(children))

    def search(self, children: list[Any]) -> ast.Search:
        return ast.Search(children[1], self._whole(children))

    def step(self, children: list[Any]) -> ast.Step:
        tok, (type_name, type_loc) = children[1], children[3]
        entries = tuple(self._nodes(children[5:]))
        return ast.Step(self._name(tok, "a step name"), self._token_span(tok), type_name, type_loc, entries, self._whole(children))

    def step_type(self, children: list[Any]) -> tuple[str, Span]:
        return "".join(str(c) for c in children), self._whole(children)

    # ---- step entries ----------------------------------------------------------------------------

    def config(self, children: list[Any]) -> ast.Config:
        tok, value = children[0], children[2]
        return ast.Config(str(tok), value, self._token_span(tok))

    def after(self, children: list[Any]) -> ast.After:
        names = tuple((self._name(t, "a step name"), self._token_span(t)) for t in children[1:] if t.type == "NAME")
        return ast.After(names, self._whole(children))

    def when(self, children: list[Any]) -> ast.When:
        return ast.When(children[1], self._whole(children))

    def for_each(self, children: list[Any]) -> ast.ForEach:
        var, items = children[2], children[4]
        rest = [c for c in children[5:] if isinstance(c, tuple)]
        where = next((c[1] for c in rest if c[0] == "where"), None)
        concurrency = next((c[1] for c in rest if c[0] == "concurrency"), None)
        return ast.ForEach(self._name(var, "a loop variable"), self._token_span(var), items, where, concurrency, self._whole(children))

    def for_where(self, children: list[Any]) -> tuple[str, Any, Span]:
        return "where", children[1], self._whole(children)

    def for_concurrency(self, children: list[Any]) -> tuple[str, Any, Span]:
        return "concurrency", children[1], self._whole(children)

    def retry(self, children: list[Any]) -> ast.RetryClause:
        return ast.RetryClause(children[1], self._whole(children))

    def timeout(self, children: list[Any]) -> ast.TimeoutClause:
        return ast.TimeoutClause(children[1], self._whole(children))

    def compensate(self, children: list[Any]) -> ast.Compensate:
        type_name, type_loc = children[1]
        entries = tuple(self._nodes(children[2:]))
        return ast.Compensate(type_name, type_loc, entries, self._whole(children))

    def compensate_none(self, children: list[Any]) -> ast.CompensateNone:
        reason = next((c for c in children[2:] if not isinstance(c, Token)), None)
        return ast.CompensateNone(self._text(reason) if reason is not None else None, self._whole(children))

    def allow_failure(self, children: list[Any]) -> ast.AllowFailure:
        return ast.AllowFailure(self._whole(children))

    def doc(self, children: list[Any]) -> ast.Doc:
        return ast.Doc(self._text(children[1]), self._whole(children))

    def _text(self, node: Any) -> str:
        if isinstance(node, ast.Literal) and isinstance(node.value, str):
            return node.value
        self._state.diagnostics.append(error("E109", "expected a plain string here, without `${...}`", node.loc))
        return ""
