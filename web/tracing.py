"""A tracing span per API and dashboard request, when tracing is on (see ``engine.observability.tracing``).

Kept in ``web`` so that ``engine`` never imports Flask.
"""

from __future__ import annotations

from typing import Any

from engine.observability.tracing import HEADER, enabled, span


def init_app(app: Any) -> None:
    """A span per API request (when tracing is on)."""
    if not enabled():
        return
    from flask import g, request

    def before() -> None:
        manager = span(f"{request.method} {request.url_rule or request.path}",
                       traceparent=request.headers.get(HEADER),
                       attributes={"http.method": request.method, "http.target": request.path})
        g._flow_span = manager
        manager.__enter__()

    def teardown(exc: BaseException | None) -> None:
        current = getattr(g, "_flow_span", None)
        if current is not None:
            g._flow_span = None
            current.__exit__(None, None, None)

    app.before_request(before)
    app.teardown_request(teardown)
