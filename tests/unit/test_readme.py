"""The README's example is a real workflow: it compiles without errors or warnings."""

import re
from pathlib import Path

from dsl import compile_source

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_compiles_cleanly():
    blocks = re.findall(r"```flow\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README should show a .flow example"
    for block in blocks:
        result = compile_source(block, "README.md")
        assert [d.message for d in result.diagnostics] == []
        assert result.specs
