"""`flow check` and `flow graph` through click's CliRunner."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from flow.cli.main import main

GOOD = 'workflow w() {\n  step a: http { url: "https://x.example" }\n}\n'
WARN = "workflow w() {\n  step a: noop { when false }\n}\n"
BAD = "workflow w() {\n  step a: noop { after zz }\n}\n"


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, text in (("good", GOOD), ("warn", WARN), ("bad", BAD)):
        path = tmp_path / f"{name}.flow"
        path.write_text(text)
        paths[name] = str(path)
    return paths


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0 and "check" in result.output and "graph" in result.output


def test_check_clean_file_exits_0(files):
    result = run("check", files["good"])
    assert result.exit_code == 0, result.output


def test_check_prints_warnings_and_exits_0(files):
    result = run("check", files["warn"])
    assert result.exit_code == 0
    assert "warning[W501]" in result.output and "^^^^" in result.output


def test_check_errors_exit_1_with_caret(files):
    result = run("check", files["good"], files["bad"])
    assert result.exit_code == 1
    assert f"{files['bad']}:2:24: error[E201]: unknown step `zz`" in result.output
    assert "                       ^^" in result.output


def test_check_json(files):
    result = run("check", "--json", files["bad"], files["warn"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [d["code"] for d in data] == ["E201", "W501"]
    assert set(data[0]) == {"severity", "code", "message", "file", "line", "column", "end_line", "end_column"}


def test_unreadable_file_is_a_usage_error(tmp_path):
    result = run("check", str(tmp_path / "missing.flow"))
    assert result.exit_code == 2 and "cannot read" in result.output


def test_no_file_is_a_usage_error():
    assert run("check").exit_code == 2


def test_invalid_utf8_is_a_diagnostic(tmp_path):
    path = tmp_path / "bin.flow"
    path.write_bytes(b"\xff\xfe")
    result = run("check", str(path))
    assert result.exit_code == 1 and "E113" in result.output


def test_graph_calls_the_renderer(files, monkeypatch):
    fake = types.ModuleType("dsl.graph")
    fake.render = lambda spec, fmt: f"{fmt}:{spec.name}:{len(spec.steps)}"
    monkeypatch.setitem(sys.modules, "dsl.graph", fake)
    import dsl

    monkeypatch.setattr(dsl, "graph", fake, raising=False)
    result = run("graph", files["good"], "--format", "mermaid")
    assert result.exit_code == 0 and result.output.strip() == "mermaid:w:1"


def test_graph_unknown_workflow_is_a_usage_error(files):
    result = run("graph", files["good"], "--workflow", "nope")
    assert result.exit_code == 2 and "has no workflow 'nope'" in result.output


def test_graph_of_a_bad_file_exits_1(files):
    assert run("graph", files["bad"]).exit_code == 1
