"""Cheap checks of the raw text before lark sees it: size, stray characters, bracket depth.

They run first so that no input can make the parser or the AST passes crash, hang or recurse
too deep, whatever it holds.
"""

from __future__ import annotations

import re

from dsl.errors import Diagnostic, error
from dsl.spec import Span

MAX_SOURCE_BYTES = 256 * 1024
MAX_NESTING = 64

_BAD_CHARS = "\x00-\x08\x0b\x0e-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069"
_BAD = re.compile(f"[{_BAD_CHARS}]")
# Strings are skipped whole (their brackets are text); comments are searched for bad characters.
_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|\'[^\'\n]*\'?|#[^\n]*|[\[\](){}]|' + f"[{_BAD_CHARS}]")
_OPEN = {"(": ")", "[": "]", "{": "}"}


def position(source: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of ``offset``."""
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def offset(source: str, line: int, column: int) -> int:
    """The offset of 1-based (line, column); the inverse of ``position``."""
    start = 0
    for _ in range(line - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return len(source)
    return min(start + column - 1, len(source))


def span_at(filename: str, source: str, offset: int, length: int = 1) -> Span:
    line, column = position(source, offset)
    return Span(filename, line, column, line, column + length)


def check_size(data_len: int, filename: str) -> Diagnostic | None:
    if data_len <= MAX_SOURCE_BYTES:
        return None
    return error(
        "E110", f"source is {data_len} bytes; the limit is {MAX_SOURCE_BYTES} (256 KiB)",
        Span(filename, 1, 1, 1, 2), "help: split the workflows into several files",
    )


def scan(source: str, filename: str) -> list[Diagnostic]:
    """Stray control or bidi characters outside strings, and nesting deeper than MAX_NESTING."""
    diags: list[Diagnostic] = []
    depth = 0
    for match in _SCAN.finditer(source):
        text = match.group()
        first = text[0]
        if first in "\"'":
            continue
        if first == "#":
            bad = _BAD.search(text)
            if bad:
                diags.append(_bad_char(filename, source, match.start() + bad.start()))
        elif first in _OPEN:
            depth += 1
            if depth > MAX_NESTING:
                diags.append(error(
                    "E111", f"nesting deeper than {MAX_NESTING} levels", span_at(filename, source, match.start()),
                    "help: flatten the structure, e.g. with `let` constants",
                ))
                return diags
        elif first in ")]}":
            depth = max(depth - 1, 0)
        else:
            diags.append(_bad_char(filename, source, match.start()))
        if len(diags) >= 20:
            break
    return diags


def _bad_char(filename: str, source: str, offset: int) -> Diagnostic:
    char = source[offset]
    code = f"U+{ord(char):04X}"
    if ord(char) >= 0x200E:
        return error(
            "E114", f"bidirectional control character {code} outside a string", span_at(filename, source, offset),
            "note: it can make the code read differently from how it runs; remove it",
        )
    return error("E114", f"control character {code} outside a string", span_at(filename, source, offset), "help: remove it")


def unclosed_bracket(source: str) -> int | None:
    """Offset of the innermost bracket left open at the end of ``source``, if any."""
    stack = open_brackets(source, len(source))
    return stack[-1] if stack else None


def open_brackets(source: str, end: int) -> list[int]:
    """Offsets of the brackets still open at ``end``, outermost first."""
    stack: list[int] = []
    for match in _SCAN.finditer(source, 0, end):
        first = match.group()[0]
        if first in _OPEN:
            stack.append(match.start())
        elif first in ")]}" and stack:
            stack.pop()
    return stack


def in_string_or_comment(source: str, offset: int) -> bool:
    """Whether ``offset`` lies inside a string or a comment (scanning its line only)."""
    line_start = source.rfind("\n", 0, offset) + 1
    line_end = source.find("\n", offset)
    for match in _SCAN.finditer(source, line_start, len(source) if line_end < 0 else line_end):
        if match.start() > offset:
            return False
        if match.group()[0] in "\"'#" and offset < match.end():
            return True
    return False


def matching_close(source: str, open_at: int) -> int | None:
    """Offset of the bracket closing the one at ``open_at`` (strings and comments skipped), or ``None``.

    A closer also closes the brackets left open inside its pair: in `{ x: [1, }` the `}` closes the `{`.
    """
    closer_of = _OPEN
    stack: list[str] = []
    for match in _SCAN.finditer(source, open_at):
        first = match.group()[0]
        if first in closer_of:
            stack.append(closer_of[first])
        elif first in ")]}" and first in stack:
            while stack.pop() != first:
                pass
            if not stack:
                return match.start()
    return None
