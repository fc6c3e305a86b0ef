"""Results published as one batch with publisher confirms, and a connection closed without noise."""

from __future__ import annotations

import logging

import kombu

from engine.core import contracts
from engine.runtime import topology
from engine.runtime.confirms import Confirms

log = logging.getLogger("flow.worker")


class ConfirmedBatch:
    """Results published on their own channel, pipelined: ``add`` writes nothing yet; ``flush``
    publishes the batch (persistent) and returns once the broker confirmed all of it (one wait for
    the batch instead of one round trip per message), or raises (the connection is then dropped
    and the unacked tasks are redelivered). Confirms as the coordinator's relay does them
    (``engine.runtime.confirms``); without them (the in-memory transport) a publish is final."""

    def __init__(self, connection: kombu.Connection) -> None:
        self._connection = connection
        self._bodies: list[str] = []
        channel = connection.channel()
        self._confirms = Confirms(channel) if connection.transport.driver_type == "amqp" else None
        self._producer = kombu.Producer(channel, exchange=topology.task_exchange(), auto_declare=False)

    def add(self, body: str) -> None:
        self._bodies.append(body)

    def flush(self) -> None:
        if not self._bodies:
            return
        bodies, self._bodies = self._bodies, []
        for body in bodies:
            self._producer.publish(
                body,
                routing_key=contracts.RESULT_QUEUE,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                retry=False,
            )
            if self._confirms is not None:
                self._confirms.sent()
        if self._confirms is not None:
            self._confirms.wait(self._connection)


def close_quietly(connection: kombu.Connection) -> None:
    try:
        connection.release()
    except Exception:  # closing a broken connection may raise anything; it is gone either way
        pass
