"""The compiler: semantic checks and lowering to WorkflowSpec."""

from __future__ import annotations

import json
from pathlib import Path

import os

import pytest

import dsl
from dsl.spec import Retry, WorkflowSpec

REFERENCE = Path("/work/shared/flow-language.md")


def reference_example() -> str:
    # Section 1 of the language reference, copied so the test does not depend on a file outside the repo.
    return EXAMPLE


def compile_ok(source: str) -> dsl.CompileResult:
    result = dsl.compile_source(source, "t.flow")
    assert result.ok, result.render()
    return result


def codes(source: str) -> list[str]:
    return [d.code for d in dsl.compile_source(source, "t.flow").diagnostics]


def test_reference_example_compiles_without_errors():
    result = compile_ok(EXAMPLE)
    assert {d.code for d in result.diagnostics} <= {"W503"}  # POSTs with retries and no Idempotency-Key
    spec = result.spec("order_saga")
    assert [s.name for s in spec.steps] == ["validate", "review", "charge", "reserve", "ship", "totals"]
    assert spec.step("charge").depends_on == ("review", "validate")
    assert spec.step("ship").depends_on == ("charge", "reserve")
    assert spec.step("reserve").for_each.var == "line"
    assert spec.step("reserve").retry == Retry(5, 1.0, 2.0, 30.0, True, ("timeout", "network", "http.5xx", "http.429"))
    assert spec.step("validate").timeout == 15.0 and spec.timeout == 1800.0
    assert spec.step("validate").compensate.none_reason == "read-only call"
    assert spec.step("charge").compensate.task_type == "http_request"
    assert [s.name for s in spec.on_failure] == ["alert"]
    assert spec.step("totals").task_type == "data_processing"
    assert [l.name for l in spec.lets] == ["payments", "transient"]
    assert spec.schedules[0].timezone == "Europe/Berlin" and spec.schedules[0].params["order_id"] == "canary"
    assert [(p.name, p.type, p.has_default) for p in spec.params][:2] == [("order_id", "string", False), ("items", "list<object>", False)]
    assert WorkflowSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_reference_file_example_is_the_same_as_ours():
    if not REFERENCE.exists():
        if os.environ.get("CI"):  # CI lays shared/ beside the clone: missing means a broken setup
            pytest.fail(f"{REFERENCE} is missing")
        pytest.skip("reference not available")
    assert REFERENCE.read_text().split("```")[1].strip() == EXAMPLE.strip()


def test_expressions_lower_to_spec_trees():
    spec = compile_ok('workflow w(n: int) { step a: noop { output: { x: params.n + 1, y: [1, 2], z: "a${params.n}" } } }').spec("w")
    out = spec.step("a").config["output"]
    assert out["op"] == "object"
    entries = dict(out["entries"])
    assert entries["x"] == {"op": "binary", "operator": "+", "left": {"op": "get", "obj": {"op": "name", "name": "params"}, "key": "n"},
                            "right": {"op": "lit", "value": 1}}
    assert entries["y"] == {"op": "lit", "value": [1, 2]}
    assert entries["z"] == {"op": "interp", "parts": ["a", {"op": "get", "obj": {"op": "name", "name": "params"}, "key": "n"}]}


def test_constant_folding_of_nested_literals_and_negative_numbers():
    spec = compile_ok("workflow w() { step a: noop { output: { a: [1, { b: -2 }], c: null } } }").spec("w")
    assert spec.step("a").config["output"] == {"op": "lit", "value": {"a": [1, {"b": -2}], "c": None}}


def test_data_operations_lower_to_lambdas():
    spec = compile_ok("""workflow w(xs: list<object>) {
      step t: transform { input: params.xs, map: item.x * 2 }
      step f: filter { input: steps.t.output, where: item > 1 }
      step s: sort { input: steps.f.output, by: item }
    }""").spec("w")
    assert spec.step("t").config["map"]["op"] == "lambda"
    assert spec.step("f").config["where"] == {"op": "lambda", "param": "item", "body": {
        "op": "binary", "operator": ">", "left": {"op": "name", "name": "item"}, "right": {"op": "lit", "value": 1}}}
    assert spec.step("s").config["by"]["op"] == "lambda"
    assert [s.name for s in spec.steps] == ["t", "f", "s"]


def test_topological_order_ties_in_source_order_and_on_failure_apart():
    spec = compile_ok("""workflow w() {
      step c: noop { after b }
      step a: noop {}
      step b: noop {}
      on failure { step z: noop { after y } step y: noop {} }
    }""").spec("w")
    assert [s.name for s in spec.steps] == ["a", "b", "c"]
    assert [s.name for s in spec.on_failure] == ["y", "z"]


def test_retry_forms_and_defaults():
    spec = compile_ok("""let quick = { attempts: 2, delay: 250ms }
    workflow w() {
      defaults { retry quick timeout 10s }
      step a: noop {}
      step b: noop { retry 1 }
      step c: noop { retry { attempts: 4, max_delay: 1m } timeout 1h30m }
    }""").spec("w")
    assert spec.step("a").retry == Retry(attempts=2, delay=0.25) and spec.step("a").timeout == 10.0
    assert spec.step("b").retry == Retry(attempts=1)
    assert spec.step("c").retry == Retry(attempts=4, max_delay=60.0) and spec.step("c").timeout == 5400.0


def test_language_default_retry_without_clause():
    assert compile_ok("workflow w() { step a: noop {} }").spec("w").step("a").retry == Retry()


def test_params_defaults_and_types():
    spec = compile_ok('workflow w(a: float = 1, b: string? = null, c: list<int> = [1, 2], d: any = { x: 1 }) {}').spec("w")
    assert [(p.type, p.default) for p in spec.params] == [("float", 1), ("string?", None), ("list<int>", [1, 2]), ("any", {"x": 1})]


@pytest.mark.parametrize("params, code", [
    ("a: int = 1.5", "E304"), ("a: string = null", "E304"), ("a: list<int> = [\"x\"]", "E304"),
    ("a: strng", "E314"), ("a: list", "E314"), ("a: int, a: int", "E209"),
])
def test_param_errors(params, code):
    assert code in codes(f"workflow w({params}) {{}}")


def test_plugin_types_without_a_plugin_accept_any_config_with_a_warning():
    result = dsl.compile_source('workflow w() { step e: acme.email { to: "x", anything: 1 } }', "t.flow", step_types={})
    assert result.ok and [d.code for d in result.diagnostics] == ["W505"]
    assert result.diagnostics[0].message == "no plugin installed for `acme.email`; its config is not checked"
    assert result.spec("w").step("e").task_type == "acme.email"


EMAIL = {
    "task_type": "email",
    "config_schema": {
        "type": "object",
        "properties": {"to": {"type": "string", "format": "email"}, "subject": {"type": "string", "maxLength": 20},
                       "priority": {"enum": ["low", "high"]}},
        "required": ["to"],
        "additionalProperties": False,
    },
}
PLUGINS = {"acme.email": EMAIL, "acme.sms": {"keys": ["number", "text"], "required": ["number"]}, "acme.open": {}}


def plugin_codes(body: str) -> list[tuple[str, str]]:
    result = dsl.compile_source(f"workflow w(to: string = \"a@b.c\") {{ {body} }}", "t.flow", step_types=PLUGINS)
    return [(d.code, d.message) for d in result.diagnostics]


def test_an_installed_plugin_step_type_gives_its_task_type_and_passes_a_good_config():
    result = dsl.compile_source('workflow w() { step e: acme.email { to: "ops@example.com", priority: "high" } }', "t.flow",
                                step_types=PLUGINS)
    assert result.diagnostics == []
    assert result.spec("w").step("e").task_type == "email"


@pytest.mark.parametrize("body, expected", [
    ('step e: acme.email { to: "a@b.c", subjet: "x" }',
     [("E302", "unknown config key `subjet` for `acme.email` steps")]),
    ('step e: acme.email { subject: "x" }',
     [("E303", "step `e` misses required config `to` for `acme.email`")]),
    ('step e: acme.email { to: "a@b.c", priority: "urgent" }',
     [("E320", "config `priority` does not match the schema of `acme.email`: 'urgent' is not one of ['low', 'high']")]),
    ('step e: acme.email { to: 42 }',
     [("E320", "config `to` does not match the schema of `acme.email`: 42 is not of type 'string'")]),
    ('step e: acme.email { to: "not an address" }',
     [("E320", "config `to` does not match the schema of `acme.email`: 'not an address' is not a 'email'")]),
    ('step e: acme.email { to: params.to, subject: "${params.to}" }', []),  # computed values are the run's to check
    ('step e: acme.sms { text: "hi" }', [("E303", "step `e` misses required config `number` for `acme.sms`")]),
    ('step e: acme.sms { number: "1", txt: "hi" }', [("E302", "unknown config key `txt` for `acme.sms` steps")]),
    ('step e: acme.open { anything: 1 }', []),
    ('step e: noop { compensate acme.sms { text: "x" } }',
     [("E303", "`compensate` misses required config `number` for `acme.sms`")]),
])
def test_plugin_config_is_checked(body, expected):
    assert plugin_codes(body) == expected


def test_unknown_plugin_type_suggests_an_installed_one():
    result = dsl.compile_source('workflow w() { step e: acme.emial { to: "x" } }', "t.flow", step_types=PLUGINS)
    assert [d.code for d in result.diagnostics] == ["W505"]
    assert result.diagnostics[0].notes[0] == "help: did you mean `acme.email`?"


def test_a_plugin_with_a_bad_schema_is_reported_not_applied():
    plugins = {"acme.bad": {"config_schema": {"type": "objekt"}}}
    result = dsl.compile_source('workflow w() { step e: acme.bad { x: 1 } }', "t.flow", step_types=plugins)
    assert [d.code for d in result.diagnostics] == ["W505"]
    assert "is not a valid JSON Schema" in result.diagnostics[0].message


def test_step_types_are_read_from_entry_points(tmp_path, monkeypatch):
    # Given an installed distribution declaring `acme.email` in the `flow.step_types` group
    dist = tmp_path / "acme_flow-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-flow\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[flow.step_types]\nacme.email = acme_flow_steps:EMAIL\nacme.broken = acme_flow_steps:MISSING\nnodot = acme_flow_steps:EMAIL\n")
    (tmp_path / "acme_flow_steps.py").write_text(f"EMAIL = {EMAIL!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # When the compiler reads the entry points
    from dsl.plugins import load_step_types

    found = load_step_types()
    # Then the dotted types are known, a broken one says why, and an undotted one is ignored
    assert set(found) == {"acme.email", "acme.broken"}
    assert found["acme.email"].task_type == "email" and found["acme.email"].required == frozenset({"to"})
    assert "failed to load (AttributeError)" in (found["acme.broken"].problem or "")


@pytest.mark.parametrize("body, code", [
    ("step a: noop { retry { attempts: 0 } }", "E312"),
    ("step a: noop { retry { tries: 3 } }", "E312"),
    ("step a: noop { retry nope }", "E315"),
    ("step a: noop { timeout \"x\" }", "E316"),
    ("step a: noop { when 1 + 2 }", "E305"),
    ("step a: noop { when [true] }", "E305"),
    ("step a: noop { when \"${true}\" }", "E305"),
    ("step a: noop { output: nope(1) }", "E210"),
    ("step a: noop { output: steps.a.output }", "E401"),
    ("step a: noop { output: steps.b.nope } step b: noop {}", "E211"),
    ("step a: noop { output: workflow.nope }", "E211"),
    ("step a: noop { output: params.nope }", "E204"),
    ("step a: noop { after a }", "E401"),
    ("step a: noop { when true when true }", "E313"),
    ("step a: noop { output: 1 output: 2 }", "E313"),
    ("step a: transform { input: [1] }", "E303"),
    ("step a: http { url: \"u\" when: true }", "E302"),
    ("schedule every \"x\"", "E316"),
    ("schedule at \"yesterday\"", "E318"),
    ("schedule cron \"* * * * *\" { params: { zz: 1 } }", "E307"),
    ("schedule cron \"* * * * *\" { tz: \"UTC\" }", "E317"),
    ("defaults { when true }", "E317"),
    ("step a: noop { compensate noop { when true } }", "E317"),
])
def test_semantic_errors(body, code):
    assert code in codes(f"workflow w() {{ {body} }}")


def test_cycle_through_step_references_is_reported_as_a_path():
    result = dsl.compile_source("""workflow w() {
      step a: noop { output: steps.c.output }
      step b: noop { after a }
      step c: noop { after b }
    }""", "t.flow")
    assert [d.message for d in result.errors] == ["dependency cycle: a -> c -> b -> a"]


def test_compensate_references_are_not_dependencies_and_self_is_allowed():
    spec = compile_ok("""workflow w() {
      step a: http { method: "POST", url: "u", compensate http { method: "DELETE", url: "${self.output.id}${steps.b.status}" } }
      step b: noop { after a }
    }""").spec("w")
    assert spec.step("a").depends_on == ()


def test_error_is_allowed_in_on_failure_steps():
    compile_ok('workflow w() { on failure { step x: noop { output: "${error.step}: ${error.message}" } } }')


def test_loop_variable_in_where_and_body_but_not_in_items():
    compile_ok("workflow w(xs: list<int>) { step a: noop { for each x in params.xs where x > 0 concurrency 2 output: x } }")
    assert "E207" in codes("workflow w() { step a: noop { for each x in x } }")


def test_warnings_do_not_block_compilation():
    result = dsl.compile_source("workflow w() {\n  step a: noop { when false }\n  step b: noop { after a }\n}\n", "t.flow")
    assert result.ok and [d.code for d in result.diagnostics] == ["W501"]
    assert result.spec("w")


def never_run(body: str, lets: str = "") -> list[str]:
    result = dsl.compile_source(f"{lets}\nworkflow w(n: int = 1) {{ {body} }}", "t.flow")
    assert result.ok, result.render()
    return [d.message for d in result.diagnostics if d.code == "W501"]


def test_a_skipped_dependency_does_not_stop_its_dependents():
    # Reference section 4: a step runs when each dependency is completed, skipped, or failed with allow_failure.
    assert never_run("step a: noop { when false } step b: noop { after a } step c: noop { output: steps.a.status }") == [
        "step `a` can never run (`when false`)"]


@pytest.mark.parametrize("body, lets, message", [
    ("step a: noop { when 1 > 2 }", "", "step `a` can never run (its `when` is always false)"),
    ("step a: noop { when not (true or false) }", "", "step `a` can never run (its `when` is always false)"),
    ("step a: noop { when debug }", "let debug = false", "step `a` can never run (its `when` is always false)"),
    ("step a: noop { when len(regions) == 0 }", "let regions = [\"eu\"]", "step `a` can never run (its `when` is always false)"),
    ("step a: noop { for each x in [] }", "", "step `a` can never run (`for each` over an empty list)"),
    ("step a: noop { for each x in nobody }", "let nobody = []", "step `a` can never run (`for each` over an empty list)"),
    ("step a: noop { for each x in [1, 2] where x > 2 }", "", "step `a` can never run (`where` is false for every element)"),
])
def test_provably_never_run_steps(body, lets, message):
    assert never_run(body, lets) == [message]


@pytest.mark.parametrize("body", [
    "step a: noop { when true }",
    "step a: noop { when 2 > 1 }",
    "step a: noop { when params.n > 1 }",
    "step a: noop { when params.n / 0 > 1 }",  # an evaluation error the compiler cannot fold is the run's to report (a constant one is E322)
    "step a: noop { for each x in [1] }",
    "step a: noop { for each x in [1, 2] where x > params.n }",
    "step a: noop { for each x in [1, 2] where x > 1 }",
    "step a: noop { for each x in [params.n] ?? [] }",
])
def test_steps_that_may_run_get_no_w501(body):
    assert never_run(body.replace("params.xs", "params.n")) == []


def test_nullable_output_guarded_by_coalesce_is_fine():
    result = compile_ok("workflow w() { step a: noop { allow_failure } step b: noop { output: steps.a.output.x ?? 0 } }")
    assert result.diagnostics == []


def test_idempotency_key_header_silences_w503():
    result = compile_ok('workflow w() { step a: http { method: "POST", url: "u", headers: { "Idempotency-Key": "k" }, compensate none "x" } }')
    assert result.diagnostics == []


def test_get_steps_need_no_compensation():
    assert compile_ok('workflow w() { step a: http { url: "u" } }').diagnostics == []


def test_workflow_with_errors_yields_no_spec_but_others_do():
    result = dsl.compile_source("workflow bad() { step a: htp {} }\nworkflow good() { step a: noop {} }", "t.flow")
    assert [s.name for s in result.specs] == ["good"]
    with pytest.raises(KeyError):
        result.spec("bad")


def test_too_many_steps():
    steps = " ".join(f"step s{i}: noop {{}}" for i in range(1001))
    assert codes(f"workflow w() {{ {steps} }}") == ["E112"]


def test_invalid_utf8_bytes_become_a_diagnostic():
    result = dsl.compile_source(b"let x = \"\xff\"", "t.flow")
    assert [d.code for d in result.diagnostics] == ["E113"]


def test_oversized_source_becomes_a_diagnostic():
    assert [d.code for d in dsl.compile_source("#" * (300 * 1024)).diagnostics] == ["E110"]


def test_raise_for_errors_uses_the_error_tree():
    with pytest.raises(dsl.FlowSyntaxError):
        dsl.compile_source("let x = ").raise_for_errors()
    with pytest.raises(dsl.FlowSemanticError):
        dsl.compile_source("workflow w() { step a: htp {} }").raise_for_errors()


EXAMPLE = '''
flow 1

let payments  = "https://payments.example/v1"
let transient = { attempts: 5, delay: 1s, backoff: 2.0, max_delay: 30s, jitter: true,
                  errors: ["timeout", "network", "http.5xx", "http.429"] }

workflow order_saga(
  order_id: string,
  items: list<object>,                 # [{sku, qty}]
  currency: string = "EUR",
  review_threshold: float = 1000.0,
) {
  doc "Validate, charge and reserve in parallel, ship, notify. Failures roll back."
  timeout 30m                                   # the whole run
  defaults { timeout 15s  retry transient }     # every step, unless it says otherwise

  schedule cron "0 3 * * *" {
    timezone: "Europe/Berlin",
    params: { order_id: "canary", items: [{ sku: "TEST-1", qty: 1 }] },
  }

  step validate: http {
    method: "POST"
    url: "https://orders.example/v1/orders/${params.order_id}/validate"
    body: { items: params.items, currency: params.currency }
    compensate none "read-only call"
  }

  step review: http {
    when steps.validate.output.body.total > params.review_threshold
    method: "POST"
    url: "https://risk.example/v1/reviews"
    body: { order_id: params.order_id }
    compensate none "advisory"
  }

  step charge: http {
    after review
    method: "POST"
    url: "${payments}/charges"
    body: { amount: steps.validate.output.body.total, currency: params.currency }
    compensate http {
      method: "POST"
      url: "${payments}/refunds"
      body: { charge_id: self.output.body.id }
    }
  }

  step reserve: http {
    after review
    for each line in params.items where line.qty > 0 concurrency 5
    method: "POST"
    url: "https://stock.example/v1/reservations"
    body: { sku: line.sku, qty: line.qty }
    compensate http { method: "DELETE", url: "https://stock.example/v1/reservations/${self.output.body.id}" }
  }

  step ship: http {
    method: "POST"
    url: "https://ship.example/v1/shipments"
    body: { charge: steps.charge.output.body.id, lines: len(steps.reserve.output) }
    compensate none "last critical step"
  }

  step totals: aggregate {
    input: params.items
    group_by: ["sku"]
    metrics: { qty: "sum(qty)" }
  }

  on failure {
    step alert: http { method: "POST", url: "https://chat.example/hooks/orders",
                       body: { text: "order ${params.order_id} failed in ${error.step}: ${error.message}" } }
  }

  output { charge_id: steps.charge.output.body.id, shipped: steps.ship.status == "completed" }
}
'''


@pytest.mark.parametrize("source, code", [
    # Found by the fuzz test with more examples: both used to raise instead of reporting.
    ('let x = { "${a}": 1 }', "E109"),
    ("workflow w(n: int = 1) { schedule cron params.n }", "E308"),
    ("workflow w(n: int = 1) { schedule at params.n }", "E318"),
])
def test_computed_keys_and_schedules_are_diagnostics_not_crashes(source, code):
    assert code in codes(source)
