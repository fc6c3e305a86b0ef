"""The statements of a `.flowtest` file, cut from the text with their positions (no meaning yet).

A statement starts with a word and runs to the end of its line; brackets and strings continue it
over newlines, so `params { ... }` may span lines. `test "name" { ... }` holds statements.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from dsl.errors import Diagnostic, FlowError, error
from dsl.spec import Span

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


@dataclass(frozen=True)
class Piece:
    """A run of text and where it starts (1-based line and column)."""

    text: str
    line: int
    column: int
    file: str

    def span(self) -> Span:
        lines = self.text.split("\n")
        end_line = self.line + len(lines) - 1
        end_column = (self.column if len(lines) == 1 else 1) + len(lines[-1])
        return Span(self.file, self.line, self.column, end_line, max(end_column, self.column + 1))

    def at(self, offset: int, length: int | None = None) -> "Piece":
        """The part of this piece from ``offset`` (of ``length`` characters, else to the end)."""
        before = self.text[:offset]
        line = self.line + before.count("\n")
        column = offset - before.rfind("\n") if "\n" in before else self.column + offset
        text = self.text[offset:] if length is None else self.text[offset:offset + length]
        return Piece(text, line, column, self.file)

    def strip(self) -> "Piece":
        lead = len(self.text) - len(self.text.lstrip())
        return self.at(lead, len(self.text.strip()))


class ScanError(FlowError):
    """A test file that cannot be read as tokens; ``diagnostic`` says where and why."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class Scanner:
    """Walks the text of one file; lines and columns are computed from the offset when asked."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.file = filename
        self.pos = 0
        self._line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]

    @property
    def line(self) -> int:
        return bisect_right(self._line_starts, self.pos)

    @property
    def column(self) -> int:
        return self.pos - self._line_starts[self.line - 1] + 1

    def here(self, length: int = 1) -> Span:
        line, column = self.line, self.column
        return Span(self.file, line, column, line, column + max(length, 1))

    def fail(self, code: str, message: str, length: int = 1, *notes: str) -> ScanError:
        return ScanError(error(code, message, self.here(length), *notes))

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        self.pos = min(self.pos + count, len(self.text))

    def piece(self, start: int, end: int) -> Piece:
        line = bisect_right(self._line_starts, start)
        return Piece(self.text[start:end], line, start - self._line_starts[line - 1] + 1, self.file)

    def skip_blank(self) -> None:
        """Skip white space, newlines and `#` comments."""
        match = _BLANK.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def word(self) -> Piece | None:
        """A name (`test`, `mock`, `order_saga`) at the current position, if one starts here."""
        match = _WORD.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return self.piece(match.start(), match.end())

    def string(self) -> Piece:
        """A `"..."` string literal (its text without the quotes; escapes are not interpreted)."""
        if self.peek() != '"':
            raise self.fail("T101", "expected a string in double quotes")
        match = _DOUBLE_QUOTED.match(self.text, self.pos)
        if match is None:
            raise self.fail("T102", "unterminated string", 1, "help: close it with `\"` on the same line")
        self.pos = match.end()
        return self.piece(match.start() + 1, match.end() - 1)

    def rest_of_statement(self) -> Piece:
        """From here to the end of the line, continued over newlines inside brackets and strings;
        stops before a `}` that closes the enclosing block, and before a comment."""
        text = self.text
        start = self.pos
        stack: list[tuple[str, int]] = []
        while True:
            match = _INTERESTING.search(text, self.pos)
            if match is None:
                self.pos = len(text)
                break
            self.pos = match.start()
            char = match.group()
            if char == "\n" and not stack:
                break
            if char == "#":
                if not stack:
                    break  # a comment after the statement; `skip_blank` passes over it
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline
                continue
            if char in "\"'":
                quoted = (_DOUBLE_QUOTED if char == '"' else _SINGLE_QUOTED).match(text, self.pos)
                if quoted is None:
                    raise self.fail("T102", "unterminated string")
                self.pos = quoted.end()
                continue
            if char in _OPEN:
                stack.append((char, self.pos))
            elif char in _CLOSE:
                if not stack:
                    if char == "}":
                        break
                    raise self.fail("T103", f"unmatched `{char}`")
                opened, where = stack.pop()
                if opened != _CLOSE[char]:
                    line = bisect_right(self._line_starts, where)
                    raise self.fail("T103", f"`{char}` does not close the `{opened}` at line {line}")
            self.pos += 1
        if stack:
            opened, where = stack[-1]
            self.pos = where
            raise self.fail("T103", f"`{opened}` is never closed")
        return self.piece(start, self.pos)


_BLANK = re.compile(r"(?:\s+|#[^\n]*)+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_SINGLE_QUOTED = re.compile(r"'[^'\n]*'")
_INTERESTING = re.compile(r"[\n#\"'()\[\]{}]")


def split_top_level(piece: Piece, separator: str = ",") -> list[Piece]:
    """``piece`` cut at each ``separator`` outside brackets and strings."""
    parts: list[Piece] = []
    depth = 0
    start = 0
    index = 0
    text = piece.text
    while index < len(text):
        char = text[index]
        if char in "\"'":
            end = index + 1
            while end < len(text) and text[end] != char:
                end += 2 if text[end] == "\\" and char == '"' else 1
            index = end + 1
            continue
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(piece.at(start, index - start))
            start = index + 1
        index += 1
    parts.append(piece.at(start))
    return parts
