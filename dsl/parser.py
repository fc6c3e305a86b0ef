"""Source text -> AST. Lark errors are translated here, at the boundary, into FlowSyntaxError.

``parse`` raises on the first problem; ``parse_partial`` (used by the compiler) returns what it
could build plus every diagnostic, re-parsing from the next top-level declaration after an error,
and inside a declaration from the next step (one syntax error per step).

The AST is built during the parse (dsl/builder.py is lark's inline transformer). Well-formed text
takes the fast path of dsl/lalr.py, a tight loop over lark's own tables; text it cannot take is
parsed again by lark, whose exception is translated here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from dsl import ast, lalr, scan
from dsl.builder import AstBuilder
from dsl.errors import Diagnostic, FlowLimitError, FlowSyntaxError, SourceError, error
from dsl.spec import Span

_BUILDER = AstBuilder()
# Built once. The builder runs inside the parse (no parse tree); it needs every token to know where
# each node starts and ends, which is why positions are not propagated by lark.
_LARK = Lark(
    Path(__file__).with_name("flow.lark").read_text(encoding="utf-8"),
    parser="lalr",
    strict=True,
    keep_all_tokens=True,
    transformer=_BUILDER,
    start=["start", "expr"],
)
_FAST = lalr.fast_parser(_LARK)  # the same parse, faster; lark itself for what it cannot take (errors)

# Words for terminals, so that users never see lark's names (RBRACE, KEY, $END ...).
_WORDS: dict[str, str] = {
    t.name: f"`{t.pattern.value}`" for t in _LARK.terminals if isinstance(t.pattern, PatternStr)
}
_WORDS.update({
    "NAME": "a name", "KEY": "a config entry `key: value`", "NUMBER": "a number", "STRING": "a string",
    "RAW_STRING": "a string", "$END": "the end of the file", "SCHEDULE_KIND": "`cron`, `every` or `at`",
})
_EXPR_START = {"NAME", "NUMBER", "STRING", "RAW_STRING", "LPAR", "LSQB", "LBRACE", "MINUS", "NOT", "TRUE", "FALSE", "NULL"}
_OPERATORS = {"&&": "and", "||": "or", "!": "not"}
_MAX_EXPECTED = 10
_TOP_LEVEL = re.compile(r"^(?:workflow|let)\b", re.MULTILINE)
# A step header up to the `{` of its body, `step NAME: TYPE {`, broken or not.
_STEP_START = re.compile(r"(?<![\w.])step[ \t\r\n]+[A-Za-z_][^{}()\[\]\"'#]*\{")
# What comes right before the `{` of a block that holds steps: `workflow w(...)` or `on failure`.
_STEP_HOLDER = re.compile(r"(?:\)|\bon[ \t\r\n]+failure)[ \t\r\n]*\Z")
_MAX_RECOVERIES = 20  # re-parses of one declaration; each costs a parse of it


def parse(source: str, filename: str = "<string>") -> ast.File:
    """Parse a whole file.

    Raises:
        FlowLimitError: the source breaks a limit (size, nesting, stray characters).
        FlowSyntaxError: the source does not follow the grammar; ``diagnostics`` lists every error found.
    """
    tree, diags = parse_partial(source, filename)
    errors = [d for d in diags if d.is_error]
    if errors:
        limit = any(d.code in ("E110", "E111", "E113", "E114") for d in errors)
        raise (FlowLimitError if limit else FlowSyntaxError)(errors, source)
    return tree


def parse_partial(source: str, filename: str = "<string>") -> tuple[ast.File, list[Diagnostic]]:
    """Parse what can be parsed; return the AST of the good declarations and all diagnostics."""
    empty = ast.File(filename, None, (), ())
    size = scan.check_size(len(source.encode("utf-8", "surrogatepass")), filename)
    if size:
        return empty, [size]
    limits = scan.scan(source, filename)
    if limits:
        return empty, limits
    try:
        return _parse_chunk(source, filename)
    except FlowLimitError as exc:
        return empty, exc.diagnostics
    except SourceError as exc:
        first = exc.diagnostics
    return _parse_by_declaration(source, filename, first)


def _parse_by_declaration(source: str, filename: str, first: list[Diagnostic]) -> tuple[ast.File, list[Diagnostic]]:
    """Parse each top-level declaration (a line starting with `workflow` or `let`) on its own."""
    starts = [0] + [m.start() for m in _TOP_LEVEL.finditer(source) if m.start() > 0]
    version = None
    lets: list[ast.Let] = []
    workflows: list[ast.Workflow] = []
    diags: list[Diagnostic] = []
    line = 1
    for begin, end in zip(starts, starts[1:] + [len(source)]):
        chunk = source[begin:end]
        # Leading newlines keep lark's line numbers those of the whole file.
        try:
            part, found = _parse_chunk("\n" * (line - 1) + chunk, filename)
        except FlowLimitError as exc:
            return ast.File(filename, version, tuple(lets), tuple(workflows)), diags + exc.diagnostics
        except SourceError as exc:
            found = _errors_by_step("\n" * (line - 1) + chunk, filename, exc.diagnostics)
            if end < len(source):  # the chunk stops where the next declaration starts, not at the end of file
                found = [dataclasses.replace(d, message=d.message.replace("end of file", "end of the declaration"))
                         for d in found]
            diags.extend(found)
        else:
            version = version if part.version is None else part.version
            lets.extend(part.lets)
            workflows.extend(part.workflows)
            diags.extend(found)
        line += chunk.count("\n")
    if not any(d.is_error for d in diags):
        diags = first + diags
    return ast.File(filename, version, tuple(lets), tuple(workflows)), diags


def _errors_by_step(text: str, filename: str, first: list[Diagnostic]) -> list[Diagnostic]:
    """The syntax errors of one declaration, at most one per step: more than the first one.

    When an error lies inside a step (between its `step` keyword and the `}` that closes its body),
    the step is blanked out (spaces, newlines kept so that positions hold) and the declaration is
    parsed again, until it parses or an error lies outside any whole step. The declaration itself
    is still dropped: its other steps could refer to the broken ones and report false errors.
    """
    diags = list(first)
    current = first
    for _ in range(_MAX_RECOVERIES):
        syntax = next((d for d in current if d.is_error), None)
        if syntax is None:
            break
        segment = _enclosing_step(text, scan.offset(text, syntax.span.line, syntax.span.column))
        if segment is None:
            break
        begin, end = segment
        text = text[:begin] + re.sub(r"[^\n]", " ", text[begin:end]) + text[end:]
        try:
            _, found = _parse_chunk(text, filename)
        except FlowLimitError:
            break
        except SourceError as exc:
            current = exc.diagnostics
            diags.extend(current)
        else:
            diags.extend(found)
            break
    return diags


def _enclosing_step(text: str, offset: int) -> tuple[int, int] | None:
    """``(start, end)`` of the whole step (`step` keyword to closing `}`) holding ``offset``, if any."""
    headers = [m for m in _STEP_START.finditer(text) if not scan.in_string_or_comment(text, m.start())]
    before = [m for m in headers if m.start() < offset]
    if not before:
        return None
    match = before[-1]
    close = scan.matching_close(text, match.end() - 1)
    # Steps do not nest: a body that runs into the next step is not whole (a `}` is missing).
    if close is None or offset > close or any(match.start() < m.start() < close for m in headers):
        return None
    # A step stands in a workflow's body or in `on failure { }`. Inside anything else (an object left
    # open before it, say) the error lies before the step, and skipping it would only repeat it.
    opened = scan.open_brackets(text, match.start())
    if not opened or not _STEP_HOLDER.search(text, 0, opened[-1]):
        return None
    return match.start(), close + 1


def _parse_chunk(text: str, filename: str) -> tuple[ast.File, list[Diagnostic]]:
    with _BUILDER.session(filename, lambda inner, line, col: _parse_tree(_pad(inner, line, col), filename, "expr")) as state:
        result = _parse_tree(text, filename, "start")
    return result, state.diagnostics


def _pad(text: str, line: int, column: int) -> str:
    return "\n" * (line - 1) + " " * (column - 1) + text


def _parse_tree(text: str, filename: str, start: str) -> Any:
    if _FAST is not None:
        mark = _BUILDER.checkpoint()
        try:
            return _FAST(text, start)
        except lalr.NeedsLark:
            _BUILDER.rollback(mark)  # lark parses it again, to say what is wrong
    try:
        return _LARK.parse(text, start=start)
    except UnexpectedInput as exc:
        diag = translate(exc, text, filename)
    except LarkError as exc:  # never shown raw; keeps the promise that only SourceError escapes
        diag = error("E101", f"cannot parse this source ({type(exc).__name__})", Span(filename, 1, 1, 1, 2))
    raise FlowSyntaxError([diag], text) from None


# ---- translation of lark errors ------------------------------------------------------------------


def translate(exc: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    """One lark error -> one diagnostic in the language's words."""
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_char(exc, text, filename)
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, text, filename)
    if isinstance(exc, UnexpectedEOF):
        return _end_of_file(text, filename, set(exc.expected))
    return error("E101", "syntax error", Span(filename, exc.line or 1, exc.column or 1, exc.line or 1, (exc.column or 1) + 1))


def _unexpected_char(exc: UnexpectedCharacters, text: str, filename: str) -> Diagnostic:
    pos = int(exc.pos_in_stream or 0)
    rest = text[pos:]
    two, one = rest[:2], rest[:1]
    span = scan.span_at(filename, text, pos, 1)
    if two in _OPERATORS or (one == "!" and two != "!="):
        op = two if two in _OPERATORS else one
        return error("E104", f"unknown operator `{op}`", scan.span_at(filename, text, pos, len(op)), f"help: use `{_OPERATORS[op]}`")
    if one in "&|":
        return error("E104", f"unknown operator `{one}`", span, "help: use `and` / `or`")
    if one in "\"'":
        line_rest = rest.split("\n", 1)[0]
        if one == '"' and line_rest.count('"') >= 2 and "${" in line_rest:
            return error("E103", "unterminated `${` in a string", scan.span_at(filename, text, pos, len(line_rest)),
                         "help: close it with `}`, or write `\\${` for the text")
        return error("E103", "unterminated string", scan.span_at(filename, text, pos, max(len(line_rest), 1)),
                     f"help: close it with {one} on the same line")
    if one == "=" and two != "==":
        return error("E101", "unexpected `=`", span, "help: use `:` between a key and its value; compare with `==`")
    return error("E101", f"unexpected character `{one}`", span)


def _unexpected_token(exc: UnexpectedToken, text: str, filename: str) -> Diagnostic:
    tok: Token = exc.token
    expected = set(exc.accepts or exc.expected)
    if tok.type == "$END":
        return _end_of_file(text, filename, expected)
    span = Span(filename, tok.line or 1, tok.column or 1, tok.end_line or tok.line or 1, tok.end_column or (tok.column or 1) + 1)
    found = _describe(tok)
    if tok.type == "EQUAL" and "COLON" in expected:
        return error("E101", "expected `:`, found `=`", span, "help: write `key: value`")
    if tok.type == "COLON" and "EQUAL" in expected:
        return error("E101", "expected `=`, found `:`", span, "help: `let` binds a name with `=`; defaults are `name: type = value`")
    if tok.type == "NAME" and "KEY" in expected:
        return error("E101", f"missing `:` after `{tok}`", span,
                     "help: config entries are `key: value`; clauses are after, when, for each, retry, timeout, "
                     "compensate, allow_failure, doc")
    if tok.type in ("EQ", "NE", "LT", "LE", "GT", "GE", "IN") and not expected & {"EQ", "LT", "IN"}:
        return error("E101", f"comparisons do not chain: unexpected {found}", span, "help: use `and`: `a < b and b < c`")
    if not expected:  # lark knows no token that could come here (after a whole `${...}` expression)
        return error("E101", f"unexpected {found}", span)
    return error("E101", f"unexpected {found}; expected {_expected_words(expected)}", span)


def _end_of_file(text: str, filename: str, expected: set[str]) -> Diagnostic:
    stripped = text.rstrip()
    line, column = scan.position(text, len(stripped)) if stripped else (1, 1)
    span = Span(filename, line, column, line, column + 1)
    opened = scan.unclosed_bracket(text)
    if opened is not None:
        closer = scan._OPEN[text[opened]]
        oline, ocol = scan.position(text, opened)
        return error("E101", f"unexpected end of file: missing `{closer}`", span,
                     f"note: the `{text[opened]}` at {oline}:{ocol} is never closed")
    return error("E101", f"unexpected end of file; expected {_expected_words(expected)}", span)


def _describe(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name `{tok}`"
    if tok.type == "KEY":
        return f"`{tok}:`"
    if tok.type in ("STRING", "RAW_STRING"):
        return "a string"
    if tok.type == "NUMBER":
        return f"number `{tok}`"
    word = _WORDS.get(tok.type)
    if word and word[1:-1].isalpha():
        return f"keyword {word}"
    return word or f"`{tok}`"


def _expected_words(expected: set[str]) -> str:
    names = set(expected)
    words: list[str] = []
    if len(names & _EXPR_START) >= 6:
        names -= _EXPR_START
        words.append("an expression")
    words += sorted({_WORDS.get(n, n.lower()) for n in names})
    if len(words) > _MAX_EXPECTED:
        words = words[:_MAX_EXPECTED] + [f"{len(words) - _MAX_EXPECTED} more"]
    if len(words) == 1:
        return words[0]
    return "one of " + ", ".join(words)


def parse_expression(text: str, filename: str, line: int = 1, column: int = 1) -> tuple[ast.Expr, list[Diagnostic]]:
    """Parse one expression that starts at ``line:column`` of ``filename`` (other languages that
    embed Flow expressions, such as `.flowtest` files, use it: spans point into their file).

    Raises:
        FlowSyntaxError: ``text`` is not an expression.
    """
    def parse_inner(inner: str, inner_line: int, inner_column: int) -> Any:
        return _parse_tree(_pad(inner, inner_line, inner_column), filename, "expr")

    with _BUILDER.session(filename, parse_inner) as state:
        tree = _parse_tree(_pad(text, line, column), filename, "expr")
    return tree, state.diagnostics
