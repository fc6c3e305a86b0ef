"""``GET /metrics``: the Prometheus text of this process, plus the database and broker state.

Open like ``/api/health`` (Prometheus scrapes without a token); it shows counts, never payloads.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response

from engine.observability import metrics

bp = Blueprint("metrics", __name__)

BUILTIN_TASK_TYPES = ("http_request", "data_processing", "compensation", "noop")


@bp.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def init_app(app: Flask) -> None:
    """Mount ``/metrics`` and install the scrape-time collectors over the app's store and broker."""
    flow: Any = app.extensions["flow"]
    store = flow.store

    def task_types() -> list[str]:
        # The queues worth a depth: the built-ins and every type that has tasks (plugins).
        try:
            known = set((store.counts().get("by_type") or {}).keys())
        except Exception:  # the database is down: the built-in queues still have depths
            known = set()
        return sorted(known | set(BUILTIN_TASK_TYPES))

    metrics.install_state_collectors(store.counts, flow.settings.broker_url, task_types)
    app.register_blueprint(bp)
