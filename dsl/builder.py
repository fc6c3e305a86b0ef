"""Lark parse tree -> AST (dsl/ast.py), iteratively, collecting lexical diagnostics on the way.

Numbers, durations, escapes, reserved words and `${...}` interpolation are checked here; each
problem becomes a diagnostic and a harmless placeholder node so that the rest of the file is
still checked.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

from lark import Token, Transformer_NonRecursive, Tree, v_args

from dsl import ast
from dsl.errors import Diagnostic, FlowError, FlowLimitError, error
from dsl.spec import Span

KEYWORDS = frozenset(
    "flow let workflow step after when for each in where concurrency retry timeout compensate none "
    "allow_failure defaults schedule cron every at output on failure doc and or not true false null".split()
)
# Roots that share their spelling with a keyword and are still usable as names in expressions.
KEYWORD_ROOTS = frozenset({"workflow"})
MAX_EXPR_DEPTH = 128  # later passes recurse over expressions; this keeps them far from the limit

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIMPLE_PATH = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "'": "'", "0": "\0"}

ExprParser = Callable[[str, int, int], Any]  # (text, line, column) -> lark tree of an `expr`


def token_span(filename: str, tok: Token) -> Span:
    return Span(filename, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)


def parse_duration(text: str) -> float | None:
    """Seconds of ``1h30m``; ``None`` when ``text`` is not a duration."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


@v_args(meta=True)
class AstBuilder(Transformer_NonRecursive):
    """Builds the AST of one parse; ``diagnostics`` collects what is wrong but recoverable."""

    def __init__(self, filename: str, parse_expr: ExprParser) -> None:
        super().__init__()
        self.filename = filename
        self.parse_expr = parse_expr
        self.diagnostics: list[Diagnostic] = []
        self._depth: dict[int, int] = {}

    # ---- helpers ---------------------------------------------------------------------------------

    def _span(self, meta: Any, fallback: Any = None) -> Span:
        if getattr(meta, "empty", True):
            if isinstance(fallback, Token):
                return token_span(self.filename, fallback)
            return Span(self.filename, 1, 1, 1, 1)
        return Span(self.filename, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return token_span(self.filename, tok)

    def _expr(self, node: Any, *children: Any) -> Any:
        """Record the depth of a new expression node; refuse trees deep enough to hurt later passes."""
        depth = 1 + max((self._depth.get(id(c), 0) for c in children), default=0)
        if depth > MAX_EXPR_DEPTH:
            raise FlowLimitError([error(
                "E111", f"expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)", node.loc,
                "help: split it with `let` constants",
            )])
        self._depth[id(node)] = depth
        return node

    def _name(self, tok: Token, what: str) -> str:
        name = str(tok)
        if name in KEYWORDS:
            self.diagnostics.append(error(
                "E107", f"`{name}` is a reserved word and cannot be used as {what}", self._tspan(tok),
                "help: choose another name",
            ))
        return name

    # ---- file and declarations -------------------------------------------------------------------

    def start(self, meta: Any, children: list[Any]) -> ast.File:
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
        return ast.File(self.filename, version, tuple(lets), tuple(workflows))

    def version(self, meta: Any, children: list[Any]) -> int:
        if str(children[0]) != "1":
            self.diagnostics.append(error(
                "E108", "unsupported language version; this compiler reads `flow 1`", self._span(meta)
            ))
        return 1

    def let_decl(self, meta: Any, children: list[Any]) -> ast.Let:
        tok, expr = children
        return ast.Let(self._name(tok, "a `let` name"), expr, self._span(meta), self._tspan(tok))

    def workflow(self, meta: Any, children: list[Any]) -> ast.Workflow:
        tok, *rest = children
        params = tuple(c for c in rest if isinstance(c, ast.Param))
        items = tuple(c for c in rest if not isinstance(c, ast.Param))
        return ast.Workflow(self._name(tok, "a workflow name"), self._tspan(tok), params, items, self._span(meta))

    def param(self, meta: Any, children: list[Any]) -> ast.Param:
        tok, type_ref, *default = children
        return ast.Param(self._name(tok, "a parameter name"), type_ref, default[0] if default else None, self._span(meta))

    def _type(self, meta: Any, children: list[Any], nullable: bool) -> ast.TypeRef:
        name = children[0]
        arg = next((c for c in children[1:] if isinstance(c, ast.TypeRef)), None)
        return ast.TypeRef(str(name), arg, nullable, self._span(meta, name))

    def type_plain(self, meta: Any, children: list[Any]) -> ast.TypeRef:
        return self._type(meta, children, False)

    def type_nullable(self, meta: Any, children: list[Any]) -> ast.TypeRef:
        return self._type(meta, children, True)

    def wf_doc(self, meta: Any, children: list[Any]) -> ast.Doc:
        return ast.Doc(self._text(children[0]), self._span(meta))

    def wf_timeout(self, meta: Any, children: list[Any]) -> ast.WorkflowTimeout:
        return ast.WorkflowTimeout(children[0], self._span(meta))

    def defaults(self, meta: Any, children: list[Any]) -> ast.Defaults:
        return ast.Defaults(tuple(children), self._span(meta))

    def output(self, meta: Any, children: list[Any]) -> ast.Output:
        return ast.Output(children[0], self._span(meta))

    def on_failure(self, meta: Any, children: list[Any]) -> ast.OnFailure:
        return ast.OnFailure(tuple(children), self._span(meta))

    def schedule(self, meta: Any, children: list[Any]) -> ast.Schedule:
        kind, value, *options = children
        return ast.Schedule(str(kind), value, options[0] if options else None, self._span(meta))

    def step(self, meta: Any, children: list[Any]) -> ast.Step:
        tok, (type_name, type_loc), *entries = children
        return ast.Step(self._name(tok, "a step name"), self._tspan(tok), type_name, type_loc, tuple(entries), self._span(meta))

    def step_type(self, meta: Any, children: list[Any]) -> tuple[str, Span]:
        return ".".join(str(c) for c in children), self._span(meta)

    # ---- step entries ----------------------------------------------------------------------------

    def config(self, meta: Any, children: list[Any]) -> ast.Config:
        tok, value = children
        return ast.Config(str(tok), value, self._tspan(tok))

    def after(self, meta: Any, children: list[Any]) -> ast.After:
        names = tuple((self._name(t, "a step name"), self._tspan(t)) for t in children)
        return ast.After(names, self._span(meta))

    def when(self, meta: Any, children: list[Any]) -> ast.When:
        return ast.When(children[0], self._span(meta))

    def for_each(self, meta: Any, children: list[Any]) -> ast.ForEach:
        var, _in, items, *rest = children
        where = next((c[1] for c in rest if c[0] == "where"), None)
        concurrency = next((c[1] for c in rest if c[0] == "concurrency"), None)
        return ast.ForEach(self._name(var, "a loop variable"), self._tspan(var), items, where, concurrency, self._span(meta))

    def for_where(self, meta: Any, children: list[Any]) -> tuple[str, Any]:
        return "where", children[0]

    def for_concurrency(self, meta: Any, children: list[Any]) -> tuple[str, Any]:
        return "concurrency", children[0]

    def retry(self, meta: Any, children: list[Any]) -> ast.RetryClause:
        return ast.RetryClause(children[0], self._span(meta))

    def timeout(self, meta: Any, children: list[Any]) -> ast.TimeoutClause:
        return ast.TimeoutClause(children[0], self._span(meta))

    def compensate(self, meta: Any, children: list[Any]) -> ast.Compensate:
        (type_name, type_loc), *entries = children
        return ast.Compensate(type_name, type_loc, tuple(entries), self._span(meta))

    def compensate_none(self, meta: Any, children: list[Any]) -> ast.CompensateNone:
        return ast.CompensateNone(self._text(children[0]) if children else None, self._span(meta))

    def allow_failure(self, meta: Any, children: list[Any]) -> ast.AllowFailure:
        return ast.AllowFailure(self._span(meta))

    def doc(self, meta: Any, children: list[Any]) -> ast.Doc:
        return ast.Doc(self._text(children[0]), self._span(meta))

    def _text(self, node: Any) -> str:
        if isinstance(node, ast.Literal) and isinstance(node.value, str):
            return node.value
        self.diagnostics.append(error("E109", "expected a plain string here, without `${...}`", node.loc))
        return ""

    # ---- expressions -----------------------------------------------------------------------------

    def cond(self, meta: Any, children: list[Any]) -> ast.Expr:
        test, then, else_ = children
        return self._expr(ast.Cond(test, then, else_, self._span(meta)), test, then, else_)

    def or_(self, meta: Any, children: list[Any]) -> ast.Expr:
        left, right = children
        return self._expr(ast.Binary("or", left, right, self._span(meta)), left, right)

    def and_(self, meta: Any, children: list[Any]) -> ast.Expr:
        left, right = children
        return self._expr(ast.Binary("and", left, right, self._span(meta)), left, right)

    def not_(self, meta: Any, children: list[Any]) -> ast.Expr:
        return self._expr(ast.Unary("not", children[0], self._span(meta)), children[0])

    def neg(self, meta: Any, children: list[Any]) -> ast.Expr:
        return self._expr(ast.Unary("-", children[1], self._span(meta)), children[1])

    def binary(self, meta: Any, children: list[Any]) -> ast.Expr:
        left, op, right = children
        return self._expr(ast.Binary(str(op), left, right, self._span(meta)), left, right)

    def member(self, meta: Any, children: list[Any]) -> ast.Expr:
        obj, key = children
        return self._expr(ast.Member(obj, str(key), self._span(meta), self._tspan(key)), obj)

    def index(self, meta: Any, children: list[Any]) -> ast.Expr:
        obj, idx = children
        return self._expr(ast.Index(obj, idx, self._span(meta)), obj, idx)

    def name(self, meta: Any, children: list[Any]) -> ast.Expr:
        tok = children[0]
        name = str(tok)
        if name not in KEYWORD_ROOTS:
            self._name(tok, "a name")
        return ast.Name(name, self._tspan(tok))

    def call(self, meta: Any, children: list[Any]) -> ast.Expr:
        tok, *args = children
        args = [a for a in args if a is not None]
        return self._expr(ast.Call(str(tok), tuple(args), self._span(meta), self._tspan(tok)), *args)

    def list_(self, meta: Any, children: list[Any]) -> ast.Expr:
        items = [c for c in children if c is not None]
        return self._expr(ast.ListExpr(tuple(items), self._span(meta)), *items)

    def object(self, meta: Any, children: list[Any]) -> ast.Expr:
        return self._expr(ast.ObjectExpr(tuple(children), self._span(meta)), *(e.value for e in children))

    def obj_entry(self, meta: Any, children: list[Any]) -> ast.ObjectEntry:
        tok, value = children
        if tok.type == "NAME":
            key = str(tok)
            if key in KEYWORDS:
                self.diagnostics.append(error(
                    "E107", f"`{key}` is a reserved word; quote it to use it as a key", self._tspan(tok),
                    f'help: write "{key}": ...',
                ))
        else:
            key = self._string(tok).value if tok.type == "STRING" else str(tok)[1:-1]
            if not isinstance(key, str):
                self.diagnostics.append(error("E109", "an object key cannot use `${...}`", self._tspan(tok)))
                key = ""
        entry = ast.ObjectEntry(key, value, self._tspan(tok))
        self._depth[id(entry)] = self._depth.get(id(value), 0)
        return entry

    def true(self, meta: Any, children: list[Any]) -> ast.Expr:
        return ast.Literal(True, self._span(meta))

    def false(self, meta: Any, children: list[Any]) -> ast.Expr:
        return ast.Literal(False, self._span(meta))

    def null(self, meta: Any, children: list[Any]) -> ast.Expr:
        return ast.Literal(None, self._span(meta))

    def number(self, meta: Any, children: list[Any]) -> ast.Expr:
        tok = children[0]
        text, loc = str(tok), self._tspan(tok)
        if _INT.fullmatch(text):
            return ast.Literal(int(text), loc)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return ast.Literal(value, loc)
            self.diagnostics.append(error("E102", f"number `{text}` is out of range", loc))
            return ast.Literal(0, loc)
        seconds = parse_duration(text)
        if seconds is not None:
            return ast.Duration(seconds, text, loc)
        self.diagnostics.append(error(
            "E102", f"bad number or duration `{text}`", loc,
            "help: numbers look like `3`, `2.5`, `1e3`; durations like `250ms`, `30s`, `1h30m` (units ms s m h d)",
        ))
        return ast.Literal(0, loc)

    def string(self, meta: Any, children: list[Any]) -> ast.Expr:
        tok = children[0]
        if tok.type == "RAW_STRING":
            return ast.Literal(str(tok)[1:-1], self._tspan(tok))
        return self._string(tok)

    def _string(self, tok: Token) -> ast.Expr:
        """Unescape a "..." token and parse each `${...}` inside it as an expression."""
        raw, loc = str(tok), self._tspan(tok)
        parts: list[Any] = []
        buf: list[str] = []
        i, end = 1, len(raw) - 1
        while i < end:
            ch = raw[i]
            if ch == "\\":
                i = self._escape(raw, i, tok, buf)
            elif ch == "$" and raw[i + 1] == "{":
                close = _interp_end(raw, i + 2)
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(self._interp(raw[i + 2:close], tok, i + 2))
                i = close + 1
            else:
                buf.append(ch)
                i += 1
        if buf:
            parts.append("".join(buf))
        if all(isinstance(p, str) for p in parts):
            return ast.Literal("".join(parts), loc)
        exprs = [p for p in parts if not isinstance(p, str)]
        return self._expr(ast.Interp(tuple(parts), loc), *exprs)

    def _escape(self, raw: str, i: int, tok: Token, buf: list[str]) -> int:
        nxt = raw[i + 1]
        if nxt in _ESCAPES:
            buf.append(_ESCAPES[nxt])
            return i + 2
        if nxt == "u":
            match = re.match(r"u\{([0-9A-Fa-f]{1,6})\}|u([0-9A-Fa-f]{4})", raw[i + 1:])
            if match:
                code = int(match.group(1) or match.group(2), 16)
                if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                    buf.append(chr(code))
                    return i + 1 + match.end()
        col = (tok.column or 1) + i
        self.diagnostics.append(error(
            "E105", f"unknown escape `\\{nxt}` in a string", Span(self.filename, tok.line or 1, col, tok.line or 1, col + 2),
            'help: known escapes are \\n \\t \\r \\" \\\\ \\$ \\u{XXXX}; use a raw string \'...\' for backslashes',
        ))
        return i + 2

    def _interp(self, inner: str, tok: Token, offset: int) -> ast.Expr:
        line, column = tok.line or 1, (tok.column or 1) + offset
        loc = Span(self.filename, line, column - 2, line, column + len(inner) + 1)
        if not inner.strip():
            self.diagnostics.append(error("E106", "empty `${}` in a string", loc, "help: put an expression inside, or write `\\${` for the text"))
            return ast.Literal(None, loc)
        simple = _SIMPLE_PATH.fullmatch(inner)
        if simple and simple.group(1) not in KEYWORDS - KEYWORD_ROOTS:
            return self._path(simple, line, column)
        try:
            tree = self.parse_expr(inner, line, column)
            return self.transform(tree)
        except FlowLimitError:
            raise
        except FlowError as exc:
            for diag in exc.diagnostics:
                message = diag.message.replace("end of file", "end of `${...}`")
                self.diagnostics.append(dataclasses.replace(diag, message=message, notes=()))
            return ast.Literal(None, loc)

    def _path(self, match: re.Match[str], line: int, column: int) -> ast.Expr:
        """`${a.b.c}` without a second parse: most interpolations are such paths."""
        start = column + match.start(1)
        node: ast.Expr = ast.Name(match.group(1), Span(self.filename, line, start, line, start + len(match.group(1))))
        pos = start + len(match.group(1))
        for key in match.group(2).split(".")[1:]:
            key_loc = Span(self.filename, line, pos + 1, line, pos + 1 + len(key))
            pos = key_loc.end_column
            node = self._expr(ast.Member(node, key, Span(self.filename, line, start, line, pos), key_loc), node)
        return node


def _interp_end(raw: str, i: int) -> int:
    """Index of the `}` closing a `${` whose inside starts at ``i`` (nested strings skipped)."""
    while raw[i] != "}":
        if raw[i] == '"':
            i += 1
            while raw[i] != '"':
                i += 2 if raw[i] == "\\" else 1
        i += 1
    return i


def is_tree(node: Any) -> bool:
    return isinstance(node, Tree)
