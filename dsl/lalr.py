"""A tight LALR loop over lark's own tables, lexers and rule callbacks: the fast path of the parser.

Lark's parse of a 1,000-step workflow spends most of its time in generic per-token machinery
(a lexer generator, line counters, wrapper objects around each rule's callback). This loop does the
same work with lark's data: the parse table, the per-state scanners of the contextual lexer (with
their keyword callbacks) and the rule callbacks lark built for the AST builder; a `?rule` reduced
from one child is that child, without a call.

It handles well-formed input only. On any input it cannot take (a character no terminal matches, a
token the state does not expect) it raises ``NeedsLark``, and the caller parses the text again with
lark, which raises the exception that the parser translates into words. ``tests/unit/test_parser.py``
checks that both give the same AST and the same errors.

``fast_parser`` returns ``None`` when lark's internals are not what this module expects (another lark
version): the parser then always uses lark.
"""

from __future__ import annotations

from typing import Any, Callable

from lark import Lark, Token

Parse = Callable[[str, str], Any]  # (text, start rule) -> the value of the start rule


class NeedsLark(Exception):
    """The fast path cannot parse this text; lark must (and will report why)."""


def fast_parser(lark: Lark) -> Parse | None:
    """The fast ``parse(text, start)`` of a LALR ``lark`` with the contextual lexer, or ``None``."""
    try:
        from lark.parsers.lalr_analysis import Shift

        front = lark.parser
        table = front.parser.parser.parse_table
        callbacks = front.parser.parser.callbacks
        lexers = front.lexer.lexers
        if any(isinstance(key, str) for key in callbacks):
            return None  # terminal callbacks at shift time: not handled here
        scanners: dict[int, tuple[Any, ...]] = {}
        by_state: dict[Any, tuple[Any, ...]] = {}
        for state, lexer in lexers.items():
            if id(lexer) not in scanners:
                scanner = lexer.scanner  # built on first use, with `lexer.callback`
                # Names as plain `str`: lark's are tokens, whose Python-level `__eq__` every lookup would call.
                scanners[id(lexer)] = (tuple(scanner._mres), {str(k): v for k, v in lexer.callback.items()},
                                       frozenset(map(str, lexer.ignore_types)), frozenset(map(str, lexer.newline_types)))
            by_state[state] = scanners[id(lexer)]
        rules: dict[int, tuple[int, str, Any, bool]] = {}
        for row in table.states.values():
            for action, arg in row.values():
                if action is not Shift and id(arg) not in rules:
                    unit = bool(arg.options.expand1 and len(arg.expansion) == 1 and not arg.alias
                                and not arg.expansion[0].name.startswith("_"))
                    rules[id(arg)] = (len(arg.expansion), str(arg.origin.name), callbacks[arg], unit)
        starts, ends = dict(table.start_states), dict(table.end_states)
    except (AttributeError, KeyError, TypeError, ImportError):
        return None
    return _parser(table.states, by_state, rules, starts, ends, Shift)


def _parser(states: Any, lexers: dict[Any, tuple[Any, ...]], rules: dict[int, tuple[int, str, Any, bool]],
            starts: dict[str, Any], ends: dict[str, Any], shift: Any) -> Parse:
    def parse(text: str, start: str) -> Any:
        state_stack = [starts[start]]
        value_stack: list[Any] = []
        end_state = ends[start]
        pos, line, line_start, size = 0, 1, 0, len(text)
        last: Token | None = None
        while True:
            # Lex one token in the current state (lark's ContextualLexer + BasicLexer.next_token).
            tok = None
            while pos < size:
                mres, lexer_callbacks, ignore, newline_types = lexers[state_stack[-1]]
                for mre in mres:
                    match = mre.match(text, pos)
                    if match:
                        break
                else:
                    raise NeedsLark
                value, type_, end = match.group(0), match.lastgroup, match.end()
                end_line, end_line_start = line, line_start
                if type_ in newline_types:
                    newlines = value.count("\n")
                    if newlines:
                        end_line, end_line_start = line + newlines, pos + value.rindex("\n") + 1
                if type_ not in ignore:
                    tok = Token(type_, value, pos, line, pos - line_start + 1, end_line, end - end_line_start + 1, end)
                    callback = lexer_callbacks.get(type_)
                    if callback is not None:
                        tok = callback(tok)  # a keyword that the name pattern matched
                pos, line, line_start = end, end_line, end_line_start
                if tok is not None:
                    break
            at_end = tok is None
            if tok is None:
                tok = Token.new_borrow_pos("$END", "", last) if last is not None else Token("$END", "", 0, 1, 1)
            last = tok
            # Feed it (lark's ParserState.feed_token): reduce as long as the table says, then shift.
            ttype = tok.type
            while True:
                entry = states[state_stack[-1]].get(ttype)
                if entry is None:
                    raise NeedsLark
                action, arg = entry
                if action is shift:
                    if at_end:
                        raise NeedsLark
                    state_stack.append(arg)
                    value_stack.append(tok)
                    break
                length, origin, callback, unit = rules[id(arg)]
                if unit:  # `?rule: child`: the child's value stays where it is
                    del state_stack[-1]
                else:
                    children = value_stack[-length:] if length else []
                    if length:
                        del state_stack[-length:]
                        del value_stack[-length:]
                    value_stack.append(callback(children))
                state_stack.append(states[state_stack[-1]][origin][1])
                if at_end and state_stack[-1] == end_state:
                    return value_stack[-1]

    return parse
