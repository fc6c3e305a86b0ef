"""The overview: health, queue depths (broker and database), counts, the last hour, latest failures."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app

from engine.store import dashboard as queries
from engine.store.probes import ping_database
from web.api.context import services
from web.api.queue_manager import overload
from web.dashboard.charts import activity_svg
from web.dashboard.render import inline_svg, page

bp = Blueprint("overview", __name__)

BUILTIN_TASK_TYPES = ("http_request", "data_processing", "compensation", "noop")
BROKER_TTL = 3.0  # seconds a broker reading is reused: one AMQP handshake per poll, not per viewer


def _database() -> dict[str, Any]:
    try:
        return {"status": "up", "latency_ms": round(ping_database(services().db), 2), "error": None}
    except Exception as exc:  # any failure to reach the database means "down", whatever its type
        return {"status": "down", "latency_ms": None, "error": type(exc).__name__}


def _broker(task_types: tuple[str, ...]) -> dict[str, Any]:
    """The broker's health and queue depths, read at most every ``BROKER_TTL`` seconds per app."""
    cache = current_app.extensions.setdefault("flow_dashboard_broker", {"lock": threading.Lock()})
    with cache["lock"]:
        hit = cache.get(task_types)
        if hit and time.monotonic() - hit[0] < BROKER_TTL:
            return hit[1]  # type: ignore[no-any-return]
        reading = queries.broker_queues(services().settings.broker_url, task_types)
        cache[task_types] = (time.monotonic(), reading)
        return reading


def overview_context() -> dict[str, Any]:
    flow = services()
    counts = queries.status_counts(flow.db)
    task_types = tuple(sorted(set(BUILTIN_TASK_TYPES) | set(counts["by_type"])))
    broker = _broker(task_types)
    queues = [
        {"task_type": t, "broker": broker["queues"].get(t),
         "db": counts["by_type"].get(t, dict.fromkeys(queries.OPEN_STATUSES, 0))}
        for t in task_types
    ]
    buckets = queries.activity(flow.db)
    return {
        "database": _database(),
        "broker": broker,
        "counts": counts["total"],
        "completed_estimated": counts.get("completed_estimated", False),
        "queues": queues,
        "verdict": overload(counts["total"], flow.settings),
        "chart": inline_svg(activity_svg(buckets)),
        "last_hour": {
            "completed": sum(b["completed"] for b in buckets),
            "failed": sum(b["failed"] for b in buckets),
        },
        "failures": queries.latest_failures(flow.db),
    }


@bp.get("/")
def index() -> Response:
    """The overview page; htmx polls the same URL for the fragment."""
    return page("overview.html", "_overview.html", **overview_context())
