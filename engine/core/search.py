"""Business keys of runs: the text a `search { ... }` value is indexed as, and query parsing (pure).

The index compares text, so each value is stored as the text a user types in a query: strings as
they are, integers and floats in their shortest decimal form (``4711``, ``2.5``), booleans as
``true``/``false``. A null value leaves the run out of that key's index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 255
KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# How many `search.KEY` filters one query may combine.
MAX_FILTERS = 8


def search_text(value: Any) -> str | None:
    """The indexed text of a search value; None for null. Raises ValueError for other JSON kinds."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else json.dumps(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"a search value must be a string, number or boolean, not {type(value).__name__}")


def search_texts(values: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The indexable texts of evaluated search values, and a problem per value that has none."""
    texts: dict[str, str] = {}
    problems: list[str] = []
    for key, value in values.items():
        try:
            text = search_text(value)
        except ValueError as exc:
            problems.append(f"search {key}: {exc}")
            continue
        if text is None:
            continue
        if len(text) > MAX_VALUE_LENGTH:
            problems.append(f"search {key}: the value is {len(text)} characters long; "
                            f"the index keeps at most {MAX_VALUE_LENGTH}")
            continue
        texts[key] = text
    return texts, problems


def parse_filters(pairs: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``{"order": "4711"}`` from ``KEY=VALUE`` pairs, and a problem per bad one (for a 400)."""
    filters: dict[str, str] = {}
    problems: list[str] = []
    for key, value in pairs.items():
        if not KEY_PATTERN.fullmatch(key):
            problems.append(f"search.{key}: a search key is a name of letters, digits and `_` (at most 64)")
        elif len(value) > MAX_VALUE_LENGTH:
            problems.append(f"search.{key}: the value is longer than {MAX_VALUE_LENGTH} characters")
        else:
            filters[key] = value
    if len(filters) > MAX_FILTERS:
        problems.append(f"search: at most {MAX_FILTERS} keys may be combined, got {len(filters)}")
    return filters, problems


def parse_terms(text: str) -> tuple[dict[str, str], list[str]]:
    """The dashboard's search box: ``order=4711 customer=acme`` (a value may be "quoted")."""
    pairs: dict[str, str] = {}
    problems: list[str] = []
    for match in re.finditer(r'\s*([^\s=]+)=("([^"]*)"|\S*)|\s*(\S+)', text):
        if match.group(4) is not None:
            problems.append(f"`{match.group(4)}`: write KEY=VALUE, e.g. order=4711")
            continue
        pairs[match.group(1)] = match.group(3) if match.group(3) is not None else match.group(2)
    filters, more = parse_filters(pairs)
    return filters, problems + more
