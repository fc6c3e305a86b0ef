"""Golden tests: one per mistake class, with the exact rendered diagnostic (caret included)."""

from __future__ import annotations

import pytest

import dsl

GOLDEN = {
    'unknown_operator': (
        'let x = a && b\n',
        't.flow:1:11: error[E104]: unknown operator `&&`\nlet x = a && b\n          ^^\n  = help: use `and`',
    ),
    'or_operator': (
        'let x = a || b\n',
        't.flow:1:11: error[E104]: unknown operator `||`\nlet x = a || b\n          ^^\n  = help: use `or`',
    ),
    'bang': (
        'let x = !a\n',
        't.flow:1:9: error[E104]: unknown operator `!`\nlet x = !a\n        ^\n  = help: use `not`',
    ),
    'equals_for_colon': (
        'let x = { a = 1 }\n',
        't.flow:1:13: error[E101]: expected `:`, found `=`\nlet x = { a = 1 }\n            ^\n  = help: write `key: value`',
    ),
    'missing_colon': (
        'workflow w() {\n  step a: http { url "x" }\n}\n',
        't.flow:2:18: error[E101]: missing `:` after `url`\n  step a: http { url "x" }\n                 ^^^\n  = help: config entries are `key: value`; clauses are after, when, for each, retry, timeout, compensate, allow_failure, doc',
    ),
    'missing_brace': (
        'workflow w() {\n  step a: noop {\n}\n',
        't.flow:3:2: error[E101]: unexpected end of file: missing `}`\n}\n ^\n  = note: the `{` at 1:14 is never closed',
    ),
    'unterminated_string': (
        'let x = "abc\n',
        't.flow:1:9: error[E103]: unterminated string\nlet x = "abc\n        ^^^^\n  = help: close it with " on the same line',
    ),
    'bad_number': (
        'let x = 12abc\n',
        't.flow:1:9: error[E102]: bad number or duration `12abc`\nlet x = 12abc\n        ^^^^^\n  = help: numbers look like `3`, `2.5`, `1e3`; durations like `250ms`, `30s`, `1h30m` (units ms s m h d)',
    ),
    'bad_escape': (
        'let x = "a\\qb"\n',
        't.flow:1:11: error[E105]: unknown escape `\\q` in a string\nlet x = "a\\qb"\n          ^^\n  = help: known escapes are \\n \\t \\r \\" \\\\ \\$ \\u{XXXX}; use a raw string \'...\' for backslashes',
    ),
    'reserved_word': (
        'let when = 1\n',
        't.flow:1:5: error[E107]: `when` is a reserved word and cannot be used as a `let` name\nlet when = 1\n    ^^^^\n  = help: choose another name',
    ),
    'compensate_coordinator_type': (
        'workflow w() {\n  step a: noop { compensate sleep { duration: 1s } }\n}\n',
        't.flow:2:29: error[E324]: a `compensate` action cannot be of type `sleep`\n  step a: noop { compensate sleep { duration: 1s } }\n                            ^^^^^\n  = note: `sleep` steps are run by the coordinator itself, and compensations are tasks run by workers\n  = help: undo with a worker step type (`http`, `noop`, a data step or a plugin type)',
    ),
    'reserved_name_not_key': (
        'let x = { step: 1, when: 2 }.when + step\n',
        't.flow:1:37: error[E107]: `step` is a reserved word and cannot be used as a name\nlet x = { step: 1, when: 2 }.when + step\n                                    ^^^^\n  = help: choose another name',
    ),
    'reserved_step_name': (
        'workflow w() {\n  step a: noop { output: { step: 1 } }\n  step step: noop {}\n}\n',
        't.flow:3:8: error[E107]: `step` is a reserved word and cannot be used as a step name\n  step step: noop {}\n       ^^^^\n  = help: choose another name',
    ),
    'unexpected_token': (
        'workflow w() { step a: noop {} ) }\n',
        't.flow:1:32: error[E101]: unexpected `)`; expected one of `defaults`, `doc`, `let`, `on`, `output`, `schedule`, `search`, `step`, `timeout`, `}`\nworkflow w() { step a: noop {} ) }\n                               ^',
    ),
    'bidi': (
        'let x = 1 # \u202e\n',
        't.flow:1:13: error[E114]: bidirectional control character U+202E outside a string\nlet x = 1 # \u202e\n            ^\n  = note: it can make the code read differently from how it runs; remove it',
    ),
    'unknown_step': (
        'workflow w() {\n  step charge: noop {}\n  step ship: noop { after chrage }\n}\n',
        't.flow:3:27: error[E201]: unknown step `chrage`\n  step ship: noop { after chrage }\n                          ^^^^^^\n  = help: did you mean `charge`?',
    ),
    'unknown_step_ref': (
        'workflow w() {\n  step charge: noop {}\n  step ship: noop { output: steps.chrge.output }\n}\n',
        't.flow:3:35: error[E201]: unknown step `chrge`\n  step ship: noop { output: steps.chrge.output }\n                                  ^^^^^\n  = help: did you mean `charge`?',
    ),
    'duplicate_step': (
        'workflow w() {\n  step a: noop {}\n  step a: noop {}\n}\n',
        't.flow:3:8: error[E202]: duplicate step `a`\n  step a: noop {}\n       ^\n  = note: first defined at 2:8',
    ),
    'duplicate_workflow': (
        'workflow w() {}\nworkflow w() {}\n',
        't.flow:2:10: error[E203]: duplicate workflow `w`\nworkflow w() {}\n         ^\n  = note: first defined at 1:10',
    ),
    'undefined_name': (
        'workflow w() {\n  step a: noop { output: pramas.x }\n}\n',
        't.flow:2:26: error[E204]: undefined name `pramas`\n  step a: noop { output: pramas.x }\n                         ^^^^^^\n  = help: did you mean `params`?',
    ),
    'self_outside': (
        'workflow w() {\n  step a: noop { output: self.output }\n}\n',
        't.flow:2:26: error[E205]: `self` is only defined inside a `compensate` block\n  step a: noop { output: self.output }\n                         ^^^^',
    ),
    'error_outside': (
        'workflow w() {\n  step a: noop { output: error.message }\n}\n',
        't.flow:2:26: error[E206]: `error` is only defined in the steps of `on failure`\n  step a: noop { output: error.message }\n                         ^^^^^',
    ),
    'loop_var_outside': (
        'workflow w() {\n  step a: noop { for each x in [1] }\n  step b: noop { output: x }\n}\n',
        't.flow:3:26: error[E207]: loop variable `x` is only defined inside step `a`\n  step b: noop { output: x }\n                         ^',
    ),
    'item_outside': (
        'workflow w() {\n  step a: noop { output: item }\n}\n',
        't.flow:2:26: error[E208]: `item` is only defined in per-element expressions (`map`, `where` of filter, `by` of sort)\n  step a: noop { output: item }\n                         ^^^^',
    ),
    'unknown_type': (
        'workflow w() {\n  step a: htp { url: "u" }\n}\n',
        't.flow:2:11: error[E301]: unknown step type `htp`\n  step a: htp { url: "u" }\n          ^^^\n  = help: did you mean `http`?\n  = note: plugin step types are dotted, e.g. `acme.email`',
    ),
    'unknown_key': (
        'workflow w() {\n  step a: http { url: "u", methd: "GET" }\n}\n',
        't.flow:2:28: error[E302]: unknown config key `methd` for `http` steps\n  step a: http { url: "u", methd: "GET" }\n                           ^^^^^\n  = help: did you mean `method`?',
    ),
    'missing_config': (
        'workflow w() {\n  step a: http { method: "GET" }\n}\n',
        't.flow:2:11: error[E303]: step `a` misses required config `url` for `http`\n  step a: http { method: "GET" }\n          ^^^^',
    ),
    'default_type': (
        'workflow w(n: int = "three") {}\n',
        't.flow:1:21: error[E304]: default of `n` is not of type `int`: "three"\nworkflow w(n: int = "three") {}\n                    ^^^^^^^',
    ),
    'when_not_bool': (
        'workflow w() {\n  step a: noop { when "yes" }\n}\n',
        't.flow:2:23: error[E305]: `when` needs a boolean condition\n  step a: noop { when "yes" }\n                      ^^^^^\n  = help: compare it, e.g. `x > 0` or `x != null`',
    ),
    'schedule_missing_param': (
        'workflow w(id: string) {\n  schedule cron "0 3 * * *" { params: {} }\n}\n',
        't.flow:2:39: error[E306]: schedule does not give required parameter `id`\n  schedule cron "0 3 * * *" { params: {} }\n                                      ^^',
    ),
    'bad_cron': (
        'workflow w() {\n  schedule cron "0 25 * * *"\n}\n',
        't.flow:2:17: error[E308]: bad cron expression "0 25 * * *"\n  schedule cron "0 25 * * *"\n                ^^^^^^^^^^^^\n  = help: five fields "minute hour day-of-month month day-of-week", e.g. "0 3 * * *"',
    ),
    'bad_timezone': (
        'workflow w() {\n  schedule cron "0 3 * * *" { timezone: "Mars/Olympus" }\n}\n',
        't.flow:2:41: error[E309]: unknown time zone "Mars/Olympus"\n  schedule cron "0 3 * * *" { timezone: "Mars/Olympus" }\n                                        ^^^^^^^^^^^^^^\n  = help: an IANA name such as "Europe/Berlin"',
    ),
    'retry_max_delay': (
        'workflow w() {\n  step a: noop { retry { delay: 10s, max_delay: 5s } }\n}\n',
        't.flow:2:49: error[E310]: retry `max_delay` (5s) is less than `delay` (10s)\n  step a: noop { retry { delay: 10s, max_delay: 5s } }\n                                                ^^',
    ),
    'retry_error_class': (
        'workflow w() {\n  step a: noop { retry { errors: ["timout"] } }\n}\n',
        't.flow:2:35: error[E311]: unknown error class `timout`\n  step a: noop { retry { errors: ["timout"] } }\n                                  ^^^^^^^^\n  = help: did you mean `timeout`?\n  = note: known classes: timeout, network, http.4xx, http.429, http.5xx, invalid_input, handler, http.NNN',
    ),
    'cycle': (
        'workflow w() {\n  step a: noop { after b }\n  step b: noop { after a }\n}\n',
        't.flow:2:8: error[E401]: dependency cycle: a -> b -> a\n  step a: noop { after b }\n       ^\n  = note: dependencies are `after` plus every `steps.NAME` read outside `compensate`',
    ),
    'never_runs': (
        'workflow w() {\n  step a: noop { when false }\n}\n',
        't.flow:2:18: warning[W501]: step `a` can never run (`when false`)\n  step a: noop { when false }\n                 ^^^^^^^^^^',
    ),
    'never_runs_folded': (
        'workflow w() {\n  step a: noop { when 1 > 2 }\n  step b: noop { after a }\n}\n',
        't.flow:2:18: warning[W501]: step `a` can never run (its `when` is always false)\n  step a: noop { when 1 > 2 }\n                 ^^^^^^^^^^',
    ),
    'never_runs_empty_for_each': (
        'workflow w() {\n  step a: noop { for each x in [] }\n}\n',
        't.flow:2:18: warning[W501]: step `a` can never run (`for each` over an empty list)\n  step a: noop { for each x in [] }\n                 ^^^^^^^^^^^^^^^^',
    ),
    'no_plugin': (
        'workflow w() {\n  step a: acme.email { to: "x" }\n}\n',
        't.flow:2:11: warning[W505]: no plugin installed for `acme.email`; its config is not checked\n  step a: acme.email { to: "x" }\n          ^^^^^^^^^^\n  = note: plugins declare step types in the entry point group `flow.step_types`\n'
        '  = note: for a step type written in Python, check with `--import MODULE`, or with `--steps FILE` from `flow steps export`',
    ),
    'plugin_schema': (
        'workflow w() {\n  step a: acme.email { to: 42 }\n}\n',
        "t.flow:2:28: error[E320]: config `to` does not match the schema of `acme.email`: 42 is not of type 'string'\n  step a: acme.email { to: 42 }\n                           ^^",
    ),
    'side_effect': (
        'workflow w() {\n  step a: http { method: "DELETE", url: "u" }\n}\n',
        't.flow:2:8: warning[W502]: step `a` has side effects (DELETE) but no `compensate`\n  step a: http { method: "DELETE", url: "u" }\n       ^\n  = help: add `compensate TYPE { ... }` to undo it, or `compensate none "reason"`',
    ),
    'retried_post': (
        'workflow w() {\n  step a: http { method: "POST", url: "u", compensate none "ok" }\n}\n',
        't.flow:2:8: warning[W503]: step `a` retries a POST without an `Idempotency-Key` header\n  step a: http { method: "POST", url: "u", compensate none "ok" }\n       ^\n  = note: the engine\'s key changes with each attempt (it guards redeliveries); a key stable across retries, e.g. `\"charge-${params.order_id}\"`, guards against a retry repeating an effect whose response was lost',
    ),
    'nullable_output': (
        'workflow w() {\n  step a: noop { when true }\n  step b: noop { output: steps.a.output.x }\n}\n',
        't.flow:3:26: warning[W504]: output of `a` may be null (the step has `when` or `allow_failure`)\n  step b: noop { output: steps.a.output.x }\n                         ^^^^^^^^^^^^^^\n  = help: give a fallback: `steps.a.output.x ?? ...`',
    ),
}


PLUGINS = {"acme.email": {"config_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_rendered_diagnostic(name):
    source, expected = GOLDEN[name]
    step_types = PLUGINS if name == "plugin_schema" else {}
    assert dsl.compile_source(source, "t.flow", step_types=step_types).render() == expected


def test_all_errors_of_a_file_are_reported_in_one_pass():
    source = "workflow w(n: int = \"x\") {\n  step a: htp {}\n  step b: noop { after zz }\n  step c: noop { output: self }\n}\n"
    codes = [d.code for d in dsl.compile_source(source, "t.flow").diagnostics]
    assert codes == ["E304", "E301", "E201", "E205"]


def test_two_broken_steps_of_one_workflow_are_both_reported():
    source = ('workflow w() {\n  step a: noop { output: 1 + }\n  step ok: noop {}\n'
              '  on failure {\n    step b: http { url "x" }\n  }\n}\n')
    assert dsl.compile_source(source, "t.flow").render() == (
        't.flow:2:30: error[E101]: unexpected `}`; expected an expression\n'
        '  step a: noop { output: 1 + }\n'
        '                             ^\n'
        't.flow:5:20: error[E101]: missing `:` after `url`\n'
        '    step b: http { url "x" }\n'
        '                   ^^^\n'
        '  = help: config entries are `key: value`; clauses are after, when, for each, retry, timeout, compensate, '
        'allow_failure, doc'
    )


def test_a_broken_step_and_a_broken_workflow_clause_are_both_reported():
    source = 'workflow w() {\n  step a: noop { output: [1, }\n  output { x: ) }\n}\nworkflow v() { step s c {} }\n'
    assert dsl.compile_source(source, "t.flow").render() == (
        't.flow:2:30: error[E101]: unexpected `}`; expected one of an expression, `]`\n'
        '  step a: noop { output: [1, }\n'
        '                             ^\n'
        't.flow:3:15: error[E101]: unexpected `)`; expected an expression\n'
        '  output { x: ) }\n'
        '              ^\n'
        't.flow:5:23: error[E101]: unexpected name `c`; expected `:`\n'
        'workflow v() { step s c {} }\n'
        '                      ^'
    )


def test_a_step_missing_its_brace_is_reported_once():
    # Its body runs into the next step: there is no whole step to skip, so recovery stops there.
    source = "workflow w() {\n  step a: noop { output: 1\n  step b: noop { output: ) }\n}\n"
    assert [(d.code, d.span.line) for d in dsl.compile_source(source, "t.flow").diagnostics] == [("E101", 3)]


def test_json_shape_of_a_diagnostic():
    diag = dsl.compile_source("let x = a && b", "t.flow").diagnostics[0]
    assert diag.to_json() == {"severity": "error", "code": "E104", "message": "unknown operator `&&`", "file": "t.flow",
                              "line": 1, "column": 11, "end_line": 1, "end_column": 13}


def test_render_without_source_prints_the_header_and_notes_only():
    diag = dsl.compile_source("let x = a && b", "t.flow").diagnostics[0]
    assert dsl.render_diagnostic(diag) == "t.flow:1:11: error[E104]: unknown operator `&&`\n  = help: use `and`"


def test_tabs_keep_the_caret_aligned():
    source = "workflow w() {\n\tstep a: htp {}\n}\n"
    assert dsl.compile_source(source, "t.flow").render().splitlines()[2] == "\t        ^^^"
