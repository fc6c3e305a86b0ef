"""The AST (dsl/ast.py), built by lark's LALR parser as it reduces, collecting lexical diagnostics.

``AstBuilder`` is given to lark as an inline transformer (``Lark(transformer=...)``): each rule's
method receives the rule's children as they are reduced, so no parse tree is ever built and no
second pass walks one. The parser keeps every token (``keep_all_tokens``), and a node's span runs
from the start of its first token or child to the end of its last one: the positions lark's
``propagate_positions`` would give, without its per-node bookkeeping.

Numbers, durations, escapes, reserved words and `${...}` interpolation are checked here; each
problem becomes a diagnostic and a harmless placeholder node so that the rest of the file is
still checked.
"""

from __future__ import annotations

from dsl.build_base import KEYWORD_ROOTS, KEYWORDS, MAX_EXPR_DEPTH, ExprParser, parse_duration, token_span
from dsl.build_declarations import DeclarationRules
from dsl.build_expressions import ExpressionRules
from dsl.build_literals import LiteralRules

__all__ = ["AstBuilder", "ExprParser", "KEYWORDS", "KEYWORD_ROOTS", "MAX_EXPR_DEPTH", "parse_duration", "token_span"]


class AstBuilder(DeclarationRules, ExpressionRules, LiteralRules):
    """Lark's inline transformer for the grammar: one method per rule (or alias), children in, AST out.

    One instance serves every parse of the module's parser; the state of the current parse lives
    in a thread-local ``_Parse`` opened by ``session``, so threads may parse at the same time. The
    rules are grouped by concept: dsl/build_declarations.py, dsl/build_expressions.py and
    dsl/build_literals.py, over the shared state of dsl/build_base.py.
    """
