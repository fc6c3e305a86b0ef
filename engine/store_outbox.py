"""The outbox relay: publish committed messages, then delete them.

A message is deleted only after ``publish`` returned, that is after the broker confirmed it; a crash
in between publishes it again on the next pass, which the fencing token and the idempotency key
make harmless.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, delete, select, text

from engine.store_common import OutboxMessage, StoreContext, outbox


# The channel a command notifies (PostgreSQL ``NOTIFY``, delivered at commit) when it put messages
# in the outbox without a coordinator knowing: a coordinator ``LISTEN``s and relays them at once
# instead of at its next poll.
OUTBOX_CHANNEL = "flow_outbox"


def notify_outbox(ctx: StoreContext, conn: Connection) -> None:
    """Wake the coordinators' relays when this transaction commits (PostgreSQL; else a no-op)."""
    if ctx.is_postgres:
        conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))


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
        messages = [
            OutboxMessage(
                id=row["id"],
                exchange=row["exchange"],
                routing_key=row["routing_key"],
                body=row["body"],
                headers=dict(row["headers"] or {}),
            )
            for row in conn.execute(statement).mappings()
        ]
        if not messages:
            conn.rollback()
            return 0
        publish(messages)  # raises: closing the connection rolls back, the rows stay
        conn.execute(delete(outbox).where(outbox.c.id.in_([m.id for m in messages])))
        conn.commit()
    return len(messages)
