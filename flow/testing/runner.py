"""Run the tests of `.flowtest` files: load and check them, then drive their runs in a world.

The tests of one file that start at the same virtual instant run side by side in one world (one
fresh copy of the database, one clock), as the runs of many users move under one coordinator;
each run answers only to its own test's mocks, and jitter is off, so a test gives the same result
alone or among others. When the test file's syntax or a workflow it uses is broken, none of its
tests runs; a test with problems of its own (a mock of an unknown step ...) fails without running.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dsl
from dsl import evaluator
from dsl.errors import Diagnostic, error, render_diagnostic
from dsl.flowtest import checks, parser, verdict
from dsl.flowtest.model import FlowTest, FlowTestFile
from dsl.spec import Span, WorkflowSpec
from engine.core.errors import InvalidParams
from engine.settings import Settings
from flow.testing import SUFFIX
from flow.testing.clock import DEFAULT_START
from flow.testing.database import Sandbox
from flow.testing.executor import MockedWorkers
from flow.testing.world import Stalled, World

# The workers of a test never read these; Settings needs them.
_SETTINGS = Settings(database_url="sqlite://", broker_url="memory://")


@dataclass(frozen=True)
class Verdict:
    """One test's verdict: ``passed``, else the ``problems`` (each with its line:col)."""

    file: str
    name: str
    line: int
    passed: bool
    problems: tuple[str, ...] = ()
    virtual_seconds: float = 0.0
    run_id: str | None = None


@dataclass
class LoadedFile:
    """A `.flowtest` file with the workflows it tests, compiled, and every diagnostic found."""

    path: str
    text: str
    tests: FlowTestFile
    sources: list[tuple[str, str]] = field(default_factory=list)
    specs: dict[str, WorkflowSpec] = field(default_factory=dict)
    # The file's own problems (syntax, a workflow that does not compile), with the text they
    # point into: no test of the file runs.
    diagnostics: list[tuple[Diagnostic, str]] = field(default_factory=list)
    # Each test's problems against its workflow (T2xx, T3xx): that test does not run.
    test_problems: dict[str, list[Diagnostic]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d, _ in self.diagnostics)

    def render(self) -> str:
        return "\n".join(render_diagnostic(d, text) for d, text in self.diagnostics)

    def render_test(self, name: str) -> list[str]:
        return [render_diagnostic(d, self.text) for d in self.test_problems.get(name, [])]


def find_files(paths: Iterable[str]) -> list[str]:
    """The `.flowtest` files among ``paths``, directories searched recursively, in a stable order."""
    found: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for directory, subdirectories, names in os.walk(path):
                # Hidden directories (.venv, .git ...) hold no tests of the project's own.
                subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
                found.extend(os.path.join(directory, n) for n in sorted(names) if n.endswith(SUFFIX))
        else:
            found.append(str(path))
    return list(dict.fromkeys(found))


def load(path: str) -> LoadedFile:
    """Read, parse and check one file. Raises ``OSError`` when it (or a file it uses) cannot be read."""
    text = Path(path).read_text(encoding="utf-8")
    tests, syntax = parser.parse(text, path)
    loaded = LoadedFile(path, text, tests, diagnostics=[(d, text) for d in syntax])
    uses = tests.uses or ((Path(path).with_suffix(".flow").name, Span(path, 1, 1, 1, 2)),)
    for relative, where in uses:
        source_path = Path(path).parent / relative
        try:
            source = source_path.read_text(encoding="utf-8")
        except OSError as exc:
            hint = "" if tests.uses else '; name the workflow files with `use "FILE.flow"`'
            loaded.diagnostics.append((error("T112", f"cannot read {source_path}: "
                                             f"{exc.strerror or exc}{hint}", where), text))
            continue
        compiled = dsl.compile_source(source, str(source_path))
        loaded.diagnostics.extend((d, source) for d in compiled.diagnostics if d.is_error)
        loaded.sources.append((str(source_path), source))
        loaded.specs.update({s.name: s for s in compiled.specs})
    # The tests are checked even when the test file has syntax errors (every problem at once),
    # as long as the workflows compiled.
    if not any(d.is_error for d, source in loaded.diagnostics if source is not text):
        for test in tests.tests:
            spec, problems = checks.pick_workflow(test, loaded.specs)
            if spec is not None:
                problems += checks.check(test, spec, loaded.specs)
            if problems:
                loaded.test_problems[test.name] = problems
    return loaded


def run_file(loaded: LoadedFile, sandbox: Sandbox, only: Sequence[str] | None = None) -> list[Verdict]:
    """Run the tests of ``loaded`` (those named in ``only``, if given); one outcome each."""
    selected = [t for t in loaded.tests.tests if only is None or t.name in only]
    if not loaded.ok:
        message = f"not run: {loaded.path} or a workflow it uses does not compile"
        return [Verdict(loaded.path, t.name, t.span.line, False, (message,)) for t in selected]
    outcomes: dict[str, Verdict] = {}
    # A fired test runs in a world of its own: the fire of one schedule at one instant starts one
    # run (the scheduler's idempotency), which two tests cannot share.
    by_start: dict[tuple[str | None, str | None], list[FlowTest]] = {}
    for test in selected:
        if test.name in loaded.test_problems:
            outcomes[test.name] = Verdict(loaded.path, test.name, test.span.line, False,
                                          tuple(loaded.render_test(test.name)))
            continue
        by_start.setdefault((test.start_at, test.name if test.fire else None), []).append(test)
    for (start_at, _), tests in by_start.items():
        for outcome in _run_together(loaded, sandbox, start_at, tests):
            outcomes[outcome.name] = outcome
    return [outcomes[t.name] for t in selected]


def _run_together(loaded: LoadedFile, sandbox: Sandbox, start_at: str | None,
                  tests: list[FlowTest]) -> list[Verdict]:
    sandbox.reset(loaded.sources)
    start = datetime.fromisoformat(start_at).timestamp() if start_at else DEFAULT_START
    world = World(sandbox.engine, start)
    outcomes: list[Verdict] = []
    prepared: dict[str, list[tuple[FlowTest, dict[str, Any], MockedWorkers]]] = {}
    fired: list[tuple[FlowTest, str, MockedWorkers]] = []
    for test in tests:
        spec, _ = checks.pick_workflow(test, loaded.specs)
        assert spec is not None  # load() reported it otherwise
        try:
            params = evaluator.evaluate(test.params, {}) if test.params else {}
            secrets = evaluator.evaluate(test.secrets, {}) if test.secrets else {}
        except evaluator.EvaluationError as exc:
            outcomes.append(_broken(test, f"its params or secrets cannot be evaluated: {exc}"))
            continue
        if not isinstance(params, dict) or not isinstance(secrets, dict):
            outcomes.append(_broken(test, "`params` and `secrets` must be objects"))
            continue
        settings = Settings(_SETTINGS.database_url, _SETTINGS.broker_url,
                            secrets={str(k): str(v) for k, v in secrets.items()})
        workers = MockedWorkers(test.mocks, settings, world.clock, test.span)
        if test.fire is not None:
            try:
                fired.append((test, world.fire(spec, test.fire, workers), workers))
            except Stalled as exc:
                outcomes.append(_broken(test, str(exc)))
            continue
        prepared.setdefault(spec.name, []).append((test, params, workers))
    started: list[tuple[FlowTest, str, MockedWorkers]] = fired
    for workflow, group in prepared.items():
        started += _start(world, workflow, group, start_at, outcomes)
    try:
        world.settle()
    except Stalled as exc:
        return outcomes + [_broken(test, str(exc)) for test, _, _ in started]
    for test, run_id, workers in started:
        document = world.store.get_run(run_id)
        elapsed = _elapsed(document, world.clock())
        problems = list(workers.problems) or verdict.failures(test.expectations, verdict.environment(document, elapsed))
        outcomes.append(Verdict(loaded.path, test.name, test.span.line, not problems, tuple(problems),
                                    elapsed, run_id))
    return outcomes


def _start(world: World, workflow: str, group: list[tuple[FlowTest, dict[str, Any], MockedWorkers]],
           start_at: str | None, outcomes: list[Verdict]) -> list[tuple[FlowTest, str, MockedWorkers]]:
    """Start the runs of ``group``: in one transaction when they all have valid params (and no
    schedule time), else one by one, so that each bad one is told apart."""
    if start_at is None:
        try:
            run_ids = world.start_all(workflow, [(params, workers) for _, params, workers in group])
            return [(test, run_id, workers) for (test, _, workers), run_id in zip(group, run_ids)]
        except InvalidParams:
            pass
    started = []
    for test, params, workers in group:
        try:
            started.append((test, world.start(workflow, params, workers, scheduled_at=start_at), workers))
        except InvalidParams as exc:
            problems = "; ".join(exc.problems or [str(exc)])
            outcomes.append(_broken(test, f"invalid params for {workflow}: {problems}"))
    return started


def _broken(test: FlowTest, message: str) -> Verdict:
    where = test.params_span or test.span
    return Verdict(test.span.file, test.name, test.span.line, False, (f"{where.file}:{where.line}:{where.column}: {message}",))


def _elapsed(document: dict[str, Any], now: float) -> float:
    created = document.get("created_at")
    finished = document.get("finished_at")
    if not created:
        return 0.0
    end = datetime.fromisoformat(finished).timestamp() if finished else now
    return end - datetime.fromisoformat(created).timestamp()


@dataclass
class Session:
    """Runs files one after another on one sandbox database; ``elapsed`` is wall seconds."""

    sandbox: Sandbox = field(default_factory=Sandbox)
    elapsed: float = 0.0

    def run(self, loaded: LoadedFile, only: Sequence[str] | None = None) -> list[Verdict]:
        began = time.perf_counter()
        try:
            return run_file(loaded, self.sandbox, only)
        finally:
            self.elapsed += time.perf_counter() - began

    def close(self) -> None:
        self.sandbox.close()
