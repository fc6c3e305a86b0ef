"""``flow run --local`` on the embedded default: SQLite in a temporary directory, the in-memory broker,
a coordinator and workers in threads of the same process. Nothing to install, nothing to start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

DOUBLE = """
flow 1
workflow double(items: list<int> = [1, 2, 3], label: string = "x") {
  step start: noop { output: { label: params.label } }
  step doubled: transform { input: params.items, map: item * 2 }
  step tripled: transform { input: steps.doubled.output, map: string(item) + steps.start.output.label }
  output { doubled: steps.doubled.output, label: steps.start.output.label }
}
"""


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shell with nothing configured: the embedded default, its data directory in ``tmp_path``."""
    for name in ("DATABASE_URL", "BROKER_URL", "DB_HOST", "RABBITMQ_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "double.flow").write_text(DOUBLE)
    return tmp_path


def flow(*args: str) -> "CliRunner.invoke":
    from flow.cli.main import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_local_completes_and_prints_the_run_document(embedded: Path) -> None:
    result = flow("run", "double.flow", "--local", "--json", "-p", "items=[5, 6]", "-p", "label=hi",
                  "--timeout", "60")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["workflow"] == "double"
    assert document["status"] == "completed"
    assert document["params"] == {"items": [5, 6], "label": "hi"}
    assert document["output"] == {"doubled": [10, 12], "label": "hi"}
    steps = {s["name"]: s for s in document["steps"]}
    assert {name: s["status"] for name, s in steps.items()} == {
        "start": "completed", "doubled": "completed", "tripled": "completed"}
    assert steps["doubled"]["output"] == [10, 12]
    assert all(s["attempts"] == 1 for s in steps.values())
    assert set(document) >= {"id", "workflow", "version", "status", "params", "output", "error", "steps"}
    assert (embedded / "data" / "flow.db").exists()


def test_run_on_the_embedded_default_is_local_and_prints_progress(embedded: Path) -> None:
    result = flow("run", "double.flow", "--timeout", "60")

    assert result.exit_code == 0, result.output
    assert "in this process" in result.output
    for line in ("start", "doubled", "tripled"):
        assert line in result.output
    assert "completed" in result.output


def test_run_exits_1_when_the_run_fails(embedded: Path) -> None:
    # a number times a string is an error: the transform fails for good (invalid input, no retry)
    (embedded / "broken.flow").write_text(
        'flow 1\nworkflow broken(x: any = "a") {\n  step bad: transform { input: [1], map: item * params.x }\n}\n')

    result = flow("run", "broken.flow", "--local", "--json", "--timeout", "60")

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "failed"
    assert [(s["name"], s["status"]) for s in document["steps"]] == [("bad", "failed")]


def test_run_rejects_params_that_do_not_fit(embedded: Path) -> None:
    result = flow("run", "double.flow", "--local", "-p", 'items=["a"]')

    assert result.exit_code == 1
    assert "items" in result.output and "expected int" in result.output


def test_run_reports_compile_errors_like_check(embedded: Path) -> None:
    (embedded / "bad.flow").write_text("flow 1\nworkflow w() {\n  step a: nosuchtype { }\n}\n")

    result = flow("run", "bad.flow", "--local")

    assert result.exit_code == 1
    assert "bad.flow:3:" in result.output


SCHEDULED = """
workflow nightly(region: string = "eu") {
  schedule cron "0 3 * * *" { timezone: "Europe/Berlin" }
  step ping: noop { output: params.region }
}
"""


def test_deploy_registers_replaces_and_removes_schedules(embedded: Path) -> None:
    # Given a workflow with a cron schedule, deployed
    (embedded / "nightly.flow").write_text(SCHEDULED)
    assert flow("deploy", "nightly.flow").exit_code == 0
    listed = json.loads(flow("schedules", "list", "--json").output)
    assert [(s["workflow"], s["expression"]) for s in listed] == [("nightly", "0 3 * * *")]

    # When the schedule changes, then disappears
    (embedded / "nightly.flow").write_text(SCHEDULED.replace("0 3", "30 4"))
    assert flow("deploy", "nightly.flow").exit_code == 0
    changed = json.loads(flow("schedules", "list", "--json").output)
    (embedded / "nightly.flow").write_text(SCHEDULED.replace(
        '  schedule cron "0 3 * * *" { timezone: "Europe/Berlin" }\n', ""))
    assert flow("deploy", "nightly.flow").exit_code == 0
    removed = json.loads(flow("schedules", "list", "--json").output)

    # Then each deploy left exactly the schedules of the source
    assert [s["expression"] for s in changed] == ["30 4 * * *"]
    assert removed == []


@pytest.mark.parametrize("written", ["1s", "5m", "1h30m", "1d", "250ms"])
def test_schedules_list_prints_an_every_as_written(embedded: Path, written: str) -> None:
    # Given a workflow that runs every `written`, deployed
    (embedded / "tick.flow").write_text(f"workflow tick() {{\n  schedule every {written}\n  step a: noop {{}}\n}}\n")
    assert flow("deploy", "tick.flow").exit_code == 0

    # When the schedules are listed, then the duration reads as in the source, not in seconds
    text = flow("schedules", "list").output
    assert f"  tick  every {written} UTC  next (UTC): " in text, text
    (listed,) = json.loads(flow("schedules", "list", "--json").output)
    assert listed["timing"] == f"every {written}"
    assert float(listed["expression"]) > 0  # the stored seconds, unchanged for API clients


APP = Path(__file__).resolve().parents[2] / "examples" / "python-app"


def test_run_local_with_python_steps_of_an_imported_module(embedded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the example app's steps.py importable from the current directory
    (embedded / "steps.py").write_text((APP / "steps.py").read_text())
    (embedded / "billing.flow").write_text((APP / "billing.flow").read_text())
    monkeypatch.syspath_prepend(str(embedded))

    # When the workflow runs with its Python step type, whose first attempt asks to be retried later
    result = flow("run", "billing.flow", "--local", "--json", "--import", "steps", "-p", "customer=busy",
                  "-p", "amount=3", "--timeout", "60")

    # Then the second attempt completed it
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["output"]["receipt"].endswith(": 3 EUR")
    assert document["steps"][0]["attempts"] == 2


def test_check_with_the_manifest_of_python_steps(embedded: Path) -> None:
    (embedded / "steps.py").write_text((APP / "steps.py").read_text())
    (embedded / "pay.flow").write_text(
        'flow 1\nworkflow pay() {\n  step c: billing.charge { customer: "a", amuont: 3 }\n}\n')

    unchecked = flow("check", "pay.flow")
    exported = flow("steps", "export", "--import", "steps", "-o", "flow-steps.json")
    checked = flow("check", "pay.flow", "--steps", "flow-steps.json")

    assert unchecked.exit_code == 0 and "W505" in unchecked.output
    assert exported.exit_code == 0 and "billing.charge" in (embedded / "flow-steps.json").read_text()
    assert checked.exit_code == 1
    assert "unknown config key `amuont`" in checked.output and "did you mean `amount`?" in checked.output
    assert "misses required config `amount`" in checked.output
