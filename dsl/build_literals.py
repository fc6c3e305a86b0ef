"""The rules of literals: numbers and durations, strings with their escapes and `${...}` inside.

Each problem becomes a diagnostic and a harmless placeholder node, so the rest of the file is still
checked.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from lark import Token

from dsl import ast
from dsl.build_base import KEYWORD_ROOTS, KEYWORDS, BuilderBase, parse_duration
from dsl.errors import FlowLimitError, SourceError, error
from dsl.spec import Span

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SIMPLE_PATH = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*")
_PLAIN = re.compile(r"[^\\$]+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "'": "'", "0": "\0"}


class LiteralRules(BuilderBase):
    """`number`, `string`, and the unescaping and interpolation of "..." strings."""

    def number(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        text, loc = str(tok), self._token_span(tok)
        if _INT.fullmatch(text):
            return ast.Literal(int(text), loc)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return ast.Literal(value, loc)
            self._state.diagnostics.append(error("E102", f"number `{text}` is out of range", loc))
            return ast.Literal(0, loc)
        seconds = parse_duration(text)
        if seconds is not None:
            return ast.Duration(seconds, text, loc)
        self._state.diagnostics.append(error(
            "E102", f"bad number or duration `{text}`", loc,
            "help: numbers look like `3`, `2.5`, `1e3`; durations like `250ms`, `30s`, `1h30m` (units ms s m h d)",
        ))
        return ast.Literal(0, loc)

    def string(self, children: list[Any]) -> ast.Expr:
        tok = children[0]
        if tok.type == "RAW_STRING":
            return ast.Literal(str(tok)[1:-1], self._token_span(tok))
        return self._string(tok)

    def _string(self, tok: Token) -> ast.Expr:
        """Unescape a "..." token and parse each `${...}` inside it as an expression."""
        raw, loc = str(tok), self._token_span(tok)
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
        self._state.diagnostics.append(error(
            "E105", f"unknown escape `\\{nxt}` in a string", Span(self._state.filename, tok.line or 1, col, tok.line or 1, col + 2),
            'help: known escapes are \\n \\t \\r \\" \\\\ \\$ \\u{XXXX}; use a raw string \'...\' for backslashes',
        ))
        return i + 2

    def _interp(self, inner: str, tok: Token, offset: int) -> ast.Expr:
        line, column = tok.line or 1, (tok.column or 1) + offset
        loc = Span(self._state.filename, line, column - 2, line, column + len(inner) + 1)
        if not inner.strip():
            self._state.diagnostics.append(error("E106", "empty `${}` in a string", loc, "help: put an expression inside, or write `\\${` for the text"))
            return ast.Literal(None, loc)
        simple = _SIMPLE_PATH.fullmatch(inner)
        if simple and simple.group(1) not in KEYWORDS - KEYWORD_ROOTS:
            return self._path(simple, line, column)
        st = self._state
        before = len(st.diagnostics)
        try:
            return st.parse_expr(inner, line, column)  # type: ignore[no-any-return]
        except FlowLimitError:
            raise
        except SourceError as exc:
            del st.diagnostics[before:]  # what the rules reduced before the error are no nodes of the AST
            for diag in exc.diagnostics:
                message = diag.message.replace("end of file", "end of `${...}`")
                st.diagnostics.append(dataclasses.replace(diag, message=message, notes=()))
            return ast.Literal(None, loc)

    def _path(self, match: re.Match[str], line: int, column: int) -> ast.Expr:
        """`${a.b.c}` without a second parse: most interpolations are such paths."""
        start = column + match.start(1)
        node: ast.Expr = ast.Name(match.group(1), Span(self._state.filename, line, start, line, start + len(match.group(1))))
        pos = start + len(match.group(1))
        for key in match.group(2).split(".")[1:]:
            key_loc = Span(self._state.filename, line, pos + 1, line, pos + 1 + len(key))
            pos = key_loc.end_column
            node = self._expr(ast.Member(node, key, Span(self._state.filename, line, start, line, pos), key_loc), node)
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
