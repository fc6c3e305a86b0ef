"""`flow lsp` spoken to over stdio, as an editor does: JSON-RPC in a subprocess (bench/lsp_client.py).

One server serves the module; each test opens its own document.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any, Iterator

import pytest

import dsl
from bench.lsp_client import LspClient

_URIS = (f"file:///work/doc{i}.flow" for i in itertools.count())

ORDER = '''workflow order(amount: int = 10, region: string) {
  let base = "https://shop.example"
  step fetch: http {
    doc "Read the order"
    url: "${base}/orders"
  }
  step lines: transform {
    input: steps.fetch.output.body.lines
    map: item.sku
  }
  step each: noop {
    for each sku in steps.lines.output
    output: { sku: sku, amount: params.amount }
  }
  step total: noop { output: len(steps.lines.output) }
}
'''


@pytest.fixture(scope="module")
def server() -> Iterator[LspClient]:
    client = LspClient([sys.executable, "-m", "flow.cli.main", "lsp"])
    try:
        client.initialize()
        yield client
    finally:
        client.kill()


def open_document(server: LspClient, text: str) -> tuple[str, list[dict[str, Any]]]:
    uri = next(_URIS)
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": text}})
    return uri, server.wait_for("textDocument/publishDiagnostics", uri=uri)["diagnostics"]


def at(server: LspClient, method: str, uri: str, line: int, character: int) -> Any:
    return server.request(method, {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})


def position_of(text: str, needle: str, nth: int = 0, shift: int = 0) -> tuple[int, int]:
    """0-based line and character (ASCII text) of the ``nth`` occurrence of ``needle``, plus ``shift``."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    offset += shift
    return text.count("\n", 0, offset), offset - (text.rfind("\n", 0, offset) + 1)


def test_initialize_announces_the_features() -> None:
    client = LspClient()
    try:
        capabilities = client.initialize()["capabilities"]
        assert capabilities["hoverProvider"] and capabilities["definitionProvider"]
        assert capabilities["documentSymbolProvider"]
        assert "." in capabilities["completionProvider"]["triggerCharacters"]
        assert capabilities["textDocumentSync"]["change"] == 2  # incremental
        assert capabilities["positionEncoding"] == "utf-16"
        assert client.shutdown() == 0
    finally:
        client.kill()


def test_diagnostics_on_open_are_those_of_flow_check(server: LspClient) -> None:
    text = "workflow w() {\n  step a: nope {}\n  step b: noop { after zz }\n  step c: noop { when false }\n}\n"
    _, published = open_document(server, text)
    expected = dsl.compile_source(text, "w.flow").diagnostics
    assert [(d["code"], d["severity"], d["range"]["start"]) for d in published] == [
        (d.code, 1 if d.is_error else 2, {"line": d.span.line - 1, "character": d.span.column - 1}) for d in expected]
    unknown = published[0]
    assert unknown["message"].startswith("unknown step type `nope`") and "did you mean `noop`" in unknown["message"]
    assert unknown["range"] == {"start": {"line": 1, "character": 10}, "end": {"line": 1, "character": 14}}
    assert unknown["source"] == "flow"


def test_a_change_publishes_new_diagnostics_for_its_version(server: LspClient) -> None:
    text = "workflow w() {\n  step a: nope {}\n}\n"
    uri, published = open_document(server, text)
    assert [d["code"] for d in published] == ["E301"]
    # An incremental change: `nope` -> `noop`, line 1, characters 10-14.
    server.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"range": {"start": {"line": 1, "character": 10}, "end": {"line": 1, "character": 14}},
                            "text": "noop"}],
    })
    after = server.wait_for("textDocument/publishDiagnostics", uri=uri)
    assert after == {"uri": uri, "version": 2, "diagnostics": []}
    # A whole-text change that breaks the syntax reports the syntax error.
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                             "contentChanges": [{"text": "workflow w( {\n}\n"}]})
    broken = server.wait_for("textDocument/publishDiagnostics", uri=uri)
    assert broken["version"] == 3 and broken["diagnostics"][0]["code"].startswith("E1")


def test_changes_typed_during_a_compile_end_in_the_diagnostics_of_the_last_text(server: LspClient) -> None:
    # Given a large document (a compile takes a while) and changes sent faster than it compiles
    steps = "".join(f"  step s{i}: noop {{ output: {i} }}\n" for i in range(300))
    text = "workflow w() {\n" + steps + "}\n"
    uri, _ = open_document(server, text)
    for version in range(2, 8):
        broken = "nope" if version % 2 else "noop"  # the last (7) is broken
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": {"line": 1, "character": 10}, "end": {"line": 1, "character": 14}},
                                "text": broken}]})
    # When a request comes right after them, then it answers for the last text
    hover = at(server, "textDocument/hover", uri, 1, 11)
    assert hover is None  # `nope` is no step type: nothing to tell
    # And the diagnostics of the last version arrive (some versions in between may be skipped)
    published = server.wait_for("textDocument/publishDiagnostics", uri=uri, version=7)
    assert [d["code"] for d in published["diagnostics"]] == ["E301"]


def test_positions_count_utf16_code_units(server: LspClient) -> None:
    # Each emoji is one code point for the compiler and two UTF-16 code units for the editor.
    text = 'workflow w() {\n  step a: http { body: "😀😀", url: "https://x.example", colour: 1 }\n}\n'
    _, published = open_document(server, text)
    (diag,) = published
    assert diag["code"] == "E302"
    start = text.splitlines()[1].index("colour")  # in code points
    assert diag["range"]["start"] == {"line": 1, "character": start + 2}
    assert diag["range"]["end"] == {"line": 1, "character": start + 2 + len("colour")}


def test_a_byte_order_mark_sent_by_the_editor_keeps_the_columns_of_line_1(server: LspClient) -> None:
    _, (diag,) = open_document(server, "\ufeffworkflow w() { step a: nope {} }\n")
    assert diag["range"]["start"] == {"line": 0, "character": 24}  # `nope`, the mark counted (without: 23)


def test_a_client_that_counts_utf8_gets_byte_positions() -> None:
    client = LspClient()
    try:
        assert client.initialize(encodings=["utf-8"])["capabilities"]["positionEncoding"] == "utf-8"
        text = 'workflow w() {\n  step a: http { body: "😀é", url: "https://x.example", colour: 1 }\n}\n'
        _, (diag,) = open_document(client, text)
        line = text.splitlines()[1]
        assert diag["range"]["start"] == {"line": 1, "character": len(line[:line.index("colour")].encode("utf-8"))}
        assert client.shutdown() == 0
    finally:
        client.kill()


def test_hover_on_a_step_reference_shows_its_type_output_and_doc(server: LspClient) -> None:
    uri, _ = open_document(server, ORDER)
    hover = at(server, "textDocument/hover", uri, *position_of(ORDER, "steps.fetch", shift=7))
    text = hover["contents"]["value"]
    assert "**step** `fetch`: `http`" in text and "`{status, headers, body}`" in text and "Read the order" in text
    assert hover["range"] == {"start": dict(zip(("line", "character"), position_of(ORDER, "steps.fetch", shift=6))),
                              "end": dict(zip(("line", "character"), position_of(ORDER, "steps.fetch", shift=11)))}
    fan_out = at(server, "textDocument/hover", uri, *position_of(ORDER, "step each", shift=6))["contents"]["value"]
    assert "one output per element of `sku`" in fan_out


@pytest.mark.parametrize("needle, shift, expected", [
    ("params.amount", 8, "**param** `amount: int` = 10"),
    ("region: string", 1, "**param** `region: string` (required)"),
    ("${base}", 3, '**let** `base` = `"https://shop.example"`'),
    ("sku: sku", 6, "**loop variable** `sku`: each element of `steps.lines.output`"),
    ("len(", 1, "**function** `len(string | list | object | null) -> int`"),
    ("transform", 2, "**step type** `transform`"),
])
def test_hover_on_other_names(server: LspClient, needle: str, shift: int, expected: str) -> None:
    uri, _ = open_document(server, ORDER)
    hover = at(server, "textDocument/hover", uri, *position_of(ORDER, needle, shift=shift))
    assert hover is not None and hover["contents"]["value"].startswith(expected), hover


def test_a_loop_variable_is_the_one_of_its_own_step(server: LspClient) -> None:
    text = ("workflow w() {\n  step a: noop { for each x in [1]\n output: x }\n"
            "  step b: noop { for each x in [2]\n output: x }\n}\n")
    uri, _ = open_document(server, text)
    location = at(server, "textDocument/definition", uri, *position_of(text, "output: x", nth=1, shift=8))
    assert location["range"]["start"] == dict(zip(("line", "character"), position_of(text, "each x", nth=1, shift=5)))
    hover = at(server, "textDocument/hover", uri, *position_of(text, "output: x", nth=1, shift=8))
    assert hover["contents"]["value"] == "**loop variable** `x`: each element of `[2]`"


def test_hover_off_any_name_is_empty(server: LspClient) -> None:
    uri, _ = open_document(server, ORDER)
    assert at(server, "textDocument/hover", uri, 0, 0) is None


@pytest.mark.parametrize("needle, shift, declared", [
    ("steps.fetch", 8, ("step fetch", 5, 10)),
    ("steps.lines.output\n", 8, ("step lines", 5, 10)),
    ("params.amount", 9, ("amount: int", 0, 6)),
    ("${base}", 4, ("let base", 4, 8)),
    ("sku: sku", 6, ("each sku", 5, 8)),
])
def test_definition(server: LspClient, needle: str, shift: int, declared: tuple[str, int, int]) -> None:
    uri, _ = open_document(server, ORDER)
    location = at(server, "textDocument/definition", uri, *position_of(ORDER, needle, shift=shift))
    where, start, end = declared
    line, character = position_of(ORDER, where)
    assert location == {"uri": uri, "range": {"start": {"line": line, "character": character + start},
                                              "end": {"line": line, "character": character + end}}}


@pytest.mark.parametrize("include_declaration", [True, False])
def test_references_of_a_step(server: LspClient, include_declaration: bool) -> None:
    uri, _ = open_document(server, ORDER)
    found = server.request("textDocument/references", {
        "textDocument": {"uri": uri}, "position": dict(zip(("line", "character"), position_of(ORDER, "steps.lines", shift=8))),
        "context": {"includeDeclaration": include_declaration}})
    starts = [(r["range"]["start"]["line"], r["range"]["start"]["character"]) for r in found]
    uses = [position_of(ORDER, "steps.lines", nth=n, shift=6) for n in range(2)]
    assert starts == ([position_of(ORDER, "step lines", shift=5)] if include_declaration else []) + uses


def test_references_of_a_file_level_let_span_the_workflows(server: LspClient) -> None:
    text = 'let host = "x"\nworkflow a() { step s: noop { output: host } }\nworkflow b() { step s: noop { output: host } }\n'
    uri, _ = open_document(server, text)
    found = server.request("textDocument/references", {
        "textDocument": {"uri": uri}, "position": {"line": 0, "character": 5}, "context": {"includeDeclaration": True}})
    assert [r["range"]["start"]["line"] for r in found] == [0, 1, 2]


def labels(result: dict[str, Any]) -> list[str]:
    return [item["label"] for item in result["items"]]


def test_completion_of_step_names_and_fields(server: LspClient) -> None:
    text = ORDER.replace("  step total:", "  step more: noop { output: steps. }\n  step total:")
    uri, _ = open_document(server, text)
    names = at(server, "textDocument/completion", uri, *position_of(text, "steps. }", shift=6))
    # The line being typed does not parse; the names come from the rest of the text.
    assert labels(names) == ["fetch", "lines", "each", "total"]
    assert names["items"][0]["detail"] == "step: http"
    text2 = text.replace("steps. }", "steps.fetch. }")
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": text2}]})
    server.wait_for("textDocument/publishDiagnostics", uri=uri)
    fields = at(server, "textDocument/completion", uri, *position_of(text2, "steps.fetch. }", shift=12))
    assert labels(fields) == ["attempts", "error", "output", "status"]


def complete(server: LspClient, text: str, needle: str, shift: int) -> dict[str, Any]:
    uri, _ = open_document(server, text)
    return at(server, "textDocument/completion", uri, *position_of(text, needle, shift=shift))


HEAD = "workflow w(n: int, tag: string) {\n  step a: http {\n    url: \"https://x.example\"\n    \n  }\n"


def test_completion_of_params_step_types_config_keys_and_functions(server: LspClient) -> None:
    assert labels(complete(server, HEAD + "  step c: noop { output: params. }\n}\n", "params. }", 7)) == ["n", "tag"]
    step_types = labels(complete(server, HEAD + "  step b: \n}\n", "step b: ", 8))
    assert {"http", "noop", "transform", "subflow"} <= set(step_types)
    keys = complete(server, HEAD + "}\n", "\n    \n", 5)
    assert {"url", "method", "headers", "body", "after", "when", "retry"} <= set(labels(keys))
    url = next(item for item in keys["items"] if item["label"] == "url")
    assert url["insertText"] == "url: " and "required" in url["detail"]
    expression = labels(complete(server, HEAD + "  step c: noop { output: len( }\n}\n", "len(", 4))
    assert {"len", "merge", "upper", "params", "steps", "secrets"} <= set(expression)
    assert labels(complete(server, HEAD + "  step c: noop { after a, }\n}\n", "after a, ", 9)) == ["a"]
    workflow_items = labels(complete(server, HEAD + "  \n}\n", "}\n  \n", 4))
    assert {"step", "let", "schedule", "on failure", "output"} <= set(workflow_items)


def test_no_completion_inside_text_but_inside_interpolation(server: LspClient) -> None:
    text = HEAD + '  step c: noop { output: "steps. ${steps.} #" }  # steps.\n}\n'
    uri, _ = open_document(server, text)
    for needle, shift in (('"steps.', 7), ("# steps.", 8)):
        assert labels(at(server, "textDocument/completion", uri, *position_of(text, needle, shift=shift))) == []
    assert labels(at(server, "textDocument/completion", uri, *position_of(text, "${steps.", shift=8))) == ["a"]


def test_completion_keeps_the_names_of_the_last_version_that_parsed(server: LspClient) -> None:
    text = HEAD + "}\n"
    uri, _ = open_document(server, text)
    broken = HEAD + "  step b: noop { output: steps. }\n  step c: \n}\n"  # two broken lines
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": broken}]})
    server.wait_for("textDocument/publishDiagnostics", uri=uri)
    assert labels(at(server, "textDocument/completion", uri, *position_of(broken, "steps. }", shift=6))) == ["a"]


def test_document_symbols_outline_workflows_and_their_steps(server: LspClient) -> None:
    text = ORDER + "\nworkflow nightly() {\n  schedule every 1h\n  step ping: noop {}\n  on failure {\n    step alert: noop {}\n  }\n}\n"
    uri, _ = open_document(server, text)
    symbols = server.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    assert [(s["name"], s["detail"]) for s in symbols] == [("order", "workflow"), ("nightly", "workflow")]
    order = [(c["name"], c["detail"]) for c in symbols[0]["children"]]
    assert order == [("amount", "int"), ("region", "string"), ("base", "let"), ("fetch", "http"),
                     ("lines", "transform"), ("each", "noop"), ("total", "noop")]
    nightly = symbols[1]["children"]
    assert [(c["name"], c["detail"]) for c in nightly] == [("schedule every", "1h"), ("ping", "noop"), ("on failure", "1 steps")]
    assert nightly[2]["children"][0]["name"] == "alert"
    def point(position: dict[str, int]) -> tuple[int, int]:
        return position["line"], position["character"]

    for symbol in [*symbols, *symbols[0]["children"], *nightly]:
        whole, name = symbol["range"], symbol["selectionRange"]
        assert point(whole["start"]) <= point(name["start"]) <= point(name["end"]) <= point(whole["end"]), symbol


def test_close_clears_the_diagnostics(server: LspClient) -> None:
    uri, published = open_document(server, "workflow w() {\n  step a: nope {}\n}\n")
    assert published
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert server.wait_for("textDocument/publishDiagnostics", uri=uri)["diagnostics"] == []


def test_shutdown_and_exit_end_the_server_at_once() -> None:
    # The client keeps its end of stdin open until the server has exited, as editors may.
    for _ in range(3):  # the race it guards against (a read pending when `exit` comes) is timing-dependent
        client = LspClient()
        try:
            client.initialize()
            open_document(client, "workflow w() {}\n")
            assert client.shutdown(timeout=10) == 0
        finally:
            client.kill()


def test_exit_without_shutdown_exits_1() -> None:
    client = LspClient()
    try:
        client.initialize()
        client.notify("exit", None)
        assert client.process.wait(10) == 1
    finally:
        client.kill()


def test_the_server_ends_when_the_editor_closes_the_pipe() -> None:
    client = LspClient()
    try:
        client.initialize()
        assert client.process.stdin is not None
        client.process.stdin.close()
        assert client.process.wait(10) == 1
    finally:
        client.kill()
