"""What a fresh install gets is what was tested (issue 16): every dependency in pyproject.toml has
an upper bound, constraints.txt pins each one (and everything they pull in) exactly, inside those
bounds, and every install path (the Makefile's venv, so `make test`/`make run`/.ci/run, and the
Dockerfile) installs with it."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# `make lock` checks the pins it is about to write (constraints.txt.new) before they replace the old.
CONSTRAINTS = ROOT / os.environ.get("FLOW_CONSTRAINTS", "constraints.txt")


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not an exact pin NAME==VERSION"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def test_every_dependency_has_an_upper_bound() -> None:
    unbounded = [str(r) for r in _requirements()
                 if not any(spec.operator in ("<", "<=", "==", "~=") for spec in r.specifier)]
    assert unbounded == [], f"add the tested major version as an upper bound: {unbounded}"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert all("<" in r for r in build), build


def test_constraints_pin_every_dependency_inside_its_bounds() -> None:
    pins = _pins()
    assert "flow-engine" not in pins, "the project itself is not pinned (pip freeze --exclude-editable)"
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {req.specifier}")


def test_constraints_pin_the_transitive_dependencies_too() -> None:
    pins = _pins()
    # A few that Flow does not name but that decide its behaviour (Flask's, kombu's, httpx's).
    for name in ("werkzeug", "amqp", "httpcore", "markupsafe"):
        assert name in pins, f"{name} missing: constraints.txt should be a full pip freeze"


def test_every_install_path_uses_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.MULTILINE)
    assert stamp and "$(CONSTRAINTS)" in stamp.group(1), "the install stamp must depend on the constraints"
    assert re.search(r"^CONSTRAINTS\s*:=\s*constraints\.txt$", makefile, re.MULTILINE)
    recipe = makefile[stamp.end():].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs), installs
    for target in ("run", "test", "unit", "integration"):
        assert re.search(rf"^{target}: \$\(STAMP\)", makefile, re.MULTILINE), target
    assert re.search(r"^upgrade-deps:", makefile, re.MULTILINE) and re.search(r"^lock:", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md constraints.txt ./" in dockerfile
    resolving = [line for line in dockerfile.splitlines()
                 if re.search(r"pip (wheel|install)\b", line) and "--no-deps" not in line]
    assert resolving and all("-c " in line for line in resolving), resolving
