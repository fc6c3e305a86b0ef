"""``flow run --local`` (embedded SQLite, in-memory broker) of a workflow with a ``sleep`` and a
``subflow``: the coordinator runs both itself, no worker queue involved."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

SOURCE = """
flow 1
workflow inner(n: int) {
  step twice: transform { input: [params.n], map: item * 2 }
  output { doubled: steps.twice.output[0] }
}
workflow outer(n: int = 21) {
  step pause: sleep { duration: 200ms }
  step sub: subflow {
    after pause
    workflow: "inner"
    params: { n: params.n }
  }
  step done: noop { output: { answer: steps.sub.output.doubled } }
  output { answer: steps.done.output.answer, slept: steps.pause.output }
}
"""


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DATABASE_URL", "BROKER_URL", "DB_HOST", "RABBITMQ_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nested.flow").write_text(SOURCE)
    return tmp_path


def test_run_local_sleeps_then_runs_a_subflow(embedded: Path) -> None:
    from flow.cli.main import main

    started = time.monotonic()
    result = CliRunner().invoke(main, ["run", "nested.flow", "-w", "outer", "--local", "--json",
                                       "--timeout", "60"], catch_exceptions=False)
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "completed"
    assert document["output"] == {"answer": 42, "slept": None}
    steps = {s["name"]: s for s in document["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == {"pause": "completed", "sub": "completed",
                                                           "done": "completed"}
    assert steps["sub"]["output"] == {"doubled": 42}
    assert elapsed >= 0.2
