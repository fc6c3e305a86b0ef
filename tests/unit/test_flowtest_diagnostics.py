"""Golden tests of the `.flowtest` diagnostics: each mistake, its code, position and rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from flow.testing.runner import load

WORKFLOW = """flow 1
workflow shop(order: string) {
  step charge: http {
    method: "POST"  url: "https://pay.example/charges"
    headers: { "Idempotency-Key": "c-${params.order}" }
    compensate http { method: "POST", url: "https://pay.example/refunds", body: { id: self.output.body.id } }
  }
  step ok: approval { prompt: "ship?" }
  step ship: http {
    method: "POST"  url: "https://ship.example"
    headers: { "Idempotency-Key": "s-${params.order}" }
    body: { charge: steps.charge.output.body.id }
    compensate none "last"
  }
}
"""


def _render(tmp_path: Path, body: str) -> str:
    (tmp_path / "shop.flow").write_text(WORKFLOW)
    (tmp_path / "shop.flowtest").write_text(body)
    loaded = load(str(tmp_path / "shop.flowtest"))
    lines = [loaded.render()] if loaded.diagnostics else []
    for name in dict.fromkeys(t.name for t in loaded.tests.tests):
        lines += loaded.render_test(name)
    return "\n".join(lines).replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize(("body", "expected"), [
    (
        'test "a" {\n  mock chrage: output { status: 200 }\n}\n',
        "shop.flowtest:2:8: error[T202]: the workflow has no step `chrage`\n"
        "  mock chrage: output { status: 200 }\n"
        "       ^^^^^^\n"
        "  = help: did you mean `charge`?",
    ),
    (
        'test "a" {\n  mock charge: output { status: 200, body: { ref: "x" } }\n}\n',
        "shop.flowtest:2:16: error[T302]: this output of `charge` has no `id` in `output.body`, but the "
        "compensation of `charge` reads `output.body.id`\n"
        '  mock charge: output { status: 200, body: { ref: "x" } }\n'
        "               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    ),
    (
        'test "a" {\n  mock charge: output { status: 200, body: "ok" }\n}\n',
        "shop.flowtest:2:16: error[T302]: this output of `charge` has a string at `output.body`, but the "
        "compensation of `charge` reads `output.body.id`\n"
        '  mock charge: output { status: 200, body: "ok" }\n'
        "               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    ),
    (
        'test "a" {\n  mock ok: output { approved: true }\n}\n',
        "shop.flowtest:2:8: error[T203]: step `ok` is an approval: mock it with `approve`, `reject` or `timeout`\n"
        "  mock ok: output { approved: true }\n"
        "       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    ),
    (
        'test "a" {\n  expect steps.ship.attempt == 1\n}\n',
        "shop.flowtest:2:10: error[T301]: a step has no field `attempt`\n"
        "  expect steps.ship.attempt == 1\n"
        "         ^^^^^^^^^^^^^^^^^^^^^^^\n"
        "  = help: did you mean `attempts`?\n"
        "  = note: a step has status, output, error, attempts, compensation, items",
    ),
    (
        'test "a" {\n  expect status complete\n}\n',
        "shop.flowtest:2:10: error[T301]: `complete` is not a run status\n"
        "  expect status complete\n"
        "         ^^^^^^^^^^^^^^^\n"
        "  = help: did you mean `completed`?\n"
        "  = note: a run is pending, running, completed, failed, cancelled, compensating, compensated, "
        "compensation_failed",
    ),
    (
        'test "a" {\n  mock charge: fail "http_503" x2, then { status: 200, body: { id: "c" } }\n}\n',
        "shop.flowtest:2:16: error[T206]: `http_503` is not an error class a worker reports\n"
        '  mock charge: fail "http_503" x2, then { status: 200, body: { id: "c" } }\n'
        "               ^^^^^^^^^^^^^^^\n"
        "  = help: did you mean `http.503`?\n"
        "  = note: timeout, network, http.4xx, http.429, http.5xx, invalid_input, handler, non_retryable, http.NNN",
    ),
    (
        'test "a" {\n  workflow shop\n  fire schedule\n}\n',
        "shop.flowtest:3:8: error[T205]: workflow `shop` has no schedule to fire\n"
        "  fire schedule\n"
        "       ^^^^^^^^",
    ),
    (
        'test "a" {\n  mock charge: fail http.503\n}\n',
        "shop.flowtest:2:16: error[T110]: a failure reads `fail \"CLASS\"` or `fail \"CLASS\" \"message\"`\n"
        "  mock charge: fail http.503\n"
        "               ^^^^^^^^^^^^^\n"
        '  = help: classes are those of the language: "http.503", "timeout", "network" ...',
    ),
    (
        'test "a" {\n  params { order: ["x" }\n}\n',
        "shop.flowtest:2:24: error[T103]: `}` does not close the `[` at line 2\n"
        '  params { order: ["x" }\n'
        "                       ^",
    ),
    (
        'test "a" {\n  params { order: "x"\n}\n',  # the `}` closes the params: the test stays open
        "shop.flowtest:1:1: error[T103]: test 'a' is never closed with `}`\n"
        'test "a" {\n'
        "^^^^",
    ),
    (
        'test "a" {\n  expects status completed\n}\n',
        "shop.flowtest:2:3: error[T106]: unexpected `expects` in a test; expected one of `workflow`, `params`, "
        "`secrets`, `at`, `fire`, `mock`, `expect`\n"
        "  expects status completed\n"
        "  ^^^^^^^",
    ),
    (
        'test "a" {\n  expect steps.ship.status == \n}\n',
        "shop.flowtest:2:30: error[E101]: unexpected end of file; expected an expression\n"
        "  expect steps.ship.status == \n"
        "                             ^",
    ),
])
def test_each_mistake_is_reported_where_it_is(tmp_path: Path, body: str, expected: str) -> None:
    assert _render(tmp_path, body) == expected


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    rendered = _render(tmp_path, 'test "a" {\n  mock chrage: output {}\n  expect outptu == 1\n}\n'
                                 'test "a" {\n  expect status failed\n}\n')
    codes = [line.split("error[")[1].split("]")[0] for line in rendered.splitlines() if "error[" in line]
    assert codes == ["T105", "T202", "T301"]
