"""``flow start`` on PostgreSQL: one run, many from a JSON Lines file (in batches), keys, refusals."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.store import Store, db

pytestmark = pytest.mark.integration


@pytest.fixture
def deployed(postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, Store]:
    from flow.cli.main import main

    db.upgrade(postgres_url)
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("BROKER_URL", "memory://")
    name = f"starts_{uuid.uuid4().hex[:8]}"
    source = tmp_path / "w.flow"
    source.write_text(f"flow 1\nworkflow {name}(n: int, label: string = \"x\") {{\n"
                      "  step only: noop { output: params.n }\n}\n")
    result = CliRunner().invoke(main, ["deploy", str(source)])
    assert result.exit_code == 0, result.output
    return name, Store(db.make_engine(postgres_url))


def _runs_of(store: Store, name: str) -> list[dict]:
    runs, cursor = [], None
    while True:
        page = store.list_runs(workflow=name, limit=500, cursor=cursor)
        runs += page["runs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return runs


def test_one_run_prints_its_id_and_keeps_text_params_as_text(deployed) -> None:
    from flow.cli.main import main

    name, store = deployed
    result = CliRunner().invoke(main, ["start", name, "-p", "n=3", "-p", "label=42"])
    assert result.exit_code == 0, result.output
    run = store.get_run(result.stdout.strip())
    assert run["workflow"] == name and run["params"] == {"n": 3, "label": "42"}

    again = [CliRunner().invoke(main, ["start", name, "-p", "n=4", "--idempotency-key", "k-1"]) for _ in range(2)]
    assert again[0].stdout == again[1].stdout and again[0].exit_code == again[1].exit_code == 0

    bad = CliRunner().invoke(main, ["start", name, "-p", "n=three"])
    assert bad.exit_code == 1 and "invalid parameters" in bad.output and "n" in bad.output
    missing = CliRunner().invoke(main, ["start", "no_such_workflow"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_a_params_file_starts_one_run_per_line_in_batches(deployed, tmp_path: Path) -> None:
    from flow.cli.main import main

    name, store = deployed
    lines = [json.dumps({"n": i}) for i in range(2300)]
    lines += [json.dumps({"params": {"n": -1}, "idempotency_key": "same"})] * 2
    lines += [json.dumps({"n": "not a number"})]
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = CliRunner().invoke(main, ["start", name, "--params-file", str(path)])

    assert result.exit_code == 1  # one line was refused
    ids = result.stdout.split()
    assert len(ids) == 2302 and ids[-1] == ids[-2]  # one per started line, in order; the key dedupes
    assert "line 2303: not started: invalid parameters" in result.stderr
    assert "2301 runs of" in result.stderr and "1 already started" in result.stderr and "1 refused" in result.stderr
    runs = _runs_of(store, name)
    assert len(runs) == 2301
    assert {r["id"] for r in runs} == set(ids)
    assert [store.get_run(ids[i])["params"]["n"] for i in (0, 999, 1000, 2299, 2300)] == [0, 999, 1000, 2299, -1]


def test_a_malformed_file_starts_nothing_and_json_pairs_lines_with_runs(deployed, tmp_path: Path) -> None:
    from flow.cli.main import main

    name, store = deployed
    path = tmp_path / "bad.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n[3]\n')
    result = CliRunner().invoke(main, ["start", name, "--params-file", str(path)])
    assert result.exit_code == 1 and "bad.jsonl:3: a JSON list" in result.output and "nothing was started" in result.output
    assert _runs_of(store, name) == []

    result = CliRunner().invoke(main, ["start", name, "--params-file", "-", "--json"],
                                input='{"n": 1}\n\n{"n": "x"}\n')
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["line"] == 1 and records[0]["created"] is True
    assert records[1]["line"] == 3 and "invalid parameters" in records[1]["error"]
    assert [r["id"] for r in _runs_of(store, name)] == [records[0]["run_id"]]


def test_wait_gives_up_after_the_timeout_when_nothing_runs_it(deployed) -> None:
    from flow.cli.main import main

    name, _ = deployed
    result = CliRunner().invoke(main, ["start", name, "-p", "n=1", "--wait", "--timeout", "0.5"])
    assert result.exit_code == 1 and "gave up following after 0.5s" in result.output
