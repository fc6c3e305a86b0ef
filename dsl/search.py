"""The `search { KEY: expr, ... }` clause: the business keys each run is indexed by (E209 E325 E326).

Its values are computed once, when the run starts, from the params, the lets and `workflow`; no
step has run yet, and a secret would leave the worker and land in an index in clear, so both are
refused. Each value must be a string, a number or a boolean (or null: the run is not indexed under
that key), because the index compares text (`GET /api/runs?search.order=4711`).
"""

from __future__ import annotations

import re

from dsl import ast
from dsl.errors import Diagnostic, error
from dsl.lowering import lower
from dsl.names import Scope, check_expr
from dsl.spec import SearchKey
from dsl.typecheck import BOOL, NULL, NUMBER, STRING, expect

# Keys travel in query strings as `search.KEY=VALUE`: a dot or an `=` in a key could not be told
# apart. (engine/core/search.py repeats the pattern: dsl imports nothing of the engine.)
KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
SEARCH_VALUE_TYPES = STRING | NUMBER | BOOL | NULL


def compile_search(clauses: list[ast.Search], scope: Scope, diags: list[Diagnostic]) -> tuple[SearchKey, ...]:
    """Check the workflow's `search` clauses (at most one) and lower their keys."""
    if not clauses:
        return ()
    first = clauses[0]
    for extra in clauses[1:]:
        diags.append(error("E209", "`search` is declared twice", extra.loc,
                           f"note: first declared at {first.loc.line}:{first.loc.column}; put every key in one clause"))
    keys: list[SearchKey] = []
    seen: set[str] = set()
    scope = scope.but(allow_steps=False, secrets_ok=False, place="`search`")
    for entry in first.keys.entries:
        if not KEY_PATTERN.fullmatch(entry.key):
            diags.append(error("E326", f"bad search key `{entry.key}`", entry.loc,
                               "help: a search key is a name of letters, digits and `_` (at most 64), "
                               "as it is written in `?search.KEY=VALUE`"))
            continue
        if entry.key in seen:
            diags.append(error("E209", f"search key `{entry.key}` is declared twice", entry.loc))
            continue
        seen.add(entry.key)
        kinds = check_expr(entry.value, scope)
        expect(kinds, SEARCH_VALUE_TYPES, entry.value, f"search key `{entry.key}`", diags, "E325")
        keys.append(SearchKey(entry.key, lower(entry.value)))
    if not first.keys.entries:
        diags.append(error("E326", "`search` has no keys", first.loc, "help: e.g. `search { order: params.order_id }`"))
    return tuple(keys)
