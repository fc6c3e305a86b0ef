"""The statements of a `.flowtest` file, cut from the text with their positions (no meaning yet).

A statement starts with a word and runs to the end of its line; brackets and strings continue it
over newlines, so `params { ... }` may span lines. `test "name" { ... }` holds statements.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsl.errors import Diagnostic, error
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


class ScanError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class Scanner:
    """Walks the text of one file, keeping line and column."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.file = filename
        self.pos = 0
        self.line = 1
        self.column = 1

    def here(self, length: int = 1) -> Span:
        return Span(self.file, self.line, self.column, self.line, self.column + max(length, 1))

    def fail(self, code: str, message: str, length: int = 1, *notes: str) -> ScanError:
        return ScanError(error(code, message, self.here(length), *notes))

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.pos >= len(self.text):
                return
            if self.text[self.pos] == "\n":
                self.line += 1
                self.column = 1
            else:
                self.column += 1
            self.pos += 1

    def skip_blank(self) -> None:
        """Skip white space, newlines and `#` comments."""
        while not self.at_end():
            char = self.peek()
            if char.isspace():
                self.advance()
            elif char == "#":
                while not self.at_end() and self.peek() != "\n":
                    self.advance()
            else:
                return

    def word(self) -> Piece | None:
        """A name (`test`, `mock`, `order_saga`) at the current position, if one starts here."""
        start = self.pos
        line, column = self.line, self.column
        while not self.at_end() and (self.peek().isalnum() or self.peek() == "_"):
            self.advance()
        if self.pos == start or self.text[start].isdigit():
            return None
        return Piece(self.text[start:self.pos], line, column, self.file)

    def string(self) -> Piece:
        """A `"..."` string literal (its text without the quotes; escapes are not interpreted)."""
        if self.peek() != '"':
            raise self.fail("T101", "expected a string in double quotes")
        line, column = self.line, self.column
        self.advance()
        start = self.pos
        while self.peek() != '"':
            if self.at_end() or self.peek() == "\n":
                raise ScanError(error("T102", "unterminated string", Span(self.file, line, column, line, column + 1),
                                      "help: close it with `\"` on the same line"))
            self.advance(2 if self.peek() == "\\" else 1)
        text = self.text[start:self.pos]
        self.advance()
        return Piece(text, line, column + 1, self.file)

    def rest_of_statement(self) -> Piece:
        """From here to the end of the line, continued over newlines inside brackets and strings;
        stops before a `}` that closes the enclosing block."""
        line, column = self.line, self.column
        start = self.pos
        stack: list[tuple[str, Span]] = []
        while not self.at_end():
            char = self.peek()
            if char == "\n" and not stack:
                break
            if char == "#":
                if not stack:
                    break  # a comment after the statement; `skip_blank` passes over it
                while not self.at_end() and self.peek() != "\n":
                    self.advance()
                continue
            if char in "\"'":
                self._skip_quoted(char)
                continue
            if char in _OPEN:
                stack.append((char, self.here()))
            elif char in _CLOSE:
                if not stack:
                    if char == "}":
                        break
                    raise self.fail("T103", f"unmatched `{char}`")
                opened, where = stack.pop()
                if opened != _CLOSE[char]:
                    raise self.fail("T103", f"`{char}` does not close the `{opened}` at line {where.line}")
            self.advance()
        if stack:
            opened, where = stack[-1]
            raise ScanError(error("T103", f"`{opened}` is never closed", where))
        return Piece(self.text[start:self.pos], line, column, self.file)

    def _skip_quoted(self, quote: str) -> None:
        line, column = self.line, self.column
        self.advance()
        while self.peek() != quote:
            if self.at_end() or self.peek() == "\n":
                raise ScanError(error("T102", "unterminated string", Span(self.file, line, column, line, column + 1)))
            self.advance(2 if self.peek() == "\\" and quote == '"' else 1)
        self.advance()


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
