"""The `search { ... }` clause: what the compiler accepts, its golden diagnostics, and the text a
value is indexed as (engine/core/search.py)."""

from __future__ import annotations

import pytest

import dsl
from dsl.spec import WorkflowSpec
from engine.core.search import parse_filters, parse_terms, search_text, search_texts

HEAD = "workflow w(order_id: int, o: object, name: string?) {\n"
STEP = "  step a: noop { output: 1 }\n}\n"

GOLDEN = {
    "object_value": (
        "  search { order: params.o }\n",
        "t.flow:2:19: error[E325]: search key `order` must be a bool, number or string, but `params.o` is an object\n"
        "  search { order: params.o }\n                  ^^^^^^^^",
    ),
    "step_output": (
        "  search { order: steps.a.output }\n",
        "t.flow:2:19: error[E212]: `steps` cannot be used here\n  search { order: steps.a.output }\n                  ^^^^^\n"
        "  = note: lets and schedules are evaluated before any step runs",
    ),
    "secret": (
        "  search { token: secrets.api }\n",
        "t.flow:2:19: error[E213]: `secrets` cannot be read in `search`\n  search { token: secrets.api }\n                  ^^^^^^^\n"
        "  = note: secrets are resolved on the worker, right before use: only config entries (of steps and `compensate`) and `let`s may read them",
    ),
    "bad_key": (
        '  search { "order-id": params.order_id }\n',
        't.flow:2:12: error[E326]: bad search key `order-id`\n  search { "order-id": params.order_id }\n           ^^^^^^^^^^\n'
        "  = help: a search key is a name of letters, digits and `_` (at most 64), as it is written in `?search.KEY=VALUE`",
    ),
    "empty": (
        "  search {}\n",
        "t.flow:2:3: error[E326]: `search` has no keys\n  search {}\n  ^^^^^^^^^\n  = help: e.g. `search { order: params.order_id }`",
    ),
    "twice": (
        "  search { order: params.order_id }\n  search { name: params.name }\n",
        "t.flow:3:3: error[E209]: `search` is declared twice\n  search { name: params.name }\n  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "  = note: first declared at 2:3; put every key in one clause",
    ),
    "unknown_param": (
        "  search { order: params.order }\n",
        "t.flow:2:26: error[E204]: unknown parameter `order`\n  search { order: params.order }\n                         ^^^^^\n"
        "  = help: did you mean `order_id`?",
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_rendered_diagnostic(name: str) -> None:
    clause, expected = GOLDEN[name]
    assert dsl.compile_source(HEAD + clause + STEP, "t.flow", step_types={}).render() == expected


def test_a_search_clause_compiles_to_keys_that_survive_the_spec_json() -> None:
    source = HEAD + '  let region = "eu"\n  search { order: params.order_id, name: params.name, region: region, o_id: params.o.id }\n' + STEP
    result = dsl.compile_source(source, "t.flow", step_types={})
    assert not result.diagnostics
    spec = result.specs[0]
    assert [k.name for k in spec.search] == ["order", "name", "region", "o_id"]
    assert WorkflowSpec.from_json(spec.to_json()) == spec


def test_search_stays_a_name_outside_workflow_items() -> None:
    # `search` is a keyword only where a workflow item starts: steps, params and fields keep the name.
    source = ("workflow w(search: string) {\n  step search: noop { output: { search: params.search } }\n"
              "  step b: noop { output: steps.search.output.search }\n}\n")
    result = dsl.compile_source(source, "t.flow", step_types={})
    assert not result.diagnostics
    assert "search" not in result.specs[0].to_json()  # no clause: the spec reads as before


@pytest.mark.parametrize("value, text", [
    ("A-17", "A-17"), (4711, "4711"), (2.5, "2.5"), (3.0, "3"), (True, "true"), (False, "false"), (None, None),
])
def test_each_value_is_indexed_as_the_text_a_user_types(value: object, text: str | None) -> None:
    assert search_text(value) == text


def test_a_value_the_index_cannot_hold_is_a_problem_not_a_truncation() -> None:
    texts, problems = search_texts({"ok": "a", "long": "x" * 256, "list": [1], "none": None})
    assert texts == {"ok": "a"}
    assert problems == ["search long: the value is 256 characters long; the index keeps at most 255",
                        "search list: a search value must be a string, number or boolean, not list"]


def test_the_search_box_reads_key_value_terms() -> None:
    assert parse_terms('order=4711  customer="ACME Corp"') == ({"order": "4711", "customer": "ACME Corp"}, [])
    assert parse_terms("4711") == ({}, ["`4711`: write KEY=VALUE, e.g. order=4711"])
    assert parse_filters({"a.b": "1"})[1] == ["search.a.b: a search key is a name of letters, digits and `_` (at most 64)"]
