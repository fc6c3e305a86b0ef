"""The rules of expressions: operators, names, calls, lists and objects (dsl/ast.py nodes)."""

from __future__ import annotations

from typing import Any, cast

from dsl import ast
from dsl.build_base import KEYWORD_ROOTS, BuilderBase
from dsl.errors import error


class ExpressionRules(BuilderBase):
    """One method per expression rule of dsl/flow.lark; each new node's depth is recorded by ``_expr``."""


    def atom(self, children: list[Any]) -> ast.Expr:
        """`( expr )`: the node of `expr`, whose parents span the parentheses too."""
        lpar, inner, rpar = children
        st = self._state
        st.outer[id(inner)] = (lpar.line, lpar.column, rpar.end_line, rpar.end_column)
        st.keep.append(inner)
        return cast(ast.Expr, inner)

    def cond(self, children: list[Any]) -> ast.Expr:
        test, _q, then, _colon, else_ = children
        return self._expr(ast.Cond(test, then, else_, self._bounds(test, else_)), test, then, else_)

    def or_(self, children: list[Any]) -> ast.Expr:
        left, _op, right = children
        return self._expr(ast.Binary("or", left, right, self._bounds(left, right)), left, right)

    def and_(self, children: list[Any]) -> ast.Expr:
        left, _op, right = children
        return self._expr(ast.Binary("and", left, right, self._bounds(left, right)), left, right)

    def not_(self, children: list[Any]) -> ast.Expr:
        op, arg = children
        return self._expr(ast.Unary("not", arg, self._bounds(op, arg)), arg)

    def neg(self, children: list[Any]) -> ast.Expr:
        op, arg = children
        return self._expr(ast.Unary("-", arg, self._bounds(op, arg)), arg)

    def binary(self, children: list[Any]) -> ast.Expr:
        left, op, right = children
        return self._expr(ast.Binary(str(op), left, right, self._bounds(left, right)), left, right)

    def member(self, children: list[Any]) -> ast.Expr:
        obj, _dot, key = children
        return self._expr(ast.Member(obj, str(key), self._bounds(obj, key), self._token_span(key)), obj)

    def index(self, children: list[Any]) -> ast.Expr:
        obj, _lsqb, idx, rsqb = children
        return self._expr(ast.Index(obj, idx, self._bounds(obj, rsqb)), obj, idx)

    def name(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        name = str(tok)
        if name not in KEYWORD_ROOTS:
            self._name(tok, "a name")
        return ast.Name(name, self._token_span(tok))

    def call(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        args = self._nodes(children[2:])
        return self._expr(ast.Call(str(tok), tuple(args), self._bounds(tok, children[-1]), self._token_span(tok)), *args)

    def list_(self, children: list[Any]) -> ast.Expr:
        items = self._nodes(children)
        return self._expr(ast.ListExpr(tuple(items), self._bounds(children[0], children[-1])), *items)

    def object(self, children: list[Any]) -> ast.Expr:
        entries = self._nodes(children)
        return self._expr(ast.ObjectExpr(tuple(entries), self._bounds(children[0], children[-1])), *(e.value for e in entries))

    def obj_entry(self, children: list[Any]) -> ast.ObjectEntry:
        tok, _colon, value = children
        if tok.type in ("KEY", "NAME"):
            key = str(tok)  # any word, keywords included: JSON-shaped payloads use them as fields
        else:
            node = self._string(tok) if tok.type == "STRING" else ast.Literal(str(tok)[1:-1], self._token_span(tok))
            literal = node.value if isinstance(node, ast.Literal) else None
            if isinstance(literal, str):
                key = literal
            else:
                self._state.diagnostics.append(error("E109", "an object key cannot use `${...}`", self._token_span(tok)))
                key = ""
        entry = ast.ObjectEntry(key, value, self._token_span(tok))
        st = self._state
        st.depth[id(entry)] = st.depth.get(id(value), 0)
        st.keep.append(entry)
        return entry

    def true(self, children: list[Any]) -> ast.Expr:
        return ast.Literal(True, self._token_span(children[0]))

    def false(self, children: list[Any]) -> ast.Expr:
        return ast.Literal(False, self._token_span(children[0]))

    def null(self, children: list[Any]) -> ast.Expr:
        return ast.Literal(None, self._token_span(children[0]))
