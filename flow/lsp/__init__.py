"""`flow lsp`: a Language Server for .flow files, over stdio.

The features are pure functions of a document's text and its compile result
(flow/lsp/positions.py, symbols.py, features.py); flow/lsp/server.py wires them to pygls.
"""
