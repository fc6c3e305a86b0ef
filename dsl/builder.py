"""The AST (dsl/ast.py), built by lark's LALR parser as it reduces, collecting lexical diagnostics.

``AstBuilder`` is given to lark as an inline transformer (``Lark(transformer=...)``): each rule's
method receives the rule's children as they are reduced, so no parse tree is ever built and no
second pass walks one. The parser keeps every token (``keep_all_tokens``), and a node's span runs
from the start of its first token or child to the end of its last one: the positions lark's
``propagate_positions`` would give, without its per-node bookkeeping.

Numbers, durations, escapes, reserved words and `${...}` interpolation are checked here; each
problem becomes a diagnostic and a harmless placeholder node so that the rest of the file is
still checked.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from contextlib import contextmanager

from lark import Token

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
_PLAIN = re.compile(r"[^\\$]+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "'": "'", "0": "\0"}

ExprParser = Callable[[str, int, int], Any]  # (text, line, column) -> the AST of an `expr`


def token_span(filename: str, tok: Token) -> Span:
    return Span(filename, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)


def parse_duration(text: str) -> float | None:
    """Seconds of ``1h30m``; ``None`` when ``text`` is not a duration."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))



@dataclass
class _Parse:
    """The state of one parse (and of the `${...}` parses nested in it)."""

    filename: str
    parse_expr: ExprParser
    diagnostics: list[Diagnostic] = field(default_factory=list)
    depth: dict[int, int] = field(default_factory=dict)
    # Spans of parenthesised expressions: `(a)` is the node of `a`, but its parent spans the parentheses.
    outer: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    # The nodes keyed by id above, kept alive for the whole parse: the nodes of a `${...}` that failed
    # to parse are dropped, and a new node must never find their entries under a recycled id.
    keep: list[Any] = field(default_factory=list)


class AstBuilder:
    """Lark's inline transformer for the grammar: one method per rule (or alias), children in, AST out.

    One instance serves every parse of the module's parser; the state of the current parse lives
    in a thread-local ``_Parse`` opened by ``session``, so threads may parse at the same time.
    Method names are rule names, so helpers are private and no attribute is named like a terminal.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def session(self, filename: str, parse_expr: ExprParser) -> Iterator[_Parse]:
        """Open the state of a parse; a parse nested in a callback (`${...}`) reuses the open one."""
        outer = getattr(self._local, "state", None)
        if outer is not None:
            yield outer
            return
        state = _Parse(filename, parse_expr)
        self._local.state = state
        try:
            yield state
        finally:
            self._local.state = None

    def checkpoint(self) -> int:
        """A mark of the diagnostics so far, for ``rollback`` when a parse is abandoned to be redone."""
        return len(self._st.diagnostics)

    def rollback(self, mark: int) -> None:
        del self._st.diagnostics[mark:]

    @property
    def _st(self) -> _Parse:
        return self._local.state  # type: ignore[no-any-return]

    # ---- helpers ---------------------------------------------------------------------------------

    def _bounds(self, first: Any, last: Any) -> Span:
        """From the start of ``first`` to the end of ``last`` (tokens, nodes or (.., Span) tuples)."""
        st = self._st
        if isinstance(first, Token):
            line, column = first.line, first.column
        else:
            line, column = self._edges(first, st)[:2]
        if isinstance(last, Token):
            end_line, end_column = last.end_line, last.end_column
        else:
            end_line, end_column = self._edges(last, st)[2:]
        return Span(st.filename, line or 1, column or 1, end_line or 1, end_column or 1)

    @staticmethod
    def _edges(node: Any, st: _Parse) -> tuple[int, int, int, int]:
        paren = st.outer.get(id(node))
        if paren is not None:
            return paren
        loc = node[-1] if isinstance(node, tuple) else node.loc
        return loc.line, loc.column, loc.end_line, loc.end_column

    def _whole(self, children: list[Any]) -> Span:
        """The span of a rule from all its children (``None`` placeholders skipped)."""
        first, last = children[0], children[-1]  # a rule never starts or ends with an empty `[...]`
        return self._bounds(first, last)

    def _tspan(self, tok: Token) -> Span:
        return Span(self._st.filename, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)

    def _expr(self, node: Any, *children: Any) -> Any:
        """Record the depth of a new expression node; refuse trees deep enough to hurt later passes."""
        st = self._st
        depth_of = st.depth
        depth = 1 + max((depth_of.get(id(c), 0) for c in children), default=0)
        if depth > MAX_EXPR_DEPTH:
            raise FlowLimitError([error(
                "E111", f"expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)", node.loc,
                "help: split it with `let` constants",
            )])
        depth_of[id(node)] = depth
        st.keep.append(node)
        return node

    def _name(self, tok: Token, what: str) -> str:
        name = str(tok)
        if name in KEYWORDS:
            self._st.diagnostics.append(error(
                "E107", f"`{name}` is a reserved word and cannot be used as {what}", self._tspan(tok),
                "help: choose another name",
            ))
        return name

    @staticmethod
    def _nodes(children: list[Any]) -> list[Any]:
        """The children that are not tokens (punctuation and keywords) nor empty placeholders."""
        return [c for c in children if c is not None and not isinstance(c, Token)]

    # ---- file and declarations -------------------------------------------------------------------

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
        return ast.File(self._st.filename, version, tuple(lets), tuple(workflows))

    def version(self, children: list[Any]) -> int:
        if str(children[1]) != "1":
            self._st.diagnostics.append(error(
                "E108", "unsupported language version; this compiler reads `flow 1`", self._whole(children)
            ))
        return 1

    def let_decl(self, children: list[Any]) -> ast.Let:
        _let, tok, _eq, expr = children
        return ast.Let(self._name(tok, "a `let` name"), expr, self._whole(children), self._tspan(tok))

    def workflow(self, children: list[Any]) -> ast.Workflow:
        tok = children[1]
        rest = self._nodes(children[2:])
        params = tuple(c for c in rest if isinstance(c, ast.Param))
        items = tuple(c for c in rest if not isinstance(c, ast.Param))
        return ast.Workflow(self._name(tok, "a workflow name"), self._tspan(tok), params, items, self._whole(children))

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

    def step(self, children: list[Any]) -> ast.Step:
        tok, (type_name, type_loc) = children[1], children[3]
        entries = tuple(self._nodes(children[5:]))
        return ast.Step(self._name(tok, "a step name"), self._tspan(tok), type_name, type_loc, entries, self._whole(children))

    def step_type(self, children: list[Any]) -> tuple[str, Span]:
        return "".join(str(c) for c in children), self._whole(children)

    # ---- step entries ----------------------------------------------------------------------------

    def config(self, children: list[Any]) -> ast.Config:
        tok, value = children[0], children[2]
        return ast.Config(str(tok), value, self._tspan(tok))

    def after(self, children: list[Any]) -> ast.After:
        names = tuple((self._name(t, "a step name"), self._tspan(t)) for t in children[1:] if t.type == "NAME")
        return ast.After(names, self._whole(children))

    def when(self, children: list[Any]) -> ast.When:
        return ast.When(children[1], self._whole(children))

    def for_each(self, children: list[Any]) -> ast.ForEach:
        var, items = children[2], children[4]
        rest = [c for c in children[5:] if isinstance(c, tuple)]
        where = next((c[1] for c in rest if c[0] == "where"), None)
        concurrency = next((c[1] for c in rest if c[0] == "concurrency"), None)
        return ast.ForEach(self._name(var, "a loop variable"), self._tspan(var), items, where, concurrency, self._whole(children))

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
        self._st.diagnostics.append(error("E109", "expected a plain string here, without `${...}`", node.loc))
        return ""

    # ---- expressions -----------------------------------------------------------------------------

    def atom(self, children: list[Any]) -> ast.Expr:
        """`( expr )`: the node of `expr`, whose parents span the parentheses too."""
        lpar, inner, rpar = children
        st = self._st
        st.outer[id(inner)] = (lpar.line, lpar.column, rpar.end_line, rpar.end_column)
        st.keep.append(inner)
        return inner

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
        return self._expr(ast.Member(obj, str(key), self._bounds(obj, key), self._tspan(key)), obj)

    def index(self, children: list[Any]) -> ast.Expr:
        obj, _lsqb, idx, rsqb = children
        return self._expr(ast.Index(obj, idx, self._bounds(obj, rsqb)), obj, idx)

    def name(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        name = str(tok)
        if name not in KEYWORD_ROOTS:
            self._name(tok, "a name")
        return ast.Name(name, self._tspan(tok))

    def call(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        args = self._nodes(children[2:])
        return self._expr(ast.Call(str(tok), tuple(args), self._bounds(tok, children[-1]), self._tspan(tok)), *args)

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
            node = self._string(tok) if tok.type == "STRING" else ast.Literal(str(tok)[1:-1], self._tspan(tok))
            key = node.value if isinstance(node, ast.Literal) else None
            if not isinstance(key, str):
                self._st.diagnostics.append(error("E109", "an object key cannot use `${...}`", self._tspan(tok)))
                key = ""
        entry = ast.ObjectEntry(key, value, self._tspan(tok))
        st = self._st
        st.depth[id(entry)] = st.depth.get(id(value), 0)
        st.keep.append(entry)
        return entry

    def true(self, children: list[Any]) -> ast.Expr:
        return ast.Literal(True, self._tspan(children[0]))

    def false(self, children: list[Any]) -> ast.Expr:
        return ast.Literal(False, self._tspan(children[0]))

    def null(self, children: list[Any]) -> ast.Expr:
        return ast.Literal(None, self._tspan(children[0]))

    def number(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        text, loc = str(tok), self._tspan(tok)
        if _INT.fullmatch(text):
            return ast.Literal(int(text), loc)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return ast.Literal(value, loc)
            self._st.diagnostics.append(error("E102", f"number `{text}` is out of range", loc))
            return ast.Literal(0, loc)
        seconds = parse_duration(text)
        if seconds is not None:
            return ast.Duration(seconds, text, loc)
        self._st.diagnostics.append(error(
            "E102", f"bad number or duration `{text}`", loc,
            "help: numbers look like `3`, `2.5`, `1e3`; durations like `250ms`, `30s`, `1h30m` (units ms s m h d)",
        ))
        return ast.Literal(0, loc)

    def string(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        if tok.type == "RAW_STRING":
            return ast.Literal(str(tok)[1:-1], self._tspan(tok))
        return self._string(tok)

    def _string(self, tok: Token) -> ast.Expr:
        """Unescape a "..." token and parse each `${...}` inside it as an expression."""
        raw, loc = str(tok), self._tspan(tok)
        if "\\" not in raw and "$" not in raw:
            return ast.Literal(raw[1:-1], loc)
        parts: list[Any] = []
        buf: list[str] = []
        i, end = 1, len(raw) - 1
        while i < end:
            plain = _PLAIN.match(raw, i, end)
            if plain:  # runs of ordinary characters in one step
                buf.append(plain.group())
                i = plain.end()
                continue
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
        self._st.diagnostics.append(error(
            "E105", f"unknown escape `\\{nxt}` in a string", Span(self._st.filename, tok.line or 1, col, tok.line or 1, col + 2),
            'help: known escapes are \\n \\t \\r \\" \\\\ \\$ \\u{XXXX}; use a raw string \'...\' for backslashes',
        ))
        return i + 2

    def _interp(self, inner: str, tok: Token, offset: int) -> ast.Expr:
        line, column = tok.line or 1, (tok.column or 1) + offset
        loc = Span(self._st.filename, line, column - 2, line, column + len(inner) + 1)
        if not inner.strip():
            self._st.diagnostics.append(error("E106", "empty `${}` in a string", loc, "help: put an expression inside, or write `\\${` for the text"))
            return ast.Literal(None, loc)
        simple = _SIMPLE_PATH.fullmatch(inner)
        if simple and simple.group(1) not in KEYWORDS - KEYWORD_ROOTS:
            return self._path(simple, line, column)
        st = self._st
        before = len(st.diagnostics)
        try:
            return st.parse_expr(inner, line, column)  # type: ignore[no-any-return]
        except FlowLimitError:
            raise
        except FlowError as exc:
            del st.diagnostics[before:]  # what the rules reduced before the error are no nodes of the AST
            for diag in exc.diagnostics:
                message = diag.message.replace("end of file", "end of `${...}`")
                st.diagnostics.append(dataclasses.replace(diag, message=message, notes=()))
            return ast.Literal(None, loc)

    def _path(self, match: re.Match[str], line: int, column: int) -> ast.Expr:
        """`${a.b.c}` without a second parse: most interpolations are such paths."""
        start = column + match.start(1)
        node: ast.Expr = ast.Name(match.group(1), Span(self._st.filename, line, start, line, start + len(match.group(1))))
        pos = start + len(match.group(1))
        for key in match.group(2).split(".")[1:]:
            key_loc = Span(self._st.filename, line, pos + 1, line, pos + 1 + len(key))
            pos = key_loc.end_column
            node = self._expr(ast.Member(node, key, Span(self._st.filename, line, start, line, pos), key_loc), node)
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

