"""What the planner knows about each step, and the expression environment built from it (pure).

A step's state is derived from its tasks every time the planner runs: nothing about a run is kept
anywhere but in the tasks, so that two coordinators planning the same view agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsl import evaluator
from dsl.spec import StepSpec, WorkflowSpec
from dsl.values import type_name
from engine.core.planner.view import RunView, TaskView
from engine.core.states import TaskStatus

T = TaskStatus

IN_FLIGHT = frozenset({T.PENDING, T.PROCESSING, T.RETRYING})
# A compensated task did complete; its output stays what the step produced.
SUCCEEDED = frozenset({T.COMPLETED, T.COMPENSATED})

# Step inputs and outputs are capped at 1 MiB (DESIGN.md, Guarantees 7).
MAX_PAYLOAD_BYTES = 1 << 20

TaskKey = tuple[str, str, "int | None"]


def task_key(task: TaskView) -> TaskKey:
    return (task.kind, task.step, task.item)


@dataclass(frozen=True)
class StepState:
    """A step as expressions see it (``steps.NAME``); ``status`` is ``None`` before it starts.

    A fan-out step in flight reports ``processing``; a cancelled task counts as ``failed`` so that a
    run whose task an operator cancelled still reaches an end.
    """

    status: TaskStatus | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    def satisfies(self, step: StepSpec, tolerant: bool = False) -> bool:
        """Whether this step, whose spec is ``step``, lets the steps depending on it start.

        ``tolerant``: the dependents are ``on failure`` steps, which run after failures anyway.
        """
        if self.status in SUCCEEDED or self.status is T.SKIPPED:
            return True
        return self.status is T.FAILED and (step.allow_failure or tolerant)

    def to_env(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "status": self.status.value if self.status else None,
            "error": self.error,
            "attempts": self.attempts,
        }


def task_state(task: TaskView) -> StepState:
    """The state of a step (or one fan-out item) that has the single task ``task``."""
    if task.status is T.CANCELLED:
        error = task.error or {"type": "cancelled", "message": "the task was cancelled"}
        return StepState(T.FAILED, None, error, task.attempt)
    # Only a succeeded task has an output: "a failure leaves output null".
    output = task.output if task.status in SUCCEEDED else None
    return StepState(task.status, output, task.error, task.attempt)


def base_env(
    spec: WorkflowSpec, run: RunView, states: Mapping[str, StepState]
) -> dict[str, Any]:
    """The roots every expression of the run sees: lets, ``params``, ``steps``, ``workflow``."""
    env: dict[str, Any] = dict(run.values)
    env["params"] = run.params
    env["steps"] = {name: state.to_env() for name, state in states.items()}
    env["workflow"] = {
        "name": run.workflow_name or spec.name,
        "run_id": run.id,
        "scheduled_at": run.scheduled_at,
    }
    return env


def condition(value: Any, clause: str) -> bool:
    """A ``when`` or ``where`` result as a decision.

    ``null`` counts as false: member access on ``null`` gives ``null``, so ``when
    steps.review.output.approved`` on a skipped ``review`` should skip, not fail the run.
    """
    if value is None or value is False:
        return False
    if value is True:
        return True
    raise evaluator.EvaluationError(f"{clause} must be true or false, not a {type_name(value)}")


def evaluate_config(config: Mapping[str, Any], env: Mapping[str, Any]) -> dict[str, Any]:
    """A step's config with every expression evaluated; secrets and lambdas stay deferred."""
    return {
        key: evaluator.evaluate(expr, env, defer=("secrets",)) for key, expr in config.items()
    }


def payload_error(payload: Mapping[str, Any]) -> str | None:
    """Why ``payload`` cannot be sent to a worker, or ``None`` if it can."""
    try:
        size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        return f"the step's input is not JSON: {exc}"
    if size > MAX_PAYLOAD_BYTES:
        return f"the step's input is {size} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES} (1 MiB)"
    return None
