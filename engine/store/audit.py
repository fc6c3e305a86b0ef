"""The audit trail: one row per operator action (``audit_events``).

The web layer decides what is an action and who did it (``web/audit.py``); this module only writes
and reads the rows. Rows are pruned with the rest of the finished work under ``FLOW_RETENTION_DAYS``
(``engine/store/prune.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select

from engine.core.errors import InvalidParams
from engine.store.context import StoreContext, iso
from engine.store.db import read_only
from engine.store.models import AuditEvent

audit_events = cast(Table, AuditEvent.__table__)

OUTCOMES = ("ok", "refused", "failed")
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditRecord:
    """What happened. ``actor`` is a user's or token's name; ``via`` is dashboard, api or cli;
    ``outcome`` is ok, refused (auth, CSRF, throttle) or failed (not possible, e.g. a 409)."""

    actor: str
    via: str
    action: str
    outcome: str
    target: str | None = None
    run_id: str | None = None
    client_address: str | None = None
    status: int | None = None
    detail: str | None = None


def _clip(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None else None


def record(ctx: StoreContext, event: AuditRecord) -> None:
    """Write one audit row, stamped now, in a transaction of its own."""
    with ctx.engine.begin() as conn:
        write(ctx, conn, event)


def write(ctx: StoreContext, conn: Connection, event: AuditRecord) -> None:
    """Write one audit row, stamped now, in ``conn``'s transaction (an action that writes rows of
    its own commits its audit row with them: one commit, and no action without its row)."""
    if event.outcome not in OUTCOMES:
        raise InvalidParams([f"audit outcome {event.outcome!r} is not one of {', '.join(OUTCOMES)}"])
    values = asdict(event)
    values.update(actor=_clip(event.actor, 200), target=_clip(event.target, 200), action=event.action[:64],
                  run_id=_clip(event.run_id, 36), client_address=_clip(event.client_address, 64),
                  detail=_clip(event.detail, 2000))
    conn.execute(audit_events.insert().values(at=ctx.now(), **values))


def list_events(
    ctx: StoreContext,
    *,
    actor: str | None = None,
    action: str | None = None,
    run_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Audit rows, newest first, filtered; ``{"events", "next_cursor"}`` where the cursor is the
    ``before`` of the next page. ``action`` matches a whole action (``runs.cancel``) or, ending in
    ``.``, its area (``runs.``)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidParams([f"limit must be between 1 and {MAX_PAGE}"])
    statement = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit + 1)
    if actor:
        statement = statement.where(audit_events.c.actor == actor)
    if action:
        column = audit_events.c.action
        statement = statement.where(column.startswith(action, autoescape=True) if action.endswith(".")
                                    else column == action)
    if run_id:
        statement = statement.where(audit_events.c.run_id == run_id)
    if since is not None:
        statement = statement.where(audit_events.c.at >= since)
    if until is not None:
        statement = statement.where(audit_events.c.at < until)
    if before is not None:
        statement = statement.where(audit_events.c.id < before)
    with read_only(ctx.engine) as conn:
        rows = conn.execute(statement).mappings().all()
    events = [{**dict(row), "at": iso(row["at"])} for row in rows[:limit]]
    return {"events": events, "next_cursor": events[-1]["id"] if len(rows) > limit else None}
