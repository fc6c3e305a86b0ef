"""The planner's inputs (a read-only view of a run) and outputs (actions the store applies).

Kept apart from ``planner.py`` so that the store and the coordinator depend on these small value
types, not on the DAG walk itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from dsl.spec import Retry
from engine.core.states import RunStatus, TaskStatus

STEP = "step"
COMPENSATION = "compensation"
ON_FAILURE = "on_failure"
STANDALONE = "standalone"
TASK_KINDS = (STEP, COMPENSATION, ON_FAILURE, STANDALONE)


@dataclass(frozen=True)
class TaskView:
    id: str
    kind: str
    step: str
    item: int | None
    status: TaskStatus
    output: Any = None
    error: dict[str, Any] | None = None
    attempt: int = 1
    finished_seq: int | None = None


@dataclass(frozen=True)
class RunView:
    id: str
    status: RunStatus
    params: dict[str, Any]
    values: dict[str, Any]
    tasks: tuple[TaskView, ...] = ()
    workflow_name: str = ""
    scheduled_at: str | None = None
    timed_out: bool = False
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Dispatch:
    kind: str
    step: str
    item: int | None
    task_type: str
    payload: dict[str, Any]
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None


@dataclass(frozen=True)
class Record:
    kind: str
    step: str
    item: int | None
    status: TaskStatus
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class MarkCompensated:
    task_id: str


@dataclass(frozen=True)
class SetRunStatus:
    status: RunStatus
    output: Any = None
    error: dict[str, Any] | None = None


Action = Union[Dispatch, Record, MarkCompensated, SetRunStatus]
