"""The pygls server of `flow lsp`: keeps each open document's compile result and answers from it.

Diagnostics are published on open, on every change and on save, from the same compiler as
`flow check` (the same codes, messages and notes). A document is compiled once per change; hover,
definition, completion and the outline read that result.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from typing import Iterator, Mapping

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from dsl.plugins import PluginStepType, as_step_types
from flow.lsp import features
from flow.lsp.completion import completion
from flow.lsp.features import Document
from flow.lsp.outline import outline

log = logging.getLogger("flow.lsp")
_ENCODINGS = {types.PositionEncodingKind.Utf8: "utf-8", types.PositionEncodingKind.Utf16: "utf-16",
              types.PositionEncodingKind.Utf32: "utf-32"}


class FlowLanguageServer(LanguageServer):
    """A language server for .flow; ``step_types`` are the plugin types the compiler checks against."""

    def __init__(self, step_types: Mapping[str, object] | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            own_version = version("flow-engine")
        except PackageNotFoundError:  # run from a source tree that was never installed
            own_version = "0"
        super().__init__("flow-lsp", own_version)
        self.step_types: Mapping[str, PluginStepType] = as_step_types(step_types)
        self.documents: dict[str, Document] = {}

    def encoding(self) -> str:
        return _ENCODINGS.get(self.workspace.position_encoding or types.PositionEncodingKind.Utf16, "utf-16")

    def refresh(self, uri: str) -> None:
        """Compile the document's current text and publish its diagnostics."""
        document = self.workspace.get_text_document(uri)
        with _collector_paused():
            doc = features.analyse(uri, document.source, self.step_types, self.encoding(), self.documents.get(uri))
        self.documents[uri] = doc
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=features.diagnostics(doc), version=document.version))

    def document(self, uri: str) -> Document | None:
        return self.documents.get(uri)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Compile without the cyclic garbage collector.

    A compile allocates hundreds of thousands of short-lived objects, and the collector's passes
    over them and the rest of the heap took about 40% of the time of a 1,000-step file (310 -> 180
    ms, bench/lsp_latency.py). A compile leaves no cyclic garbage (its results and temporaries are
    freed by reference counting), so nothing is left for a later pass to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def make_server(step_types: Mapping[str, object] | None = None) -> FlowLanguageServer:
    server = FlowLanguageServer(step_types)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: FlowLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: FlowLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: FlowLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: FlowLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        # A closed file's problems leave the editor's problem list with it.
        ls.documents.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: FlowLanguageServer, params: types.HoverParams) -> types.Hover | None:
        doc = ls.document(params.text_document.uri)
        return None if doc is None else features.hover(doc, params.position, ls.step_types)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: FlowLanguageServer, params: types.DefinitionParams) -> types.Location | None:
        doc = ls.document(params.text_document.uri)
        return None if doc is None else features.definition(doc, params.position)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", " "]))
    def complete(ls: FlowLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        doc = ls.document(params.text_document.uri)
        return types.CompletionList(False, []) if doc is None else completion(doc, params.position, ls.step_types)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def symbols(ls: FlowLanguageServer, params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
        doc = ls.document(params.text_document.uri)
        return [] if doc is None else outline(doc)

    # What is loaded by now (pygls, the grammar, the compiler) lives as long as the process: the
    # collector need not walk it again on every pass.
    gc.freeze()
    return server
