"""The `flow test` benchmark runs and its generated tests pass (its timing is bench/'s, not a test's)."""

from __future__ import annotations

from pathlib import Path

from bench import flowtest_bench
from flow.testing.runner import Session, load


def test_the_benchmark_runs_its_generated_saga_tests(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert flowtest_bench.main(["--tests", "20", "--steps", "4", "--repeat", "1", "--keep", str(tmp_path)]) == 0
    assert "flow test: 20 tests of a 4-step saga in" in capsys.readouterr().out


def test_the_generated_tests_can_fail(tmp_path: Path) -> None:
    flowtest_bench.main(["--tests", "10", "--steps", "3", "--repeat", "1", "--keep", str(tmp_path)])
    path = tmp_path / "saga.flowtest"
    path.write_text(path.read_text().replace("expect status compensated", "expect status completed"))
    session = Session()
    outcomes = session.run(load(str(path)))
    session.close()
    assert sorted(o.name for o in outcomes if not o.passed) == ["case 7", "case 8", "case 9"]
