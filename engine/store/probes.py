"""Small reads the JSON API needs that the store does not offer (yet): liveness probes.

No Flask here: ``web`` calls these with the engine objects it was given.
"""

from __future__ import annotations

import time

import kombu
import sqlalchemy as sa


def ping_database(engine: sa.Engine) -> float:
    """Run ``SELECT 1``; return the round trip in milliseconds.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached.
    """
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return (time.perf_counter() - started) * 1000.0


def ping_broker(url: str, timeout: float = 3.0) -> float:
    """Open (and close) a connection to the broker; return the time it took in milliseconds.

    Raises:
        Exception: whatever kombu raises when the broker cannot be reached (several unrelated types).
    """
    started = time.perf_counter()
    connection = kombu.Connection(
        url, connect_timeout=timeout, transport_options={"max_retries": 0}
    )
    with connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
    return (time.perf_counter() - started) * 1000.0
