"""The task API's queue-manager endpoints: task counts by status, and whether Flow is overloaded.

**Overloaded** means either
- the backlog, tasks ``pending`` or ``retrying``, is at least ``FLOW_OVERLOAD_PENDING`` (default
  10,000): workers are not keeping up; or
- among finished tasks (``completed`` + ``failed``, at least ``MIN_FINISHED_SAMPLE`` of them), the
  share that ``failed`` is at least ``FLOW_OVERLOAD_FAILED_RATIO`` (default 0.5): a dependency is down.

The counts come from ``store.counts()``, one grouped query on the indexed ``tasks.status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response

from engine.core.states import TaskStatus
from engine.settings import Settings
from web.api.context import services, store
from web.api.operations import operation
from web.api.render import json_response

bp = Blueprint("queue_manager", __name__, url_prefix="/queue-manager")

MIN_FINISHED_SAMPLE = 20


def _every_status(raw: Mapping[str, Any]) -> dict[str, int]:
    counts = {status.value: 0 for status in TaskStatus}
    counts.update({str(status): int(count) for status, count in raw.items()})
    return counts


def task_counts() -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Tasks per status (every status present, 0 when none), and the same per task type."""
    raw: Mapping[str, Any] = store().counts()
    by_type = {task_type: _every_status(counts) for task_type, counts in raw.get("by_type", {}).items()}
    return _every_status(raw.get("total", {})), by_type


def overload(counts: Mapping[str, int], settings: Settings) -> dict[str, Any]:
    """Whether ``counts`` mean overloaded, with the reasons (pure; see the module docstring)."""
    backlog = counts.get("pending", 0) + counts.get("retrying", 0)
    finished = counts.get("completed", 0) + counts.get("failed", 0)
    ratio = counts.get("failed", 0) / finished if finished else None
    reasons = []
    if backlog >= settings.overload_pending_threshold:
        reasons.append(f"backlog of {backlog} pending or retrying tasks is at least "
                       f"{settings.overload_pending_threshold} (FLOW_OVERLOAD_PENDING)")
    if ratio is not None and finished >= MIN_FINISHED_SAMPLE and ratio >= settings.overload_failed_ratio:
        reasons.append(f"{ratio:.0%} of finished tasks failed, at least "
                       f"{settings.overload_failed_ratio:.0%} (FLOW_OVERLOAD_FAILED_RATIO)")
    return {
        "overloaded": bool(reasons),
        "reasons": reasons,
        "backlog": backlog,
        "failed_ratio": None if ratio is None else round(ratio, 4),
        "thresholds": {
            "pending": settings.overload_pending_threshold,
            "failed_ratio": settings.overload_failed_ratio,
            "min_finished_sample": MIN_FINISHED_SAMPLE,
        },
    }


@bp.get("/status")
@operation("Task counts by status and the overload verdict", tag="queue-manager", role="viewer",
           responses={200: ("Counts and overload", "QueueStatus")})
def status() -> Response:
    counts, by_type = task_counts()
    verdict = overload(counts, services().settings)
    return json_response({
        "counts": counts,
        "by_type": by_type,
        "total": sum(counts.values()),
        "pending": counts["pending"],
        "processing": counts["processing"],
        "failed": counts["failed"],
        **verdict,
    })


@bp.get("/overloaded")
@operation("Whether Flow is overloaded, and why", tag="queue-manager", role="viewer",
           responses={200: ("The verdict", "Overload")},
           description="Overloaded: a backlog (pending + retrying) of at least FLOW_OVERLOAD_PENDING "
                       "tasks, or a failed share of finished tasks of at least FLOW_OVERLOAD_FAILED_RATIO.")
def overloaded() -> Response:
    return json_response(overload(task_counts()[0], services().settings))


@bp.get("/failed-count")
@operation("How many tasks failed for good", tag="queue-manager", role="viewer",
           responses={200: ("The count", "Count")})
def failed_count() -> Response:
    return json_response({"status": "failed", "count": task_counts()[0]["failed"]})


@bp.get("/pending-count")
@operation("How many tasks wait for a worker", tag="queue-manager", role="viewer",
           responses={200: ("The count", "Count")})
def pending_count() -> Response:
    return json_response({"status": "pending", "count": task_counts()[0]["pending"]})
