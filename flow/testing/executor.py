"""The workers of a workflow test: each task message is answered by its step's mock.

This is the seam where a test replaces the world: the planner, the store, retries, timers and
the saga are the real ones; only what a worker would do for a task is decided here. A step
without a mock runs its real handler when that handler is pure (the data steps and ``noop``);
a compensation without a mock succeeds; any other step without a mock stops the test, because
running it would reach the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsl import evaluator
from dsl.flowtest.model import Mock, MockTarget, Outcome
from dsl.spec import Span
from engine.core.contracts import Failure, ResultMessage, TaskMessage
from engine.settings import Settings
from workers.handler_api import HandlerError, TaskContext
from workers.payloads import resolve_payload
from workers.registry import Registry

# Task types whose real handler is pure (no network, no clock), so an unmocked step may run it.
PURE_TASK_TYPES = frozenset({"data_processing", "noop"})
WORKER = "flow-test"


def missing_mock(where: Span, step: str, task_type: str) -> str:
    return (f"{where.file}:{where.line}:{where.column}: step {step!r} ({task_type}) has no mock, "
            f"and a test never runs it for real; "
            f"add `mock {step}: output {{ ... }}` (or `fail \"CLASS\"`) to the test")


@dataclass
class _Cursor:
    """Where a mock is in its list of outcomes, for one task (one step, or one fan-out item)."""

    mock: Mock
    used: int = 0

    def next(self) -> Outcome:
        remaining = self.used
        self.used += 1
        for outcome in self.mock.outcomes:
            if remaining < outcome.times:
                return outcome
            remaining -= outcome.times
        return self.mock.outcomes[-1]  # the last outcome covers every further attempt


class MockedWorkers:
    """Answers task messages as a worker would, with the test's mocks in place of the handlers."""

    def __init__(self, mocks: Sequence[Mock], settings: Settings, clock: Any, where: Span) -> None:
        self._where = where  # the test's name, where problems of the test's own point
        # By (step, target, item): item None is the mock of every item without its own.
        self._mocks = {(m.step, m.target, m.item): m for m in mocks}
        self._cursors: dict[tuple[str, str, int | None], _Cursor] = {}
        self._settings = settings
        self._clock = clock
        self._registry = Registry.with_builtins()
        # What went wrong on the test's side (a missing mock, a mock that cannot be evaluated):
        # the task fails so that the run ends, and the test reports these instead of its checks.
        self.problems: list[str] = []

    def mock_for(self, step: str, target: MockTarget, item: int | None = None) -> Mock | None:
        found = self._mocks.get((step, target, item)) if item is not None else None
        return found or self._mocks.get((step, target, None))

    def next_outcome(self, mock: Mock, item: int | None) -> Outcome:
        """What ``mock`` does for the next attempt of its step (each fan-out item counts apart)."""
        cursor = self._cursors.setdefault((mock.step, mock.target, item), _Cursor(mock))
        return cursor.next()

    def answer(self, task: TaskMessage) -> ResultMessage:
        """The final result a worker would publish for ``task``.

        No ``started`` result comes first: the store applies a result that overtakes its
        ``started`` (as it does with two coordinators) in one write, and a mocked attempt takes
        no time, so there is no lease to watch; half the writes per task.
        """
        now = self._clock()
        output, failure = self._run(task)
        return ResultMessage(
            task.task_id, task.attempt, task.fencing_token, "failed" if failure else "completed",
            output=None if failure else output, error=failure, worker=WORKER, started_at=now, finished_at=now,
        )

    def _run(self, task: TaskMessage) -> tuple[Any, Failure | None]:
        compensating = task.task_type == "compensation"
        step = str(task.payload.get("step") if compensating else task.step)
        target: MockTarget = "compensate" if compensating else "step"
        item = task.payload.get("item") if compensating else task.item
        mock = self.mock_for(step, target, item if isinstance(item, int) else None)
        try:
            payload = resolve_payload(task.payload, self._settings)
        except HandlerError as exc:
            return None, exc.failure
        if mock is not None:
                return self._outcome(self.next_outcome(mock, item if isinstance(item, int) else None), task, payload)
        if compensating:
            return None, None
        if task.task_type in PURE_TASK_TYPES:
            return self._real_handler(task, payload)
        return self._problem(missing_mock(self._where, step, task.task_type))

    def _outcome(self, outcome: Outcome, task: TaskMessage, payload: Mapping[str, Any]) -> tuple[Any, Failure | None]:
        if outcome.kind == "fail":
            error_class = outcome.error_class or "handler"
            message = outcome.message or f"mocked failure ({error_class})"
            return None, Failure(error_class, message, retryable=error_class != "non_retryable")
        config = payload.get("action", {}).get("config", {}) if task.task_type == "compensation" else payload
        env = {"input": dict(config), "attempt": task.attempt, "item": task.item}
        try:
            return evaluator.evaluate(outcome.output, env), None
        except evaluator.EvaluationError as exc:
            where = outcome.span
            return self._problem(f"{where.file}:{where.line}:{where.column}: the mock output of "
                                 f"{task.step!r} cannot be evaluated: {exc}")

    def _problem(self, message: str) -> tuple[Any, Failure]:
        self.problems.append(message)
        return None, Failure("invalid_input", message, retryable=False)

    def _real_handler(self, task: TaskMessage, payload: dict[str, Any]) -> tuple[Any, Failure | None]:
        context = TaskContext(message=task, settings=self._settings, payload=payload,
                              secrets=self._settings.secrets, registry=self._registry, raw_payload=task.payload)
        try:
            return self._registry.get(task.task_type)(context), None
        except HandlerError as exc:
            return None, exc.failure
