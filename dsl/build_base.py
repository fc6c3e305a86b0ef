"""The state and helpers every rule of the AST builder shares (dsl/builder.py composes the rules).

One ``_Parse`` per parse holds the filename, the diagnostics and the bookkeeping of spans and
expression depth; ``BuilderBase`` opens it per thread and turns tokens and children into spans.
"""

from __future__ import annotations

import math
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from lark import Token

from dsl import ast
from dsl.errors import Diagnostic, FlowLimitError, error
from dsl.spec import Span

NodeT = TypeVar("NodeT", bound="ast.Expr | ast.ObjectEntry")

KEYWORDS = frozenset(
    "flow let workflow step after when for each in where concurrency retry timeout compensate none "
    "allow_failure defaults schedule cron every at output on failure doc and or not true false null".split()
)
# Roots that share their spelling with a keyword and are still usable as names in expressions.
KEYWORD_ROOTS = frozenset({"workflow"})
# Words of the grammar that are keywords only where a workflow item starts: elsewhere (a step, a
# param, a field) they are ordinary names, so they are not reserved.
CONTEXTUAL_KEYWORDS = frozenset({"search"})
MAX_EXPR_DEPTH = 128  # later passes recurse over expressions; this keeps them far from the limit

_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

ExprParser = Callable[[str, int, int], Any]  # (text, line, column) -> the AST of an `expr`


def token_span(filename: str, tok: Token) -> Span:
    return Span(filename, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)


def parse_duration(text: str) -> float | None:
    """Seconds of ``1h30m``; ``None`` when ``text`` is not a duration."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """``5400.0`` -> ``1h30m``: a duration as the language writes it (the inverse of ``parse_duration``).

    The largest units first; a number of seconds that no duration literal gives (not a whole number
    of milliseconds) is printed as a plain number.
    """
    millis = round(seconds * 1000)
    if seconds < 0 or not math.isclose(millis, seconds * 1000, rel_tol=1e-12, abs_tol=1e-6):
        return repr(seconds)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)



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


class BuilderBase:
    """The per-thread parse state and the span helpers of the rules (the rule mixins derive from it).

    Method names of the mixins are rule names, so helpers are private and no attribute is named like
    a terminal.
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
        return len(self._state.diagnostics)

    def rollback(self, mark: int) -> None:
        del self._state.diagnostics[mark:]

    @property
    def _state(self) -> _Parse:
        return self._local.state  # type: ignore[no-any-return]

    # ---- helpers ---------------------------------------------------------------------------------

    def _bounds(self, first: Any, last: Any) -> Span:
        """From the start of ``first`` to the end of ``last`` (tokens, nodes or (.., Span) tuples)."""
        st = self._state
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

    def _token_span(self, tok: Token) -> Span:
        return Span(self._state.filename, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)

    def _expr(self, node: NodeT, *children: Any) -> NodeT:
        """Record the depth of a new expression node; refuse trees deep enough to hurt later passes."""
        st = self._state
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
            self._state.diagnostics.append(error(
                "E107", f"`{name}` is a reserved word and cannot be used as {what}", self._token_span(tok),
                "help: choose another name",
            ))
        return name

    @staticmethod
    def _nodes(children: list[Any]) -> list[Any]:
        """The children that are not tokens (punctuation and keywords) nor empty placeholders."""
        return [c for c in children if c is not None and not isinstance(c, Token)]

    def _string(self, tok: Token) -> ast.Expr:
        raise NotImplementedError  # dsl.build_literals.LiteralRules
