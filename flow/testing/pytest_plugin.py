"""The pytest plugin of `flow test`: every `test "..."` of a `*.flowtest` file is a pytest item.

Installed with Flow (entry point ``pytest11``), so ``pytest workflows/`` runs the same tests as
``flow test workflows/``. The selected tests of one file run together on first use (one world,
as `flow test` runs them); each item then reports its own verdict. A file that does not compile
is a collection error showing the diagnostics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the engine is imported only once a .flowtest file is collected
    from flow.testing.runner import LoadedFile, Session, Verdict

from flow.testing import SUFFIX
_SESSION_KEY = pytest.StashKey["Session"]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == SUFFIX:
        return FlowTestFile.from_parent(parent, path=file_path)
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    shared = session.stash.get(_SESSION_KEY, None)
    if shared is not None:
        shared.close()


class FlowTestFailed(Exception):
    """A workflow test whose run did not meet its expectations (or could not run)."""


class FlowTestFile(pytest.File):
    """A `.flowtest` file: its tests, run together when the first of them is reached."""

    loaded: "LoadedFile"
    _outcomes: "dict[str, Verdict] | None" = None

    def collect(self) -> Iterator["FlowTestItem"]:
        from flow.testing.runner import load

        self.loaded = load(str(self.path))
        if self.loaded.diagnostics:
            raise self.CollectError(self.loaded.render())
        for test in self.loaded.tests.tests:
            yield FlowTestItem.from_parent(self, name=test.name, line=test.span.line)

    def outcome(self, name: str) -> "Verdict":
        from flow.testing.runner import Session

        if self._outcomes is None:
            selected = [i.name for i in self.session.items if i.parent is self]
            session = self.session.stash.setdefault(_SESSION_KEY, Session())
            self._outcomes = {o.name: o for o in session.run(self.loaded, selected or [name])}
        return self._outcomes[name]


class FlowTestItem(pytest.Item):
    def __init__(self, *, line: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line = line

    @property
    def file(self) -> FlowTestFile:
        assert isinstance(self.parent, FlowTestFile)
        return self.parent

    def runtest(self) -> None:
        outcome = self.file.outcome(self.name)
        if not outcome.passed:
            raise FlowTestFailed("\n".join(outcome.problems))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, FlowTestFailed):
            return f"{self.path}:{self.line}: test {self.name!r} failed:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.line - 1, f"flowtest: {self.name}"
