"""Diagnostics of the .flow compiler and their rendering with a caret under the span.

A ``Diagnostic`` is a value (severity, code, message, span, notes); ``SourceError`` carries one or
more of them when a caller wants an exception rather than a list.

``FlowError`` is the base of every error Flow raises on purpose, in every layer: the language's
(``SourceError``, ``EvaluationError``, ``TaskDefinitionError``), the engine's
(``engine.core.errors.EngineError`` and the settings', messages' and database driver's), the
workers' (``workers.handler_api.HandlerError``, ``UnknownTaskType``, ``workers.ssrf.Refused``) and
the API's (``web.api.errors.ApiError``). It lives here because the language is the lowest layer.
Errors that are also a built-in kind keep that base too (``SettingsError`` is a ``ValueError``).
(The Python client, ``flow.errors``, has its own tree: it must not import the server's packages.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from dsl.spec import Span

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning. ``notes`` are extra lines such as ``"help: did you mean `x`?"``."""

    severity: str
    code: str
    message: str
    span: Span
    notes: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
        }


def error(code: str, message: str, span: Span, *notes: str) -> Diagnostic:
    return Diagnostic(ERROR, code, message, span, tuple(notes))


def warning(code: str, message: str, span: Span, *notes: str) -> Diagnostic:
    return Diagnostic(WARNING, code, message, span, tuple(notes))


def render_diagnostic(diag: Diagnostic, source: str | None = None) -> str:
    """``FILE:LINE:COL: error[CODE]: message``, the source line, a caret line, then the notes."""
    span = diag.span
    lines = [f"{span.file}:{span.line}:{span.column}: {diag.severity}[{diag.code}]: {diag.message}"]
    text = _source_line(source, span.line) if source is not None else None
    if text is not None:
        lines.append(text)
        lines.append(_caret_line(text, span))
    for note in diag.notes:
        lines.append(f"  = {note}")
    return "\n".join(lines)


def _source_line(source: str, line: int) -> str | None:
    all_lines = source.splitlines()
    if 1 <= line <= len(all_lines):
        return all_lines[line - 1]
    if line == len(all_lines) + 1:  # a span at the very end of a file that ends with a newline
        return ""
    return None


def _caret_line(text: str, span: Span) -> str:
    start = max(span.column - 1, 0)
    if span.end_line == span.line:
        end = max(span.end_column - 1, start + 1)
    else:
        end = max(len(text), start + 1)
    # Keep tabs so that the carets line up under the source line in any terminal.
    prefix = "".join("\t" if ch == "\t" else " " for ch in text[:start])
    prefix += " " * max(start - len(text), 0)
    return prefix + "^" * (end - start)


class FlowError(Exception):
    """Base of every error Flow raises on purpose (see the module's docstring)."""


class SourceError(FlowError):
    """A .flow source that cannot be compiled; ``diagnostics`` holds the details."""

    def __init__(self, diagnostics: Iterable[Diagnostic], source: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        self.source = source
        super().__init__(self.diagnostics[0].message if self.diagnostics else "invalid .flow source")

    def __str__(self) -> str:
        return "\n".join(render_diagnostic(d, self.source) for d in self.diagnostics)


class FlowSyntaxError(SourceError):
    """The source does not follow the grammar (E1xx)."""


class FlowSemanticError(SourceError):
    """The source parses but names, types or the graph are wrong (E2xx–E4xx)."""


class FlowLimitError(SourceError):
    """The source breaks a size limit: bytes, nesting, number of steps, encoding (E11x)."""
