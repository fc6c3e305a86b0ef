"""Highlight ``.flow`` source on the server (pure): a small tokenizer, one line at a time, and the
compiler's diagnostics attached to the lines they point at.

The output is data (lines of ``(css class, text)`` pairs); the template escapes every text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

KEYWORDS = frozenset("""
flow workflow step let after when for each in where concurrency retry timeout compensate none
allow_failure doc output on failure defaults schedule cron every at search true false null and or not
""".split())

_TOKEN = re.compile(r"""
    (?P<comment>\#.*)
  | (?P<string>"(?:\\.|[^"\\])*"?)
  | (?P<number>\d+(?:\.\d+)?(?:ms|s|m|h|d)?\b)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}()\[\]:,.<>=!+\-*/%?|&]+)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.X)


@dataclass
class Line:
    number: int
    tokens: list[tuple[str, str]]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def severity(self) -> str:
        severities = {d["severity"] for d in self.diagnostics}
        return "error" if "error" in severities else ("warning" if severities else "")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    previous = ""
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        value = match.group()
        if kind == "word":
            if value in KEYWORDS:
                kind = "kw"
            elif previous in ("step", "workflow", "let"):
                kind = "name"
            else:
                kind = "ident"
        out.append((kind, value))
        if kind not in ("space",):
            previous = value
    return out


def highlight(source: str, diagnostics: Iterable[Any] = ()) -> list[Line]:
    """The lines of ``source``, tokenized, each with the diagnostics (``Diagnostic`` or its JSON)
    that start on it."""
    lines = [Line(i + 1, _tokens(text)) for i, text in enumerate(source.splitlines() or [""])]
    for diagnostic in diagnostics:
        data = diagnostic.to_json() if hasattr(diagnostic, "to_json") else dict(diagnostic)
        number = int(data.get("line") or 1)
        column = int(data.get("column") or 1)
        end_column = data.get("end_column") if data.get("end_line") in (None, number) else None
        width = max(1, int(end_column) - column) if end_column else 1
        notes = list(getattr(diagnostic, "notes", None) or data.get("notes") or ())
        entry = {**data, "notes": notes, "caret": " " * (column - 1) + "^" * width}
        lines[min(max(number, 1), len(lines)) - 1].diagnostics.append(entry)
    return lines
