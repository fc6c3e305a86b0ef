"""The session and throttling policies of the running app, from its settings."""

from __future__ import annotations

from datetime import timedelta

from engine.store.sessions import SessionPolicy
from engine.store.throttle import ThrottlePolicy
from web.api.context import services


def session_policy() -> SessionPolicy:
    """Idle timeout and lifetime of dashboard sessions (``FLOW_SESSION_IDLE``, ``FLOW_SESSION_LIFETIME``)."""
    settings = services().settings
    return SessionPolicy(idle=timedelta(seconds=settings.session_idle_seconds),
                         lifetime=timedelta(seconds=settings.session_lifetime_seconds))


def throttle_policy() -> ThrottlePolicy:
    """5 failures per user, 20 per client address, in 15 minutes (OWASP ASVS 2.2.1)."""
    return ThrottlePolicy()
