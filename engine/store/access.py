"""Who may come in and what they did: dashboard sessions, login throttling and the audit trail.

``Store.access`` is one of these, on the store's own context; each method is a thin door to the
module that holds the SQL (``sessions``, ``throttle``, ``audit``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.store import audit, sessions, throttle
from engine.store.audit import AuditRecord
from engine.store.context import StoreContext
from engine.store.sessions import SessionCheck, SessionPolicy
from engine.store.throttle import ThrottlePolicy


class AccessStore:
    """Sessions, throttling and audit rows on ``ctx``'s database."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    # --- sessions -------------------------------------------------------------------------------

    def start_session(self, username: str, client_address: str | None) -> str:
        """A new session's key (for the cookie). Raises NotFound (no such user)."""
        return sessions.start_session(self._ctx, username, client_address)

    def check_session(self, key: str, policy: SessionPolicy) -> SessionCheck:
        return sessions.check_session(self._ctx, key, policy)

    def end_session(self, key: str) -> None:
        sessions.end_session(self._ctx, key)

    def end_user_sessions(self, username: str) -> int:
        """End the user's open sessions; how many. Raises NotFound."""
        return sessions.end_user_sessions(self._ctx, username)

    def list_sessions(self, username: str, policy: SessionPolicy, include_ended: bool = False) -> list[dict[str, Any]]:
        return sessions.list_sessions(self._ctx, username, policy, include_ended)

    # --- throttling -----------------------------------------------------------------------------

    def retry_after(self, policy: ThrottlePolicy, *, username: str | None, client_address: str) -> float | None:
        """Seconds to wait before trying again, or None if an attempt may go ahead now."""
        return throttle.retry_after(self._ctx, policy, username=username, client_address=client_address)

    def record_failure(self, policy: ThrottlePolicy, *, kind: str, username: str | None, client_address: str) -> None:
        throttle.record_failure(self._ctx, policy, kind=kind, username=username, client_address=client_address)

    def clear_failures(self, username: str) -> None:
        throttle.clear_user(self._ctx, username)

    # --- audit ----------------------------------------------------------------------------------

    def record(self, event: AuditRecord) -> None:
        audit.record(self._ctx, event)

    def list_audit(self, *, actor: str | None = None, action: str | None = None, run_id: str | None = None,
                   since: datetime | None = None, until: datetime | None = None, before: int | None = None,
                   limit: int = 100) -> dict[str, Any]:
        """Audit rows, newest first: ``{"events", "next_cursor"}``. Raises InvalidParams (limit)."""
        return audit.list_events(self._ctx, actor=actor, action=action, run_id=run_id, since=since, until=until,
                                 before=before, limit=limit)
