"""The session cookie: its name and flags, set for real on every response.

Flask's own config keys are set in ``create_app`` (``setdefault`` would not do: Flask already
defines them). ``Secure`` is static in Flask; ``FlowSessionInterface`` also sets it whenever the
request came over HTTPS, as werkzeug sees it after ``ProxyFix`` believed a trusted proxy's
``X-Forwarded-Proto`` (``FLOW_TRUSTED_PROXIES``).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.settings import Settings

COOKIE_NAME = "flow_session"


class FlowSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with ``Secure`` whenever the request is HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def init_app(app: Flask, settings: Settings) -> None:
    """Name and flags of the session cookie, and the trusted proxies."""
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
    )
    app.session_interface = FlowSessionInterface()
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        wsgi: Any = app.wsgi_app
        app.wsgi_app = ProxyFix(wsgi, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
