"""`flow test` end to end: runs on the real planner and store, mocks at the worker seam, a
virtual clock; the CLI and the pytest plugin as users call them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from engine.store.context import runs
from flow.cli.main import main
from flow.testing.database import Sandbox
from flow.testing.executor import MockedWorkers
from flow.testing.runner import Session, load
from flow.testing.world import World

WAITS = """flow 1
workflow child(n: int) {
  step double: http { method: "GET", url: "https://x.example/${params.n}" }
  output { doubled: steps.double.output.body.value }
}
workflow waits(order: string) {
  timeout 30d
  step cool_off: sleep { duration: 2d }
  step ok: approval { after cool_off  prompt: "Ship ${params.order}?", timeout: 1d }
  step ship: http { when steps.ok.output.approved  method: "GET"  url: "https://ship.example/${params.order}" }
  step sub: subflow { workflow: "child", params: { n: 21 } }
  output { approved: steps.ok.output.approved, by: steps.ok.output.by, sub: steps.sub.output.doubled }
}
workflow forever() {
  step ask: approval { prompt: "anyone?" }
}
workflow slow_parent() {
  timeout 1h
  step sub: subflow { workflow: "slow_child", params: {} }
}
workflow slow_child() {
  step nap: sleep { duration: 2h }
}
"""

TESTS = """use "waits.flow"

test "approved after two days of sleep" {
  workflow waits
  params { order: "o1" }
  mock ok: approve "fine"
  mock ship: output { status: 200 }
  mock double: output { status: 200, body: { value: input.url } }   # a child run's step
  expect status completed
  expect elapsed == 2d
  expect output == { approved: true, by: "flow test", sub: "https://x.example/21" }
  expect steps.ok.output.comment == "fine"
}

test "rejected: no shipment" {
  workflow waits
  params { order: "o2" }
  mock ok: reject
  mock double: output { status: 200, body: { value: 1 } }
  expect status completed
  expect skipped [ship]
  expect output.approved == false
}

test "nobody answers within a day" {
  workflow waits
  params { order: "o3" }
  mock ok: timeout
  mock double: output { status: 200, body: { value: 1 } }
  expect status failed
  expect steps.ok.error.type == "timeout"
  expect elapsed == 3d
}

test "an approval without a timeout or an answer waits" {
  workflow forever
  expect status running
  expect steps.ask.status == "processing"
}
"""


def _line(text: str, fragment: str) -> int:
    """The line of ``text`` where ``fragment`` first appears (so that the tests say which line)."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "waits.flow").write_text(WAITS)
    (tmp_path / "waits.flowtest").write_text(TESTS)
    return tmp_path


def _run(path: Path) -> dict[str, object]:
    session = Session()
    try:
        loaded = load(str(path))
        assert loaded.ok, loaded.render()
        return {o.name: o for o in session.run(loaded)}
    finally:
        session.close()


def test_sleeps_approvals_and_subflows_take_virtual_time_only(files: Path) -> None:
    began = time.monotonic()
    outcomes = _run(files / "waits.flowtest")
    assert time.monotonic() - began < 30  # 3 virtual days; a real sleep would never end
    assert {name: (o.passed, o.problems) for name, o in outcomes.items()} == {
        name: (True, ()) for name in outcomes
    }
    assert outcomes["approved after two days of sleep"].virtual_seconds == 2 * 86400
    assert outcomes["nobody answers within a day"].virtual_seconds == 3 * 86400


def test_a_failing_expectation_says_what_the_run_did(files: Path) -> None:
    text = (TESTS.replace("expect elapsed == 3d", "expect elapsed == 1d")
            .replace("expect skipped [ship]", "expect skipped []")
            .replace("expect output.approved == false", "expect len(output.approved) == 1"))
    (files / "waits.flowtest").write_text(text)
    outcomes = _run(files / "waits.flowtest")
    where = str(files / "waits.flowtest")
    assert outcomes["nobody answers within a day"].problems == (
        f"{where}:{_line(text, '== 1d')}:10: expect elapsed == 1d: is false: "
        "the left side is 259200.0, the right side 86400.0",)
    assert outcomes["rejected: no shipment"].problems == (
        f"{where}:{_line(text, 'skipped []')}:10: expect skipped []: the steps skipped are [ship]",
        f"{where}:{_line(text, 'len(output')}:10: expect len(output.approved) == 1: cannot be evaluated: "
        "len() expects a string, list or object, got bool",
    )


def test_a_step_without_a_mock_fails_its_test_and_only_it(files: Path) -> None:
    (files / "waits.flowtest").write_text(TESTS.replace('  mock ship: output { status: 200 }\n', ''))
    outcomes = _run(files / "waits.flowtest")
    assert outcomes["approved after two days of sleep"].problems == (
        f"{files / 'waits.flowtest'}:3:7: step 'ship' (http_request) has no mock, and a test never runs it "
        "for real; add `mock ship: output { ... }` (or `fail \"CLASS\"`) to the test",)
    assert [o.passed for o in outcomes.values()] == [False, True, True, True]


def test_a_test_gives_the_same_run_alone_and_among_others(tmp_path: Path) -> None:
    (tmp_path / "w.flow").write_text("""flow 1
workflow w(n: int) {
  step call: http { method: "GET", url: "https://x.example/${params.n}"
                    retry { attempts: 4, delay: 1s, backoff: 3.0, jitter: true } }
}
""")
    one = 'test "t%d" {\n  params { n: %d }\n  mock call: fail "http.503" x3, then { status: 200 }\n  expect status completed\n}\n'
    (tmp_path / "alone.flowtest").write_text('use "w.flow"\n' + one % (0, 0))
    (tmp_path / "crowd.flowtest").write_text('use "w.flow"\n' + "".join(one % (i, i) for i in range(20)))
    alone = _run(tmp_path / "alone.flowtest")["t0"]
    crowd = _run(tmp_path / "crowd.flowtest")
    # Jitter is off in tests: 1 s + 3 s + 9 s, alone or with 19 other runs beside it.
    assert alone.passed and alone.virtual_seconds == 13
    assert {o.virtual_seconds for o in crowd.values()} == {13} and all(o.passed for o in crowd.values())


def test_a_parent_that_times_out_leaves_its_child_running(files: Path) -> None:
    """What docs/internals.md and docs/language.md say: a timeout does not cancel the children."""
    sandbox = Sandbox()
    try:
        sandbox.reset([("waits.flow", WAITS)])
        world = World(sandbox.engine, start=1_800_000_000)
        loaded = load(str(files / "waits.flowtest"))
        test = loaded.tests.tests[0]
        parent = world.start("slow_parent", {}, MockedWorkers((), _settings(), world.clock, test.span))
        world.settle()
        with sandbox.engine.connect() as conn:
            child = conn.execute(select(runs.c.status, runs.c.finished_at).where(runs.c.parent_run_id == parent)).one()
        document = world.store.get_run(parent)
        assert document["status"] == "failed" and document["error"]["type"] == "timeout"
        assert child.status == "completed"  # it slept its 2 h to the end, an hour after its parent failed
        assert document["steps"][0]["status"] == "cancelled"
    finally:
        sandbox.close()


def _settings():  # type: ignore[no-untyped-def]
    from engine.settings import Settings

    return Settings(database_url="sqlite://", broker_url="memory://")


def test_the_cli_prints_a_line_per_test_and_exits_non_zero_on_a_failure(files: Path) -> None:
    result = CliRunner().invoke(main, ["test", str(files)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"PASS  {files / 'waits.flowtest'}:3  approved after two days of sleep  (2d virtual)"
    assert "4 tests: 4 passed, 0 failed" in result.output

    text = TESTS.replace("expect status running", "expect status completed  # was running")
    (files / "waits.flowtest").write_text(text)
    result = CliRunner().invoke(main, ["test", str(files / "waits.flowtest"), "-k", "waits", "--json"])
    assert result.exit_code == 1
    where = f"{files / 'waits.flowtest'}:{_line(text, '# was running')}"
    assert [json.loads(line) for line in result.output.splitlines()][-1] == {
        "file": str(files / "waits.flowtest"), "line": _line(text, "or an answer waits"),
        "name": "an approval without a timeout or an answer waits", "passed": False,
        "problems": [f"{where}:10: expect status completed: the run is running"], "virtual_seconds": 0.0,
    }


def test_the_cli_reports_a_file_that_does_not_compile(files: Path) -> None:
    (files / "waits.flowtest").write_text('use "waits.flow"\ntest "x" {\n  workflow waits\n  mock nope: output {}\n}\n')
    result = CliRunner().invoke(main, ["test", str(files / "waits.flowtest")])
    assert result.exit_code == 1
    assert "error[T202]: the workflow has no step `nope`" in result.output
    assert "1 test: 0 passed, 1 failed" in result.output


def test_pytest_collects_flowtest_files(files: Path) -> None:
    text = TESTS.replace("expect status running", "expect status completed  # was running")
    (files / "waits.flowtest").write_text(text)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(files)],
                          capture_output=True, text=True, timeout=120, cwd=files)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 3 passed" in done.stdout
    assert (f"{files / 'waits.flowtest'}:{_line(text, '# was running')}:10: "
            "expect status completed: the run is running") in done.stdout


def test_the_pytest_plugin_loads_no_engine_until_a_flowtest_file_is_collected() -> None:
    code = ("import sys, flow.testing.pytest_plugin; "
            "print(sorted(m for m in ('engine', 'sqlalchemy', 'kombu', 'flask') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
