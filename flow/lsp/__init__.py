"""`flow lsp`: a Language Server for .flow files, over stdio (docs/editors.md).

The answers are pure functions of a document's text and its compile result: positions.py converts
between the compiler's positions and the protocol's, symbols.py indexes declarations and the names
that read them, features.py gives diagnostics, hover, definition and references, completion.py and
outline.py the rest. server.py wires them to pygls.
"""
