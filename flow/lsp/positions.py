"""Between the compiler's positions and the protocol's.

The compiler counts lines at ``\\n`` and columns in code points, both from 1 (``dsl.spec.Span``).
LSP counts both from 0, and characters in the code units of the negotiated position encoding:
UTF-16 unless the client offered another, so a character outside the Basic Multilingual Plane
(an emoji in a string) counts 2. pygls' own codec splits lines the way ``str.splitlines`` does
(at ``\\x0c``, ``\\u2028`` ...), which would shift every line after such a character against the
compiler's count; this table splits at ``\\n`` only, as the compiler does.
"""

from __future__ import annotations

from lsprotocol import types

from dsl.spec import Span

_UNIT_BYTES = {"utf-8": 1, "utf-16": 2, "utf-32": 4}
_CODECS = {"utf-8": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}


class LineIndex:
    """The line starts of one text, to convert positions both ways in the given encoding."""

    def __init__(self, source: str, encoding: str = "utf-16") -> None:
        if encoding not in _CODECS:
            raise ValueError(f"unknown position encoding {encoding!r}: use utf-8, utf-16 or utf-32")
        self.source = source
        self.encoding = encoding
        self.starts = [0]
        at = source.find("\n")
        while at != -1:
            self.starts.append(at + 1)
            at = source.find("\n", at + 1)

    def _line_text(self, line: int) -> str:
        end = self.starts[line + 1] - 1 if line + 1 < len(self.starts) else len(self.source)
        return self.source[self.starts[line]:end]

    def _units(self, text: str) -> int:
        if self.encoding == "utf-32" or text.isascii():
            return len(text)
        return len(text.encode(_CODECS[self.encoding], "surrogatepass")) // _UNIT_BYTES[self.encoding]

    def position(self, line: int, column: int) -> types.Position:
        """The LSP position of the compiler's 1-based ``line`` and ``column``."""
        row = min(max(line - 1, 0), len(self.starts) - 1)
        text = self._line_text(row)
        return types.Position(row, self._units(text[:max(column - 1, 0)]))

    def range(self, span: Span) -> types.Range:
        """The LSP range of a compiler span; an empty span is widened to one character so that it shows."""
        start = self.position(span.line, span.column)
        end = self.position(span.end_line, span.end_column)
        if (end.line, end.character) <= (start.line, start.character):
            end = types.Position(start.line, start.character + 1)
        return types.Range(start, end)

    def offset(self, position: types.Position) -> int:
        """The index into the text of an LSP position (clamped to the line and the text)."""
        line, character = int(position.line), int(position.character)
        if line >= len(self.starts):
            return len(self.source)
        text = self._line_text(line)
        if self.encoding == "utf-32" or text.isascii():
            return self.starts[line] + min(character, len(text))
        units = 0
        for index, char in enumerate(text):
            if units >= character:
                return self.starts[line] + index
            units += self._units(char)
        return self.starts[line] + len(text)
