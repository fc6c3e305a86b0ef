"""The outbox relay: publish committed messages, then delete them.

A message is deleted only after ``publish`` returned, that is after the broker confirmed it; a crash
in between publishes it again on the next pass, which the fencing token and the idempotency key
make harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, select, text

from engine.store.context import OutboxMessage, StoreContext, outbox

# The channel a command notifies (PostgreSQL ``NOTIFY``, delivered at commit) when it put messages
# in the outbox without a coordinator knowing: a coordinator ``LISTEN``s and relays them at once
# instead of at its next poll.
OUTBOX_CHANNEL = "flow_outbox"


def notify_outbox(ctx: StoreContext, conn: Connection) -> None:
    """Wake the coordinators' relays when this transaction commits (PostgreSQL; else a no-op)."""
    if ctx.is_postgres:
        conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))


def _messages(rows: Iterable[Any]) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            id=row["id"],
            exchange=row["exchange"],
            routing_key=row["routing_key"],
            body=row["body"],
            headers=dict(row["headers"] or {}),
        )
        for row in rows
    ]


def publish_ids(ctx: StoreContext, ids: Sequence[int], publish: Callable[[list[OutboxMessage]], None]) -> int:
    """Publish the outbox rows ``ids`` (which a transaction of this process just committed) and
    delete them; the number published. The coordinator calls it right after applying a batch, so
    that the next steps go out without waiting for a relay pass.

    One statement deletes and returns the rows (locking them: a relay skips them, and a row that
    another relay is publishing is waited for and then gone), ``publish`` confirms, then the
    commit. The commit is asynchronous (``synchronous_commit = off``: no WAL flush to wait for):
    if a crash loses it, the rows come back and are published again, which the fencing tokens
    make harmless, exactly as a crash between a relay's publish and its commit. When ``publish``
    raises, the transaction rolls back and the rows stay for the relay.
    """
    if not ids:
        return 0
    with ctx.engine.connect() as conn:
        if ctx.is_postgres:
            # One round trip for both statements (psycopg2 returns the last one's rows).
            rows = conn.execute(
                text("SET LOCAL synchronous_commit TO OFF; "
                     "DELETE FROM outbox WHERE id = ANY(:ids) RETURNING *").columns(*outbox.c),
                {"ids": list(ids)},
            ).mappings().all()
        else:
            rows = conn.execute(
                delete(outbox).where(outbox.c.id.in_(list(ids))).returning(*outbox.c)
            ).mappings().all()
        messages = sorted(_messages(rows), key=lambda m: m.id)
        if not messages:
            conn.rollback()
            return 0
        publish(messages)  # raises: closing the connection rolls back, the rows stay
        conn.commit()
    return len(messages)


def relay_outbox(
    ctx: StoreContext, publish: Callable[[list[OutboxMessage]], None], limit: int = 500
) -> int:
    """Publish up to ``limit`` outbox messages in order; the number published.

    ``publish`` must return only once the broker has confirmed every message, or raise; when it
    raises, the transaction rolls back, the rows stay, and the exception propagates.
    """
    # Committed only when something was published: an idle relay polls without writing.
    with ctx.engine.connect() as conn:
        statement = select(outbox).order_by(outbox.c.id).limit(limit)
        if ctx.is_postgres:
            # Two relays never publish the same rows; a relay never waits for another.
            statement = statement.with_for_update(skip_locked=True)
        messages = _messages(conn.execute(statement).mappings())
        if not messages:
            conn.rollback()
            return 0
        publish(messages)  # raises: closing the connection rolls back, the rows stay
        if ctx.is_postgres:
            # Losing this delete in a crash only publishes the rows again (see ``publish_ids``).
            conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
        conn.execute(delete(outbox).where(outbox.c.id.in_([m.id for m in messages])))
        conn.commit()
    return len(messages)
