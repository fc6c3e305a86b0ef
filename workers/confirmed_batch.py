"""Results published as one batch with publisher confirms, and a connection closed without noise."""

from __future__ import annotations

import logging
import socket
import time

import kombu

from engine.core import contracts
from engine.runtime import topology

log = logging.getLogger("flow.worker")


class ConfirmedBatch:
    """Results published on their own channel, pipelined: ``add`` writes nothing yet; ``flush``
    publishes the batch (persistent) and returns once the broker confirmed all of it (one wait for
    the batch instead of one round trip per message), or raises (the connection is then dropped
    and the unacked tasks are redelivered)."""

    def __init__(self, connection: kombu.Connection) -> None:
        self._connection = connection
        self._bodies: list[str] = []
        channel = connection.channel()
        raw = getattr(channel, "_basic_publish", None)
        self._confirms = raw is not None and hasattr(channel, "confirm_select")
        if self._confirms:
            # The connection confirms each publish synchronously (``confirm_publish``); this
            # channel waits for a whole batch instead.
            channel.basic_publish = raw
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.confirm_select()
        self._producer = kombu.Producer(channel, exchange=topology.task_exchange(), auto_declare=False)
        self._sent = 0  # delivery tags of the channel count its publishes from 1
        self._unconfirmed: set[int] = set()
        self._nacked = False

    def add(self, body: str) -> None:
        self._bodies.append(body)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed.difference_update([t for t in self._unconfirmed if t <= delivery_tag])
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_ack(delivery_tag, multiple)

    def flush(self) -> None:
        if not self._bodies:
            return
        bodies, self._bodies = self._bodies, []
        for body in bodies:
            if self._confirms:
                # Counted before the publish: its confirm may be read while the next one is written.
                self._sent += 1
                self._unconfirmed.add(self._sent)
            self._producer.publish(
                body,
                routing_key=contracts.RESULT_QUEUE,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                retry=False,
            )
        if not self._confirms:
            return
        deadline = time.monotonic() + 30.0
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OSError("no publisher confirm from the broker within 30s")
            try:
                self._connection.drain_events(timeout=remaining)
            except socket.timeout:
                pass
        if self._nacked:
            raise OSError("the broker refused a result (nack); reconnecting")


def close_quietly(connection: kombu.Connection) -> None:
    try:
        connection.release()
    except Exception:  # closing a broken connection may raise anything; it is gone either way
        pass
