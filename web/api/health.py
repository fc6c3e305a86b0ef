"""``GET /api/health``: the database and the broker, each checked with its latency."""

from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Blueprint, Response

from engine.store.probes import ping_broker, ping_database
from web.api.context import services
from web.api.operations import operation
from web.api.render import json_response

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


def _check(name: str, probe: Callable[[], float]) -> dict[str, Any]:
    try:
        return {"status": "up", "latency_ms": round(probe(), 2)}
    except Exception as exc:  # any failure to reach the service means "down", whatever its type
        log.warning("health: %s is down: %s", name, type(exc).__name__)
        return {"status": "down", "latency_ms": None, "error": type(exc).__name__}


@bp.get("/health")
@operation(
    "Health of the API, the database and the broker",
    tag="health",
    role="public",
    responses={200: ("Everything is up", "Health"), 503: ("The database or the broker is down", "Health")},
    description="Runs `SELECT 1` on the database and opens a broker connection; each check reports "
                "its latency in milliseconds. Open to all, even when reads need a token.",
)
def health() -> Response:
    flow = services()
    checks = {
        "database": _check("database", lambda: ping_database(flow.db)),
        "broker": _check("broker", lambda: ping_broker(flow.settings.broker_url)),
    }
    down = [name for name, check in checks.items() if check["status"] != "up"]
    body: dict[str, Any] = {"status": "down" if down else "ok", "checks": checks}
    if down:
        body["error"] = {"code": "unavailable", "message": f"Down: {', '.join(down)}.", "details": checks}
    return json_response(body, 503 if down else 200)


@bp.get("/ready")
@operation(
    "Readiness: the database is reachable and its schema is at this version's newest migration",
    tag="health",
    role="public",
    responses={200: ("Ready to serve", "Health"), 503: ("Not ready (database down or migrations pending)", "Health")},
    description="For load balancers and orchestrators: 503 until `flow db upgrade` has run. The "
                "broker is not checked here (see `/api/health`): the API accepts work while it is "
                "down, the outbox keeps the messages.",
)
def ready() -> Response:
    from engine.store.db import current_revision, head_revision

    flow = services()
    checks: dict[str, Any] = {"database": _check("database", lambda: ping_database(flow.db))}
    try:
        current, head = current_revision(flow.db), head_revision()
        checks["migrations"] = {"status": "up" if current == head else "down", "current": current, "head": head}
    except Exception as exc:  # the database went away between the two checks
        checks["migrations"] = {"status": "down", "error": type(exc).__name__}
    down = [name for name, check in checks.items() if check["status"] != "up"]
    body: dict[str, Any] = {"status": "down" if down else "ok", "checks": checks}
    if down:
        body["error"] = {"code": "unavailable", "message": f"Not ready: {', '.join(down)}.", "details": checks}
    return json_response(body, 503 if down else 200)
