"""mypy --strict over every first-party package (the settings are pyproject.toml's [tool.mypy])."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_type_checks_strictly() -> None:
    packages = [str(ROOT / name) for name in ("dsl", "engine", "workers", "web", "flow")]
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"),
                                "--cache-dir", str(ROOT / ".mypy_cache"), *packages])
    assert status == 0, f"mypy found problems (run `mypy` in the repository):\n{out}{err}"
