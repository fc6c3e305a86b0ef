"""editors/flow.tmLanguage.json: valid JSON, regular expressions that compile, and exactly the
keywords of the grammar (dsl/flow.lark), so that highlighting follows the language."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from dsl.build_base import CONTEXTUAL_KEYWORDS, KEYWORDS

ROOT = Path(__file__).resolve().parents[2]
TM = json.loads((ROOT / "editors" / "flow.tmLanguage.json").read_text(encoding="utf-8"))
_ALTERNATION = re.compile(r"^\\b\(\?:([a-z_|]+)\)\\b$")


def grammar_keywords() -> set[str]:
    """The quoted words of dsl/flow.lark (comments left out): every keyword the parser knows."""
    text = re.sub(r"//[^\n]*", "", (ROOT / "dsl" / "flow.lark").read_text(encoding="utf-8"))
    return set(re.findall(r'"([A-Za-z_]+)"', text))


def highlighted_words(*rules: str) -> set[str]:
    words: set[str] = set()
    for rule in rules:
        match = _ALTERNATION.match(TM["repository"][rule]["match"])
        assert match, f"rule {rule!r} is not a `\\b(?:a|b)\\b` word list"
        words.update(match.group(1).split("|"))
    return words


def regexes(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("match", "begin", "end") and isinstance(value, str):
                yield value
            else:
                yield from regexes(value)
    elif isinstance(node, list):
        for item in node:
            yield from regexes(item)


def test_the_grammar_is_a_textmate_grammar_for_flow_files() -> None:
    assert TM["scopeName"] == "source.flow" and TM["fileTypes"] == ["flow"]
    included = {p["include"].lstrip("#") for p in regexes_includes(TM)}
    assert included <= set(TM["repository"]), included - set(TM["repository"])


def regexes_includes(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if "include" in node:
            yield node
        for value in node.values():
            yield from regexes_includes(value)
    elif isinstance(node, list):
        for item in node:
            yield from regexes_includes(item)


def test_every_regular_expression_compiles() -> None:
    # TextMate uses Oniguruma; these patterns keep to the syntax it shares with Python's re.
    for pattern in regexes(TM):
        re.compile(pattern)


def test_the_keywords_are_exactly_the_grammars() -> None:
    highlighted = highlighted_words("keyword", "constant", "operator-word")
    assert highlighted == grammar_keywords(), (
        f"missing: {sorted(grammar_keywords() - highlighted)}, extra: {sorted(highlighted - grammar_keywords())}")
    # the parser's reserved words are the grammar's, but for those reserved only where an item starts
    assert grammar_keywords() == KEYWORDS | CONTEXTUAL_KEYWORDS


def test_highlighting_samples() -> None:
    keyword = re.compile(TM["repository"]["keyword"]["match"])
    header = re.compile(TM["repository"]["step-header"]["match"])
    duration = re.compile(TM["repository"]["duration"]["match"])
    key = re.compile(TM["repository"]["config-key"]["match"])
    assert header.search("  step charge: acme.pay {").group(2, 4) == ("charge", "acme.pay")
    assert [m.group() for m in keyword.finditer("for each x in y where z")] == ["for", "each", "where"]
    assert duration.fullmatch("1h30m") and not duration.fullmatch("12")
    assert key.match("timeout: 5s").group() == "timeout" and not key.match("a ?? b")


def test_the_vim_syntax_highlights_the_same_keywords() -> None:
    text = (ROOT / "editors" / "vim" / "syntax" / "flow.vim").read_text(encoding="utf-8")
    words = set()
    for group in ("flowKeyword", "flowConstant", "flowOperatorWord"):
        (line,) = [line for line in text.splitlines() if line.startswith(f"syntax keyword {group} ")]
        words.update(line.split()[3:])
    assert words == grammar_keywords()


def test_the_vscode_extension_declares_the_language_and_its_grammar() -> None:
    folder = ROOT / "editors" / "vscode"
    package = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    (language,) = package["contributes"]["languages"]
    assert language["id"] == "flow" and language["extensions"] == [".flow"]
    json.loads((folder / language["configuration"]).read_text(encoding="utf-8"))
    (grammar,) = package["contributes"]["grammars"]
    assert grammar["scopeName"] == TM["scopeName"]
    assert json.loads((folder / grammar["path"]).read_text(encoding="utf-8")) == TM  # the shared grammar
    assert package["contributes"]["configuration"]["properties"]["flow.server.command"]["default"] == ["flow", "lsp"]
