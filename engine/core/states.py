"""Task and run statuses and the one table of allowed transitions (pure).

Every write of a status in the store is a compare-and-set on the current status, checked against
these tables, so that a redelivered message or a second coordinator cannot apply a transition twice.
"""

from __future__ import annotations

from enum import Enum


class TaskStatus(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    COMPENSATED = "compensated"


class RunStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


T = TaskStatus
R = RunStatus

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.PENDING: frozenset({T.PROCESSING, T.CANCELLED, T.SKIPPED}),
    # processing -> pending: a lease expired or a worker handed the task back on shutdown.
    T.PROCESSING: frozenset({T.COMPLETED, T.FAILED, T.RETRYING, T.PENDING, T.CANCELLED}),
    T.RETRYING: frozenset({T.PENDING, T.CANCELLED}),
    # failed -> pending: an operator retries the task.
    T.FAILED: frozenset({T.PENDING}),
    # completed -> compensated: the step's compensation succeeded.
    T.COMPLETED: frozenset({T.COMPENSATED}),
    T.CANCELLED: frozenset(),
    T.SKIPPED: frozenset(),
    T.COMPENSATED: frozenset(),
}

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.CANCELLED}),
    R.RUNNING: frozenset({R.COMPLETED, R.FAILED, R.CANCELLED, R.COMPENSATING}),
    R.COMPENSATING: frozenset({R.COMPENSATED, R.COMPENSATION_FAILED}),
    # failed -> running: retry from the failed step; failed/cancelled -> compensating: manual saga.
    R.FAILED: frozenset({R.RUNNING, R.COMPENSATING}),
    R.CANCELLED: frozenset({R.COMPENSATING}),
    R.COMPENSATION_FAILED: frozenset({R.COMPENSATING}),
    R.COMPLETED: frozenset({R.COMPENSATING}),
    R.COMPENSATED: frozenset(),
}

TERMINAL_TASK_STATUSES = frozenset(
    {T.COMPLETED, T.FAILED, T.CANCELLED, T.SKIPPED, T.COMPENSATED}
)
TERMINAL_RUN_STATUSES = frozenset(
    {R.COMPLETED, R.FAILED, R.CANCELLED, R.COMPENSATED, R.COMPENSATION_FAILED}
)


def task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The statuses from which a task may move to ``target``."""
    return frozenset(s for s, targets in TASK_TRANSITIONS.items() if target in targets)


def run_sources(target: RunStatus) -> frozenset[RunStatus]:
    """The statuses from which a run may move to ``target``."""
    return frozenset(s for s, targets in RUN_TRANSITIONS.items() if target in targets)


def can_task(current: TaskStatus, target: TaskStatus) -> bool:
    return target in TASK_TRANSITIONS[current]


def can_run(current: RunStatus, target: RunStatus) -> bool:
    return target in RUN_TRANSITIONS[current]
