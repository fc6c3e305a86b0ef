"""`.flowtest` text -> ``FlowTestFile``, with every syntax problem as a diagnostic (code T1xx).

The file's structure is read by ``scanner``; every expression in it (params, mock outputs,
expectations) is parsed by the `.flow` language's own expression parser, so a test reads values
exactly as a workflow does and its errors point at the test file's line and column.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache

from dsl.errors import Diagnostic, FlowSyntaxError, error
from dsl.flowtest.model import Expectation, FlowTest, FlowTestFile, Mock, Outcome
from dsl.flowtest.scanner import Piece, ScanError, Scanner, split_top_level
from dsl.lowering import lower
from dsl.parser import parse_expression

# Words that are roots of a test's expressions but reserved in workflows (`output`).
_TEST_ROOTS = frozenset({"output"})
_TIMES = re.compile(r"\s+x([0-9]+)\s*$")
_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGET = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9]+)\])?(\.compensate)?")
_STATEMENTS = ("workflow", "params", "secrets", "at", "fire", "mock", "expect")
_FIRE = re.compile(r"schedule(?:\s+([0-9]+))?")


def parse(text: str, filename: str) -> tuple[FlowTestFile, list[Diagnostic]]:
    """The tests of a `.flowtest` file and every syntax diagnostic found (a broken statement is
    reported and skipped; the rest of its test is still read)."""
    scanner = Scanner(text, filename)
    diagnostics: list[Diagnostic] = []
    uses: list[tuple[str, object]] = []
    tests: list[FlowTest] = []
    while True:
        scanner.skip_blank()
        if scanner.at_end():
            break
        word = scanner.word()
        try:
            if word is None:
                raise scanner.fail("T104", f"unexpected `{scanner.peek()}`; expected `use` or `test`")
            if word.text == "flow":  # the language version line, as in .flow files
                scanner.rest_of_statement()
            elif word.text == "use":
                scanner.skip_blank()
                path = scanner.string()
                uses.append((path.text, path.span()))
            elif word.text == "test":
                tests.append(_test(scanner, word, diagnostics))
            else:
                raise ScanError(error("T104", f"unexpected `{word.text}`; expected `use` or `test`", word.span()))
        except ScanError as exc:
            diagnostics.append(exc.diagnostic)
            _skip_line(scanner)
    _check_unique_names(tests, diagnostics)
    return FlowTestFile(filename, tuple(uses), tuple(tests)), diagnostics  # type: ignore[arg-type]


def _skip_line(scanner: Scanner) -> None:
    while not scanner.at_end() and scanner.peek() != "\n":
        scanner.advance()


def _check_unique_names(tests: list[FlowTest], diagnostics: list[Diagnostic]) -> None:
    seen: dict[str, FlowTest] = {}
    for test in tests:
        if test.name in seen:
            first = seen[test.name].span
            diagnostics.append(error("T105", f"a second test named {test.name!r}", test.span,
                                     f"note: the first is at line {first.line}"))
        seen.setdefault(test.name, test)


def _test(scanner: Scanner, keyword: Piece, diagnostics: list[Diagnostic]) -> FlowTest:
    scanner.skip_blank()
    name = scanner.string()
    scanner.skip_blank()
    if scanner.peek() != "{":
        raise scanner.fail("T104", "expected `{` after the test's name")
    scanner.advance()
    fields: dict[str, object] = {}
    mocks: list[Mock] = []
    expectations: list[Expectation] = []
    while True:
        scanner.skip_blank()
        if scanner.at_end():
            raise ScanError(error("T103", f"test {name.text!r} is never closed with `}}`", keyword.span()))
        if scanner.peek() == "}":
            scanner.advance()
            break
        word = scanner.word()
        try:
            if word is None or word.text not in _STATEMENTS:
                found = word.text if word else scanner.peek()
                raise ScanError(error(
                    "T106", f"unexpected `{found}` in a test; expected one of "
                    + ", ".join(f"`{s}`" for s in _STATEMENTS),
                    word.span() if word else scanner.here()))
            rest = scanner.rest_of_statement()
            _statement(word, rest, fields, mocks, expectations)
        except ScanError as exc:
            diagnostics.append(exc.diagnostic)
            _skip_line(scanner)
        except FlowSyntaxError as exc:
            diagnostics.extend(exc.diagnostics)
    return FlowTest(name=name.text, span=name.span(), mocks=tuple(mocks), expectations=tuple(expectations),
                    **fields)  # type: ignore[arg-type]


def _statement(word: Piece, rest: Piece, fields: dict[str, object], mocks: list[Mock],
               expectations: list[Expectation]) -> None:
    body = rest.strip()
    if not body.text:
        raise ScanError(error("T107", f"`{word.text}` needs a value", word.span()))
    if word.text in fields or (word.text == "params" and "params" in fields):
        raise ScanError(error("T105", f"a second `{word.text}` in this test", word.span()))
    if word.text == "workflow":
        if not _NAME.fullmatch(body.text):
            raise ScanError(error("T107", "`workflow` takes the name of a workflow", body.span()))
        fields["workflow"], fields["workflow_span"] = body.text, body.span()
    elif word.text in ("params", "secrets"):
        fields[word.text] = _expression(body)
        if word.text == "params":
            fields["params_span"] = body.span()
    elif word.text == "at":
        fields["start_at"] = _instant(body)
    elif word.text == "fire":
        fired = _FIRE.fullmatch(body.text)
        if fired is None or int(fired.group(1) or 1) < 1:
            raise ScanError(error("T113", "`fire` reads `fire schedule` or `fire schedule N` (the N-th schedule, from 1)",
                                  body.span()))
        fields["fire"], fields["fire_span"] = int(fired.group(1) or 1), body.span()
    elif word.text == "mock":
        mocks.append(_mock(word, body))
    else:
        expectations.append(_expectation(body))


def _expression(piece: Piece) -> dict[str, object]:
    """The lowered tree of an expression; raises ``FlowSyntaxError`` with positions in the file."""
    cached = _lowered(piece.text)
    if cached is not None:
        return cached
    tree, diagnostics = parse_expression(piece.text, piece.file, piece.line, piece.column)
    raise FlowSyntaxError(_errors(diagnostics) or diagnostics)


# Tests repeat themselves (the same mock in many tests): a text parses to the same tree wherever it
# stands, so good expressions are parsed once. The trees are shared; nothing mutates them.
@lru_cache(maxsize=4096)
def _lowered(text: str) -> dict[str, object] | None:
    try:
        tree, diagnostics = parse_expression(text, "<expression>")
    except FlowSyntaxError:
        return None  # parsed again where it stands, for the diagnostics' positions
    return None if _errors(diagnostics) else lower(tree)


def forget_parsed_expressions() -> None:
    """Empty the cache of parsed expressions (the benchmark times a cold parse each round)."""
    _lowered.cache_clear()


def _errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.is_error and not (d.code == "E107" and _mentions_root(d))]


def _mentions_root(diagnostic: Diagnostic) -> bool:
    return any(f"`{root}`" in diagnostic.message for root in _TEST_ROOTS)


def _instant(piece: Piece) -> str:
    match = _STRING.fullmatch(piece.text)
    try:
        if match is None:
            raise ValueError
        moment = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    except ValueError:
        raise ScanError(error("T108", "`at` takes an ISO 8601 time in quotes", piece.span(),
                              'help: for example at "2026-03-01T03:00:00Z"')) from None
    if moment.tzinfo is None:
        raise ScanError(error("T108", "the time of `at` needs a UTC offset or `Z`", piece.span()))
    return moment.isoformat()


def _mock(word: Piece, body: Piece) -> Mock:
    colon = body.text.find(":")
    if colon < 0:
        raise ScanError(error("T109", "a mock reads `mock STEP: OUTCOME, then OUTCOME ...`", body.span()))
    target = body.at(0, colon).strip()
    named = _TARGET.fullmatch(target.text)
    if named is None:
        raise ScanError(error("T109", "a mock names a step (`charge`), one item of a fan-out (`reserve[0]`), "
                                      "or a compensation (`charge.compensate`)", target.span()))
    step, item, compensate = named.group(1), named.group(2), named.group(3)
    outcomes = tuple(_outcome(p.strip()) for p in split_top_level(body.at(colon + 1)))
    return Mock(step, "compensate" if compensate else "step", outcomes, body.span(), target.at(0, len(step)).span(),
                int(item) if item is not None else None)


def _outcome(piece: Piece) -> Outcome:
    if piece.text.startswith("then") and not _NAME.match(piece.text[4:5] or " "):
        piece = piece.at(4).strip()
    if not piece.text:
        raise ScanError(error("T110", "an empty outcome", piece.span()))
    times = 1
    counted = _TIMES.search(piece.text)
    if counted:
        times = int(counted.group(1))
        if times < 1:
            raise ScanError(error("T110", "`x0` covers no attempt; write x1 or more", piece.span()))
        piece = piece.at(0, counted.start())
    kind_match = _NAME.match(piece.text)
    kind = kind_match.group(0) if kind_match else ""
    after = piece.at(len(kind)).strip()
    span = piece.span()
    if kind == "fail":
        strings = [m.group(1) for m in _STRING.finditer(after.text)]
        if not strings or len(strings) > 2 or _STRING.sub("", after.text).strip():
            raise ScanError(error("T110", 'a failure reads `fail "CLASS"` or `fail "CLASS" "message"`', span,
                                  'help: classes are those of the language: "http.503", "timeout", "network" ...'))
        return Outcome("fail", span, error_class=strings[0], message=strings[1] if len(strings) > 1 else None,
                       times=times)
    if kind in ("approve", "reject", "timeout"):
        comment = _STRING.fullmatch(after.text)
        if after.text and (comment is None or kind == "timeout"):
            raise ScanError(error("T110", f"`{kind}` takes {'nothing' if kind == 'timeout' else 'an optional comment string'}",
                                  after.span()))
        return Outcome(kind, span, comment=comment.group(1) if comment else None, times=times)  # type: ignore[arg-type]
    expression = after if kind == "output" else piece
    if not expression.text:
        raise ScanError(error("T110", "`output` needs a value", span))
    return Outcome("output", span, output=_expression(expression), times=times)


def _expectation(body: Piece) -> Expectation:
    head = _NAME.match(body.text)
    word = head.group(0) if head else ""
    after = body.at(len(word)).strip()
    if word == "status" and _NAME.fullmatch(after.text):
        return Expectation("status", body.span(), body.text, status=after.text)
    if word in ("compensated", "skipped") and after.text.startswith("["):
        if not after.text.endswith("]"):
            raise ScanError(error("T111", f"`expect {word}` takes a list of steps: [a, b]", after.span()))
        inner = after.at(1, len(after.text) - 2)
        names = [p.strip() for p in split_top_level(inner) if p.text.strip()]
        for name in names:
            if not _NAME.fullmatch(name.text):
                raise ScanError(error("T111", f"`{name.text}` is not a step name", name.span()))
        return Expectation(word, body.span(), body.text, steps=tuple((n.text, n.span()) for n in names))  # type: ignore[arg-type]
    return Expectation("expr", body.span(), body.text, expr=_expression(body))
