"""The ``noop`` handler: returns ``payload["output"]`` and does nothing else (for benchmarks)."""

from __future__ import annotations

from typing import Any

from workers.handler_api import TaskContext


def handle(task: TaskContext) -> Any:
    """Return the payload's ``output`` (None when absent)."""
    return task.payload.get("output")
