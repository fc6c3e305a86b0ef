"""The conversion between the compiler's 1-based code-point positions and LSP's 0-based code units."""

from __future__ import annotations

import pytest
from lsprotocol import types

from dsl.spec import Span
from flow.lsp.positions import LineIndex

TEXT = 'a\n  x: "😀é" y\r\nlast'


@pytest.mark.parametrize("encoding, character", [("utf-16", 11), ("utf-8", 14), ("utf-32", 10)])
def test_a_column_after_wide_characters_counts_the_encodings_units(encoding: str, character: int) -> None:
    lines = LineIndex(TEXT, encoding)
    column = TEXT.splitlines()[1].index("y") + 1  # the compiler's: 1-based, in code points
    assert lines.position(2, column) == types.Position(1, character)
    assert lines.offset(types.Position(1, character)) == TEXT.index("y")


def test_a_range_converts_both_ends_and_an_empty_span_shows_one_character() -> None:
    lines = LineIndex(TEXT)
    assert lines.range(Span("f", 2, 3, 2, 4)) == types.Range(types.Position(1, 2), types.Position(1, 3))
    assert lines.range(Span("f", 3, 5, 3, 5)) == types.Range(types.Position(2, 4), types.Position(2, 5))


def test_offsets_are_clamped_to_the_line_and_the_text() -> None:
    lines = LineIndex(TEXT)
    assert lines.offset(types.Position(0, 99)) == 1  # the end of "a"
    assert lines.offset(types.Position(9, 0)) == len(TEXT)


def test_lines_break_at_newlines_only_as_the_compiler_counts_them() -> None:
    # A form feed or U+2028 is no line break for the compiler (str.splitlines would count one).
    lines = LineIndex("x\x0cy\u2028z\nw")
    assert lines.position(2, 1) == types.Position(1, 0)
    assert lines.position(1, 5) == types.Position(0, 4)


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="utf-8, utf-16 or utf-32"):
        LineIndex("", "utf-7")
