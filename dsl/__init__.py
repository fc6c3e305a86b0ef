"""The .flow language: compile source text into workflow specs (see docs/spec.md).

    >>> result = compile_source(text, "order.flow")
    >>> result.ok, result.spec("order_saga")

Nothing here raises for bad user input: every problem becomes a ``Diagnostic``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dsl import ast
from dsl.errors import (
    Diagnostic,
    FlowError,
    FlowLimitError,
    FlowSemanticError,
    FlowSyntaxError,
    SourceError,
    render_diagnostic,
)
from dsl.spec import Span, WorkflowSpec

__all__ = [
    "CompileResult", "Diagnostic", "FlowError", "FlowLimitError", "FlowSemanticError", "FlowSyntaxError", "SourceError",
    "compile_file", "compile_source", "render_diagnostic",
]


@dataclass(frozen=True)
class CompileResult:
    """The specs of the workflows that compiled, and every diagnostic (errors and warnings)."""

    specs: list[WorkflowSpec] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    source: str = ""
    # The syntax tree of what parsed (for editors: outline, hover, go-to-definition); None when the
    # text was refused before parsing (too large, not UTF-8).
    tree: ast.File | None = None

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not any(d.is_error for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def spec(self, name: str) -> WorkflowSpec:
        """The spec of workflow ``name``; raises ``KeyError`` if it is absent or did not compile."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"no compiled workflow {name!r}")

    def render(self) -> str:
        return "\n".join(render_diagnostic(d, self.source) for d in self.diagnostics)

    def raise_for_errors(self) -> None:
        """Raise ``FlowSyntaxError``/``FlowLimitError``/``FlowSemanticError`` when there are errors."""
        errors = self.errors
        if not errors:
            return
        if any(d.code.startswith("E11") for d in errors):
            raise FlowLimitError(errors, self.source)
        if any(d.code.startswith("E1") for d in errors):
            raise FlowSyntaxError(errors, self.source)
        raise FlowSemanticError(errors, self.source)


def compile_source(source: str | bytes, filename: str = "<string>", step_types: Mapping[str, Any] | None = None) -> CompileResult:
    """Compile .flow text (str, or UTF-8 bytes) into specs and diagnostics; never raises for bad input.

    Parameters:
        step_types: the plugin step types to check dotted types against, ``{"acme.email": obj}``
            where ``obj`` is a ``dsl.plugins.PluginStepType`` or what a ``flow.step_types`` entry
            point gives; ``None`` (the default) reads the installed plugins' entry points.
    """
    from dsl.compiler import compile_ast
    from dsl.parser import parse_partial
    from dsl.plugins import as_step_types
    from dsl.scan import check_size

    if isinstance(source, bytes):
        too_big = check_size(len(source), filename)
        if too_big:
            return CompileResult([], [too_big])
        raw = source
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            return CompileResult([], [Diagnostic("error", "E113", f"invalid UTF-8 (byte 0x{raw[exc.start]:02x})",
                                                  Span(filename, line, column, line, column + 1))])
    if source.startswith("\ufeff"):
        source = source[1:]  # a byte order mark is no part of the program
    tree, diagnostics = parse_partial(source, filename)
    specs, semantic = compile_ast(tree, as_step_types(step_types))
    diagnostics = sorted(diagnostics + semantic, key=lambda d: (d.span.line, d.span.column))
    # A workflow with errors has no spec; the others of the file still compile.
    return CompileResult(specs, diagnostics, source, tree)


def compile_file(path: str | Path, step_types: Mapping[str, Any] | None = None) -> CompileResult:
    """Read and compile a .flow file. Raises ``OSError`` when the file cannot be read."""
    data = Path(path).read_bytes()
    return compile_source(data, str(path), step_types)
