"""Publisher confirms on one channel, on kombu's and py-amqp's public API: the one way Flow knows
that the broker has a message (the coordinator's outbox relay, the workers' results and copies).

``Confirms(channel)`` puts the channel in confirm mode and follows the broker's acks and nacks.
Publish as usual, call ``sent()`` after each publish, then ``wait(connection)``: it returns once
the broker confirmed everything sent so far (RabbitMQ coalesces acks with ``multiple``, so a batch
costs one round trip), raises ``socket.timeout`` after ``CONFIRM_TIMEOUT`` and ``Nacked`` when the
broker refused any of them.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from dsl.errors import FlowError

CONFIRM_TIMEOUT = 30.0  # seconds to wait for the broker to confirm a publish


class Nacked(FlowError):
    """The broker refused a message it was sent (it could not store it)."""


class Confirms:
    """The confirm bookkeeping of ``channel`` (a py-amqp channel): delivery tags count its
    publishes from 1 once in confirm mode."""

    def __init__(self, channel: Any) -> None:
        self._last_tag = 0
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.confirm_select()

    def sent(self) -> None:
        """Count one publish (call it right after ``publish``, before the next one)."""
        self._last_tag += 1
        self._unconfirmed.add(self._last_tag)

    @property
    def pending(self) -> int:
        return len(self._unconfirmed)

    def wait(self, connection: Any, timeout: float = CONFIRM_TIMEOUT) -> None:
        """Drain ``connection`` until every publish counted so far is confirmed. Raises
        ``socket.timeout`` after ``timeout`` seconds, ``Nacked`` if the broker refused any."""
        deadline = time.monotonic() + timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout(f"no confirm from the broker within {timeout:.0f}s")
            try:
                connection.drain_events(timeout=remaining)
            except socket.timeout:
                pass
        nacked, self._nacked = self._nacked, 0
        if nacked:
            raise Nacked(f"the broker refused {nacked} message{'s' if nacked != 1 else ''} (nack)")

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed.difference_update([t for t in self._unconfirmed if t <= delivery_tag])
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        refused = [t for t in self._unconfirmed if t <= delivery_tag] if multiple else [delivery_tag]
        self._nacked += sum(1 for t in refused if t in self._unconfirmed)
        self._on_ack(delivery_tag, multiple)
