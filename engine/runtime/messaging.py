"""Kombu plumbing for the coordinator: one connection per role, confirmed publishes, batched results.

No SQL here. ``Publisher.publish_batch`` is the ``publish`` callable that ``Store.relay_outbox``
calls: it returns only once the broker has confirmed every message of the batch (so the relay may
delete the outbox rows), and raises when it cannot, so that the rows stay and are published again
later (a duplicate publish is harmless: the store's compare-and-set drops a second result).

``ResultConsumer.drain`` takes a batch of results off ``flow.results``, hands them to a callback
(the store transaction) and acks them only after the callback returned.

Works with ``amqp://`` (py-amqp; publisher confirms) and ``memory://`` (the embedded default; the
in-memory transport has no confirms: a put into the in-process queue cannot get lost).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Iterable, Protocol, Sequence

import kombu
from kombu.messaging import Consumer, Producer

from dsl.errors import FlowError
from engine.core.contracts import (
    DEAD_LETTER_EXCHANGE,
    RESULT_QUEUE,
    TASK_EXCHANGE,
    MessageError,
    ResultMessage,
)
from engine.runtime.confirms import Confirms, Nacked
from engine.runtime.topology import (
    dead_letter_exchange,
    dead_letter_queue,
    results_queue,
    task_exchange,
    task_queue,
)
from engine.settings import Settings

log = logging.getLogger("flow.messaging")

# Retries of a connection before an operation gives up and raises (the caller backs off and tries
# again later; for the relay, the outbox keeps the rows meanwhile).
CONNECT_RETRIES = 5
# After a lone result (the previous batch had one), how long a batch waits for companions: only
# long enough to take the frames already in the socket.
LONE_RESULT_WAIT = 0.0002


class BrokerError(FlowError, RuntimeError):
    """The broker could not be reached or refused a message after the retries; try again later."""


class OutboxLike(Protocol):
    """What the publisher needs of ``engine.store.OutboxMessage`` (read-only, as its fields are)."""

    @property
    def id(self) -> Any: ...

    @property
    def exchange(self) -> str: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def body(self) -> str: ...

    @property
    def headers(self) -> dict[str, Any]: ...


def _is_amqp(conn: kombu.Connection) -> bool:
    return getattr(conn.transport, "driver_type", "") == "amqp"


class Broker:
    """The broker of one process: its URL, its topology and the connections made from it.

    A coordinator holds two long-lived connections: one to publish (``publisher()``) and one to
    consume results (``result_consumer()``). They are apart because a confirm wait on a connection
    that also consumes would interleave deliveries with confirms, and because RabbitMQ's flow control
    blocks a publishing connection, which must not stall the consumer.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.broker_url
        self.quorum = settings.quorum_queues
        self._publisher: Publisher | None = None

    def connect(self) -> kombu.Connection:
        """A new (lazy) kombu connection to the broker."""
        options: dict[str, Any] = {}
        if self.url.startswith("memory"):
            # The virtual transport polls its queues; the default 1 s poll would add a second of
            # latency to every step of the embedded default.
            options["polling_interval"] = 0.005
        return kombu.Connection(self.url, connect_timeout=5, transport_options=options)

    def ensure_connected(self, conn: kombu.Connection, what: str) -> None:
        """Connect ``conn``, retrying with backoff; raises ``BrokerError`` when retries run out."""

        def errback(exc: BaseException, interval: float) -> None:
            log.warning("%s: broker unreachable (%s); retrying in %.1fs", what, exc, interval)

        try:
            conn.ensure_connection(
                errback=errback, max_retries=CONNECT_RETRIES, interval_start=0.2, interval_step=0.5,
                interval_max=3.0,
            )
        except conn.connection_errors + (OSError,) as exc:
            raise BrokerError(
                f"{what}: cannot connect to the broker at {conn.as_uri()} ({exc}); check BROKER_URL "
                "and that RabbitMQ is running"
            ) from exc

    def declare_topology(self, task_types: Iterable[str]) -> None:
        """Declare the task exchange, one queue per task type, the results and dead-letter queues."""
        with self.connect() as conn:
            self.ensure_connected(conn, "declare topology")
            channel = conn.channel()
            try:
                for entity in self.entities(task_types):
                    entity.bind(channel).declare()
            finally:
                channel.close()

    def entities(self, task_types: Iterable[str]) -> list[Any]:
        quorum = self.quorum
        return [
            task_exchange(),
            dead_letter_exchange(),
            dead_letter_queue(quorum=quorum),
            results_queue(quorum=quorum),
            *(task_queue(t, quorum=quorum) for t in sorted(set(task_types))),
        ]

    def publisher(self) -> "Publisher":
        """The process's publisher (one connection, reused by every batch)."""
        if self._publisher is None:
            self._publisher = Publisher(self)
        return self._publisher

    def result_consumer(self, *, batch_size: int = 500, batch_wait: float = 0.005) -> "ResultConsumer":
        return ResultConsumer(self, batch_size=batch_size, batch_wait=batch_wait)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None


class Publisher:
    """Publishes outbox batches: persistent, confirmed, pipelined, reconnecting.

    On py-amqp the channel is put in confirm mode once and a batch is written in one go; then the
    publisher waits for the broker's acks (which RabbitMQ coalesces with ``multiple``). That costs one
    round trip per batch instead of one per message.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._conn: kombu.Connection | None = None
        self._channel: Any = None
        self._producer: Producer | None = None
        self._confirms: Confirms | None = None  # of the current channel (py-amqp only)
        # Task queues this publisher has declared: a message routed to no queue would be confirmed
        # and dropped by RabbitMQ, so the first message of a new task type declares its queue.
        self._declared: set[str] = set()

    def publish_batch(self, messages: Sequence[OutboxLike]) -> None:
        """Publish ``messages`` and return once the broker has them all.

        Raises ``BrokerError`` when the broker stays unreachable or refuses a message after the
        retries; the caller keeps the messages (the outbox rows) and tries again later.
        """
        if not messages:
            return
        last: BaseException | None = None
        for attempt in range(CONNECT_RETRIES):
            try:
                self._open()
                self._publish_all(messages)
                return
            except BrokerError:
                raise
            except Exception as exc:  # kombu/py-amqp raise many unrelated types for a broken link
                if not self._recoverable(exc):
                    raise
                last = exc
                delay = min(0.2 * 2**attempt, 3.0)
                log.warning("publish of %d messages failed (%s); reconnecting in %.1fs", len(messages), exc, delay)
                self._reset()
                time.sleep(delay)
        raise BrokerError(f"could not publish {len(messages)} messages after {CONNECT_RETRIES} tries: {last}")

    def _recoverable(self, exc: BaseException) -> bool:
        conn = self._conn
        errors: tuple[type[BaseException], ...] = (OSError, socket.timeout, Nacked)
        if conn is not None:
            errors += conn.connection_errors + conn.channel_errors
        return isinstance(exc, errors)

    def _open(self) -> None:
        if self._producer is not None:
            return
        conn = self.broker.connect()
        self.broker.ensure_connected(conn, "publisher")
        channel = conn.channel()
        self._confirms = Confirms(channel) if _is_amqp(conn) else None
        self._conn, self._channel = conn, channel
        self._producer = Producer(channel, auto_declare=False)
        self._declared.clear()

    def _publish_all(self, messages: Sequence[OutboxLike]) -> None:
        assert self._producer is not None and self._conn is not None
        confirms = self._confirms
        for message in messages:
            self._declare_for(message)
            self._producer.publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                headers=dict(message.headers or {}),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,  # persistent
                message_id=str(message.id),
                retry=False,  # failures come back here, where the whole batch is republished
            )
            if confirms is not None:
                confirms.sent()
        if confirms is not None:
            confirms.wait(self._conn)

    def _declare_for(self, message: OutboxLike) -> None:
        key = message.routing_key
        if message.exchange != TASK_EXCHANGE or key == RESULT_QUEUE or key in self._declared:
            return
        task_queue(key, quorum=self.broker.quorum).bind(self._channel).declare()
        self._declared.add(key)

    def _reset(self) -> None:
        conn, self._conn, self._channel, self._producer, self._confirms = self._conn, None, None, None, None
        if conn is not None:
            try:
                conn.collect()  # drop the broken socket without a close handshake
            except Exception:  # the connection is already broken; nothing left to release
                pass

    def close(self) -> None:
        conn, self._conn, self._channel, self._producer = self._conn, None, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception as exc:  # closing a dead connection may raise; it is gone either way
                log.debug("publisher close: %s", exc)


ResultHandler = Callable[[list[ResultMessage]], None]


class ResultConsumer:
    """Consumes ``flow.results`` in batches with manual acks and a bounded prefetch."""

    def __init__(self, broker: Broker, *, batch_size: int = 500, batch_wait: float = 0.005) -> None:
        self.broker = broker
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self._conn: kombu.Connection | None = None
        self._consumer: Consumer | None = None
        self._buffer: list[kombu.Message] = []
        self._last_batch = 0  # size of the previous batch (adaptive batch wait, see ``_fill``)

    def _open(self) -> None:
        if self._consumer is not None:
            return
        conn = self.broker.connect()
        self.broker.ensure_connected(conn, "result consumer")
        channel = conn.channel()
        queue = results_queue(quorum=self.broker.quorum)
        # ``on_message`` gets the raw message: kombu does not decode it, so a bad body cannot
        # raise inside the transport; ``drain`` decodes and dead-letters it.
        consumer = Consumer(channel, queues=[queue], on_message=self._on_message, no_ack=False)
        # Prefetch bounds the unacked results this coordinator holds: one batch, so that a
        # second coordinator gets the rest.
        consumer.qos(prefetch_count=self.batch_size)
        consumer.consume()
        self._conn, self._consumer = conn, consumer

    def _on_message(self, message: kombu.Message) -> None:
        self._buffer.append(message)

    def drain(self, handle: ResultHandler, timeout: float) -> int:
        """Wait up to ``timeout`` s for results, take a batch, hand it to ``handle``, ack it.

        A batch is up to ``batch_size`` messages, collected for at most ``batch_wait`` s after the
        first one. If ``handle`` raises, the batch is requeued (not acked) and the error re-raised.
        Connection errors are raised as they are (after dropping the unacked batch, which the
        broker redelivers); call ``reset()`` and retry. Returns the number of messages taken.
        """
        self._open()
        assert self._conn is not None
        deadline = time.monotonic() + timeout
        self._fill(deadline)
        if not self._buffer:
            return 0
        messages, self._buffer = self._buffer, []
        self._last_batch = len(messages)
        results: list[ResultMessage] = []
        good: list[kombu.Message] = []
        for message in messages:
            try:
                results.append(ResultMessage.decode(message.body))
                good.append(message)
            except MessageError as exc:
                self._dead_letter(message, str(exc))
        if results:
            try:
                handle(results)
            except BaseException:
                for message in good:
                    message.requeue()
                raise
            for message in good:
                message.ack()
        return len(messages)

    def _fill(self, until: float) -> None:
        assert self._conn is not None
        # Adaptive: a batch waits ``batch_wait`` for companions only when the previous one had
        # some (results are coming in together); a lone result (a chain stepping while nothing
        # else runs) takes only what already arrived, instead of adding ``batch_wait`` to every
        # step's latency. Under load, results pile up while a batch is applied anyway.
        wait = self.batch_wait if self._last_batch > 1 else LONE_RESULT_WAIT
        while len(self._buffer) < self.batch_size:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            try:
                self._conn.drain_events(timeout=remaining)
            except socket.timeout:
                return
            if self._buffer and until - time.monotonic() > wait:
                # The first message arrived: wait only ``wait`` more for companions.
                until = time.monotonic() + wait

    def _dead_letter(self, message: kombu.Message, reason: str) -> None:
        """Move an undecodable result to ``flow.dead`` (it can never be applied) and ack it."""
        log.error("undecodable result dead-lettered: %s", reason)
        assert self._conn is not None
        producer = Producer(self._conn.default_channel, auto_declare=False)
        body = message.body
        producer.publish(
            body if isinstance(body, (bytes, str)) else str(body),
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=RESULT_QUEUE,
            headers={"x-flow-reason": reason[:500], "x-flow-source": RESULT_QUEUE},
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            delivery_mode=2,
        )
        message.ack()

    def reset(self) -> None:
        """Drop the connection (after an error); the next ``drain`` reconnects."""
        conn, self._conn, self._consumer, self._buffer = self._conn, None, None, []
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # already broken
                pass

    def close(self) -> None:
        conn, self._conn, self._consumer = self._conn, None, None
        if self._buffer:
            # Unacked messages go back to the queue when the channel closes; nothing to do.
            self._buffer = []
        if conn is not None:
            try:
                conn.release()
            except Exception as exc:  # closing a dead connection may raise; it is gone either way
                log.debug("result consumer close: %s", exc)


def connection_errors(broker: Broker) -> tuple[type[BaseException], ...]:
    """The exception types that mean "the broker link broke" for ``broker``'s transport."""
    conn = broker.connect()
    return tuple(conn.connection_errors) + tuple(conn.channel_errors) + (OSError, BrokerError)
