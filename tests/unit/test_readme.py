"""The README's examples are real: its workflows compile without errors or warnings (a Python step
type with the config schema of the example app that declares it), and its Python code is the
example app's, verbatim."""

import importlib.util
import re
from pathlib import Path

from dsl import compile_source
from flow.steps import declared_in, manifest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
APP = ROOT / "examples" / "python-app"


def _app_step_types() -> dict:
    spec = importlib.util.spec_from_file_location("python_app_steps", APP / "steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return manifest(declared_in(module))


def test_readme_example_compiles_cleanly():
    blocks = re.findall(r"```flow\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README should show a .flow example"
    step_types = _app_step_types()
    for block in blocks:
        result = compile_source(block, "README.md", step_types)
        assert [d.message for d in result.diagnostics] == []
        assert result.specs


def test_the_python_app_is_shown_as_it_is():
    for readme in (README, APP / "README.md"):
        text = readme.read_text(encoding="utf-8")
        python = re.findall(r"```python\n(.*?)```", text, re.S)
        flows = re.findall(r"```flow\n(.*?)```", text, re.S)
        assert (APP / "steps.py").read_text() in python, readme
        assert (APP / "start.py").read_text() in python, readme
        assert (APP / "billing.flow").read_text() in flows, readme
    # "in under 20 lines": the workflow with its steps, and the script that starts it.
    assert len((APP / "billing.flow").read_text().splitlines()) + len((APP / "steps.py").read_text().splitlines()) < 20
    assert len((APP / "start.py").read_text().splitlines()) < 20
