"""The worker process: consume task queues, run handlers in a thread pool, publish results, ack.

One thread owns the kombu connection (channels are not thread-safe): it receives messages, publishes
``started``, hands the work to a bounded pool, and between ``drain_events`` calls publishes the
finished results (persistent, with publisher confirms) and only then acks the task. So a task is
acked only once its result is safely with the broker; a crash in between means a redelivery, which
the coordinator's compare-and-set transitions make harmless (at-least-once execution).

The coordinator knows what the worker holds: a delivery held a quarter of the lease without
starting is reported ``received`` (a delivery lease: the coordinator dispatches it again
if it does not start within ``FLOW_LEASE_SECONDS``), a task running longer than ``STARTED_AFTER``
is reported ``started``, and every ``lease / 4`` seconds each running task sends a ``heartbeat``
that renews its lease. So a stalled worker loses its tasks within the lease, and a step may run
longer than the lease while its worker lives. A worker holds no more deliveries than its threads
can start soon: the prefetch window follows the steps' duration (``workers/prefetch.py``), capped
by ``FLOW_PREFETCH``.

On connection loss the loop reconnects with a capped backoff. Unacked deliveries of the lost
connection are redelivered by the broker; handlers that were running keep running, and their
results are published on the next connection (the coordinator records them: same fencing token),
so a broker outage does not repeat a step. A redelivered copy of such a task that reaches this
worker is acked without running it again. On stop (SIGTERM/SIGINT or ``stop_event``) it stops
consuming, lets running tasks finish for ``grace_period`` seconds, reports and acks them, and hands
back (requeues) whatever is left.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import socket
import threading
import weakref
import time
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import kombu
from kombu.exceptions import OperationalError
from kombu.message import Message

from engine.core import contracts
from engine.core.contracts import Failure, MessageError, ResultMessage, TaskMessage
from engine.observability import metrics, tracing
from engine.observability.logs import log_context
from engine.runtime import topology
from engine.runtime.confirms import Confirms, Nacked
from engine.settings import Settings
from workers.confirmed_batch import ConfirmedBatch, close_quietly
from workers.handler_api import HandlerError, TaskContext, UnknownTaskType
from workers.payloads import check_json, resolve_payload
from workers.prefetch import PrefetchWindow
from workers.registry import Registry
from workers.task_clock import IDLE_POLL, TaskClock

log = logging.getLogger("flow.worker")

# Reconnect backoff: capped low, so that the worker is back within a second or two of the broker.
BACKOFF_START, BACKOFF_MAX = 0.25, 2.0
DEADLINE_GRACE = 5.0  # a handler past its deadline by this much is reported as timed out
# Header of a redelivered task's copy: how many times it was redelivered (see _count_redelivery).
# A task that carries it is a *suspect*: it runs alone on its worker (see _start_alone), so that a
# worker death while it runs is its own doing, not that of a task that happened to run beside it.
REDELIVERIES_HEADER = "x-flow-redeliveries"
# From this many redeliveries on, a task is a suspect. Not from the first: one fault (a worker
# killed, the broker restarted) redelivers every task the lost connections held, and running each
# of those alone would drain them one by one. A poison task kills its workers again and again, so it
# reaches this count, and then runs alone like any task that died beside it twice.
SUSPECT_AFTER = 2
BUSY_POLL = 0.001  # drain_events timeout while results may be pending (IDLE_POLL when idle)
# While handlers run on a plain TCP connection, the pump sleeps in ``select`` on the broker's socket
# and a pipe that a finishing handler writes to (so it reports at once instead of within BUSY_POLL),
# waking at least this often for heartbeats, deadlines and ``started`` reports.
BUSY_TICK = 0.01
# A task still running after this many seconds reports ``started`` (the coordinator then moves it to
# processing and starts its lease). A task that finishes sooner reports only its result, which the
# store applies from pending (pending -> processing -> final in one write): half the messages and
# half the coordinator's work for short steps, and the lease is irrelevant for them.
STARTED_AFTER = 0.05
# A delivery held ``lease / RECEIVED_AFTER_LEASE_PART`` seconds without starting (waiting for a
# free handler) is reported ``received``: late enough that a worker's normal prefetch wait sends
# nothing (each report is a coordinator write), early enough to bound a stall at 1.25 leases.
RECEIVED_AFTER_LEASE_PART = 4
# The prefetch window is resized at most this often (a basic.qos round trip), when it changed.
PREFETCH_RESIZE_EVERY = 1.0
# How many published results the worker remembers (task id, fencing token), to ack a redelivered
# copy (its ack or its delivery was lost with a connection) without running it again.
REMEMBERED_RESULTS = 10_000


@dataclass
class _Start:
    """Set by the pool thread when the handler starts (``at``, wall time)."""

    at: float | None = None


@dataclass
class _InFlight:
    # None once the connection it came on was lost (the broker redelivers it; the result is still
    # published, and a redelivered copy that reaches this worker takes its place).
    message: Message | None
    task: TaskMessage
    started_at: float  # when it was submitted (wall time)
    deadline: float | None
    future: "Future[ResultMessage | None]"
    reported: bool = False  # ``started`` published
    alone: bool = False  # a suspect running alone (see _start_alone)
    start: _Start = field(default_factory=_Start)
    received_at: float | None = None  # monotonic time ``received`` was published
    beat_at: float = 0.0  # monotonic time of the last report that renewed the lease

    @property
    def key(self) -> tuple[str, int]:
        return (self.task.task_id, self.task.fencing_token)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Worker:
    """Consumes the queues of ``task_types`` and runs their handlers; see the module docstring.

    Parameters: ``settings`` (broker URL, prefetch, quorum, secrets, allowlist), ``task_types``
    (queues to consume), ``concurrency`` (handler threads), ``registry`` (default: the built-ins and
    plugins), ``grace_period`` (seconds to finish in-flight work on stop), ``name`` (the AMQP
    connection name, shown by ``rabbitmqctl list_connections``).
    """

    def __init__(
        self,
        settings: Settings,
        task_types: Sequence[str],
        *,
        concurrency: int = 8,
        registry: Registry | None = None,
        grace_period: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or Registry.with_builtins(load_plugins=True)
        unknown = [t for t in task_types if t not in self.registry]
        if unknown:
            raise UnknownTaskType(
                f"no handler for task type(s) {', '.join(unknown)}; known: {', '.join(self.registry.task_types())}"
            )
        if not task_types:
            raise ValueError("a worker needs at least one task type to consume")
        self.task_types = tuple(task_types)
        self.concurrency = max(1, concurrency)
        self.grace_period = grace_period
        self.name = name or f"flow-worker {socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        self.consuming = threading.Event()  # set while consuming; tests wait on it
        self.connections = 0  # how many times a connection was established
        self._done: "queue.SimpleQueue[Future[ResultMessage | None]]" = queue.SimpleQueue()
        # A finished handler writes a byte here (after queueing its future) to wake the pump.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)  # when the worker is collected
        self._inflight: dict[int, _InFlight] = {}  # by id(future)
        # Results published (task id, fencing token) -> None, oldest first: a redelivered copy of
        # one of them is acked, not run again.
        self._published: "OrderedDict[tuple[str, int], None]" = OrderedDict()
        self._clock = TaskClock()  # handler deadlines: the pauses of the process do not count
        # Lease timing: every report renews the lease, so heartbeats come 4 times per lease.
        self._lease = settings.lease_seconds
        self._heartbeat_every = settings.lease_seconds / 4
        self._received_after = settings.lease_seconds / RECEIVED_AFTER_LEASE_PART
        self._received: list[Message] = []  # delivered, not yet handled (connection thread only)
        self._pool: ThreadPoolExecutor | None = None
        self._consumer: kombu.Consumer | None = None
        self._confirms: Confirms | None = None  # of the consuming channel (py-amqp only)
        self._connection_now: kombu.Connection | None = None
        # A suspect waiting for the handlers in flight to finish, then running alone; while it
        # waits or runs, this worker takes nothing else (its consumer is cancelled, deliveries that
        # were already on their way are handed back).
        self._suspect: tuple[Message, TaskMessage] | None = None
        self._suspect_since = 0.0  # wall time it arrived
        self._suspect_received: float | None = None  # monotonic time ``received`` was published
        self._alone = False
        # The watchdog's view of the pump (see _watch_pump): when it last turned (TaskClock time),
        # the connection it pumps, and whether the watchdog cut that connection.
        self._pump_turned = self._clock()
        self._pumped: kombu.Connection | None = None
        self._cut = False
        self._window = PrefetchWindow(self.concurrency, settings.prefetch)
        self._window_applied = 0  # the prefetch count of the current consumer
        self._window_resized = 0.0  # monotonic time of the last basic.qos

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Consume until ``stop_event`` (or ``self.stop_event``) is set, reconnecting on loss."""
        if stop_event is not None:
            self.stop_event = stop_event
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="flow-handler")
        ticker = self._clock.start_ticker(self.stop_event, on_tick=self._watch_pump)
        backoff = BACKOFF_START
        try:
            while not self.stop_event.is_set():
                connection = self._connection()
                try:
                    connection.ensure_connection(max_retries=1)
                    self.connections += 1
                    backoff = BACKOFF_START
                    self._consume(connection)
                except (*connection.connection_errors, *connection.channel_errors, OperationalError, OSError,
                        Nacked) as exc:
                    self.consuming.clear()
                    self._orphan_inflight()
                    log.warning("broker connection lost (%s); reconnecting in %.1fs", exc, backoff)
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                finally:
                    self.consuming.clear()
                    self._pumped = None  # nothing for the watchdog to cut until the next connection
                    close_quietly(connection)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            ticker.join(timeout=1.0)

    def _watch_pump(self) -> None:
        """On the clock's ticker thread: if the pump has not turned for a lease (a handler's
        callback, a confirm wait or a bug blocks it), cut its broker connection. The broker then
        redelivers what this worker held and did not start (no report goes out while the pump is
        stuck, so nothing else would bound those), and the pump reconnects once it is free.
        Measured on the ``TaskClock``: a pause of the whole process is no stall."""
        connection = self._pumped
        stalled = self._clock() - self._pump_turned
        if connection is None or self._cut or stalled <= self._lease:
            return
        self._cut = True
        log.error("the worker's loop has not turned for %.0fs (FLOW_LEASE_SECONDS): cutting its broker "
                  "connection so that the broker delivers its %d unstarted deliveries to other workers",
                  stalled, len(self._received) + (self._suspect is not None))
        sock = self._select_socket_any(connection)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def _orphan_inflight(self) -> None:
        """After a connection loss: unacked deliveries died with the channel and the broker
        redelivers them. Those not started are dropped (a redelivery runs them); running and
        finished handlers are kept without their delivery, and their results are published on the
        next connection, where the coordinator records them (the fencing token still matches)."""
        self._received.clear()
        self._suspect = None
        kept = 0
        for key, entry in list(self._inflight.items()):
            if entry.future.cancel():
                del self._inflight[key]
                continue
            entry.message = None
            kept += 1
            if entry.future.done():
                # Its result may have been taken for a batch that the loss interrupted: queue it
                # again (a second queueing of the same future is skipped).
                self._done.put(entry.future)
        if kept:
            log.warning("connection lost with %d handlers running or finished: their results are "
                        "published once the broker is back", kept)

    def stop(self) -> None:
        """Ask ``run`` to stop gracefully (thread-safe, signal-safe)."""
        self.stop_event.set()

    @property
    def prefetch(self) -> int:
        """Deliveries this worker holds at most now (see ``workers/prefetch.py``). More would wait
        in this worker while another one may be idle, and die with it (all then redelivered)."""
        return self._window.size

    def _resize_window(self) -> None:
        size, now = self._window.size, time.monotonic()
        if size == self._window_applied or self._consumer is None or now - self._window_resized < PREFETCH_RESIZE_EVERY:
            return
        self._consumer.qos(prefetch_count=size)
        self._window_applied, self._window_resized = size, now

    def _connection(self) -> kombu.Connection:
        options: dict[str, Any] = {}
        if self.settings.broker_url.startswith("memory"):
            options["polling_interval"] = 0.001  # the in-memory transport polls; keep latency low
        else:
            options["client_properties"] = {"connection_name": self.name}
        return kombu.Connection(self.settings.broker_url, heartbeat=20, transport_options=options)

    # -- the loop ----------------------------------------------------------------------------

    def _consume(self, connection: kombu.Connection) -> None:
        channel = connection.channel()
        quorum = self.settings.quorum_queues
        entities: tuple[kombu.Exchange | kombu.Queue, ...] = (
            topology.task_exchange(),
            topology.dead_letter_exchange(),
            topology.dead_letter_queue(quorum),
            topology.results_queue(quorum),
            *(topology.task_queue(t, quorum=quorum) for t in self.task_types),
        )
        for entity in entities:
            entity.bind(channel).declare()
        self._producer = kombu.Producer(channel, exchange=topology.task_exchange(), auto_declare=False)
        # A copy handed back and a result published on their own are confirmed before the
        # delivery they stand for is acked (at worst a duplicate, never a loss).
        self._confirms = Confirms(channel) if connection.transport.driver_type == "amqp" else None
        self._connection_now = connection
        self._batch = ConfirmedBatch(connection)
        self._received.clear()
        self._suspect, self._alone = None, False
        consumer = self._consumer = kombu.Consumer(
            channel,
            queues=[topology.task_queue(t, quorum=quorum) for t in self.task_types],
            on_message=self._received.append,
            prefetch_count=self.prefetch,
            no_ack=False,
        )
        # The first measured durations resize the window at once (quick steps: to the cap within
        # milliseconds), later changes at most every PREFETCH_RESIZE_EVERY.
        self._window_applied, self._window_resized = self.prefetch, 0.0
        self._cut, self._pump_turned, self._pumped = False, self._clock(), connection
        with consumer:
            self.consuming.set()
            log.info("worker %s consuming %s", self.name, ", ".join(self.task_types))
            while not self.stop_event.is_set():
                self._pump(connection)
            consumer.cancel()  # no new deliveries from here on
        self.consuming.clear()
        self._drain_for_shutdown(connection)

    def _pump(self, connection: kombu.Connection) -> None:
        """One turn: wait for deliveries a little, then report what finished or timed out."""
        self._pump_turned = self._clock()
        if self._cut:
            raise OSError("the watchdog cut the broker connection of a stalled loop")
        try:
            sock = self._select_socket(connection) if self._inflight else None
            if sock is None:
                connection.drain_events(timeout=BUSY_POLL if self._inflight else IDLE_POLL)
            else:
                ready = select.select([sock.fileno(), self._wake_r], [], [], BUSY_TICK)[0]
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if sock.fileno() in ready:
                    connection.drain_events(timeout=BUSY_POLL)
        except socket.timeout:
            pass
        # Deliveries are handled here, not in the kombu callback: a publish with confirms inside the
        # callback would nest a synchronous AMQP wait inside frame dispatch, which py-amqp deadlocks on.
        # Once stopping, they wait for ``_drain_for_shutdown``, after the consumer is cancelled: handed
        # back here, each copy (and each ack's freed prefetch slot) would bring another delivery, and
        # the worker would circulate its queue instead of stopping.
        while self._received and not self.stop_event.is_set():
            self._on_message(self._received.pop(0))
        connection.heartbeat_check()
        self._publish_finished()
        self._resize_window()
        self._expire_overdue()
        self._start_alone()

    def _drain_for_shutdown(self, connection: kombu.Connection) -> None:
        # Deliveries not yet handled or still queued in the pool have not started: hand them back
        # as copies (a requeue would mark them redelivered, which counts as a worker death). The
        # consumer is cancelled, so no new deliveries come while this runs.
        self._hand_back_received()
        if self._suspect is not None:
            self._hand_back(*self._suspect)
            self._suspect = None
        for key, entry in list(self._inflight.items()):
            if entry.message is not None and entry.future.cancel():
                del self._inflight[key]
                self._hand_back(entry.message, entry.task)
        deadline = time.monotonic() + self.grace_period
        while self._inflight and time.monotonic() < deadline:
            self._pump(connection)
        for entry in self._inflight.values():
            log.warning("handing back task %s: still running after the grace period", entry.task.task_id)
            if entry.message is not None:
                entry.message.requeue()
        self._inflight.clear()
        self._hand_back_received()  # delivered before the cancel took effect, kept by the pumps above

    def _hand_back_received(self) -> None:
        while self._received:
            self._hand_back_raw(self._received.pop(0))

    # -- per message (on the connection thread) --------------------------------------------

    def _on_message(self, message: Message) -> None:
        try:
            task = TaskMessage.decode(message.body)
        except MessageError as exc:
            # Dead-lettered, not requeued: a message we cannot read would loop forever otherwise.
            log.error("rejecting undecodable message to the dead-letter queue: %s", exc)
            message.reject(requeue=False)
            return
        if self._adopt(message, task):
            return
        if message.delivery_info.get("redelivered") and self._count_redelivery(message, task):
            return
        if self._suspect is not None or self._alone:
            # A suspect waits or runs alone here: nothing else may be held or run beside it.
            self._hand_back(message, task)
            return
        if int((message.headers or {}).get(REDELIVERIES_HEADER) or 0) >= SUSPECT_AFTER:
            self._suspect = (message, task)
            self._suspect_since, self._suspect_received = time.time(), None
            if self._consumer is not None:
                self._consumer.cancel()  # no further deliveries while it waits and runs
            self._start_alone()
            return
        self._submit(message, task)

    def _adopt(self, message: Message, task: TaskMessage) -> bool:
        """A redelivered copy of a task whose handler ran here on a lost connection: do not run it
        again. Still running: the copy takes the lost delivery's place (acked with the result).
        Its result already published: ack the copy. True when the copy was handled here."""
        key = (task.task_id, task.fencing_token)
        if key in self._published:
            log.info("task %s: its result was already published after a lost connection; acking "
                     "the redelivered copy without running it again", task.task_id)
            message.ack()
            return True
        for entry in self._inflight.values():
            if entry.message is None and entry.key == key:
                entry.message = message
                return True
        return False

    def _submit(self, message: Message, task: TaskMessage, *, alone: bool = False,
                received_at: float | None = None) -> None:
        if self._cut:
            return  # the delivery died with the connection the watchdog cut: the broker redelivers it
        started = time.time()
        deadline = self._clock() + task.timeout if task.timeout else None
        assert self._pool is not None
        start = _Start()
        entry = _InFlight(message, task, started, deadline, None, alone=alone, start=start,  # type: ignore[arg-type]
                          received_at=received_at, beat_at=time.monotonic())
        entry.future = self._pool.submit(self._execute_observed, task, started, deadline,
                                         dict(message.headers or {}), entry)
        self._inflight[id(entry.future)] = entry
        entry.future.add_done_callback(self._on_done)  # runs on the pool thread: a queue put and a wake

    def _on_done(self, future: "Future[ResultMessage | None]") -> None:
        self._done.put(future)
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the pump wakes anyway) or closed (shutting down)

    @staticmethod
    def _select_socket_any(connection: kombu.Connection) -> socket.socket | None:
        """The broker socket of a py-amqp connection (plain or TLS), else None (in-memory)."""
        if connection.transport.driver_type != "amqp":
            return None
        transport = connection.connection.transport  # py-amqp's; None once the connection closed
        sock: socket.socket | None = transport.sock if transport is not None else None
        return sock

    @classmethod
    def _select_socket(cls, connection: kombu.Connection) -> socket.socket | None:
        """The broker socket, if waiting on it with ``select`` cannot miss a frame: a plain TCP
        py-amqp transport with nothing buffered (it reads exactly the bytes of a frame). Else None
        (the in-memory transport, TLS), and the pump polls with ``drain_events`` as before."""
        sock = cls._select_socket_any(connection)
        if sock is None:
            return None
        transport = connection.connection.transport
        if type(transport).__name__ != "TCPTransport" or transport._read_buffer:
            return None
        return sock

    def _start_alone(self) -> None:
        """Start the waiting suspect once no other handler runs; resume normal intake after it.

        A task redelivered because its worker died (or lost its connection) before acking it
        carries a redelivery count. Only a death *while a suspect runs alone* should count against
        it, since tasks that merely ran beside a poison task die with it too: so a suspect runs
        alone, and nothing else is held meanwhile (deliveries are handed back as copies, which
        keep their count and are not marked redelivered). An innocent task that died beside a
        poison one is therefore counted at most twice (``SUSPECT_AFTER``), then completes alone; the poison task is counted on
        each of its own deliveries, up to ``FLOW_MAX_DELIVERIES``."""
        if self._alone:
            if not any(entry.alone for entry in self._inflight.values()):
                self._alone = False  # it finished (or timed out): take work again
                if self._consumer is not None and not self.stop_event.is_set():
                    self._consumer.consume()
            return
        if self._suspect is None or self._inflight:
            return
        message, task = self._suspect
        self._suspect, self._alone = None, True
        self._submit(message, task, alone=True, received_at=self._suspect_received)

    def _hand_back(self, message: Message, task: TaskMessage | None) -> None:
        """Return a delivery that did not start as a copy (same headers), then ack it: unlike a
        requeue, the copy is not marked redelivered, so it does not count as a worker death."""
        self._producer.publish(
            message.body,
            exchange=topology.task_exchange(),
            routing_key=message.delivery_info.get("routing_key") or (task.task_type if task else ""),
            headers=dict(message.headers or {}),
            content_type=message.content_type or "application/json",
            content_encoding=message.content_encoding or "utf-8",
            delivery_mode=2,
            retry=False,
        )
        self._confirmed()
        message.ack()  # only once the copy is confirmed: at worst a duplicate

    def _hand_back_raw(self, message: Message) -> None:
        try:
            task: TaskMessage | None = TaskMessage.decode(message.body)
        except MessageError:
            message.reject(requeue=False)
            return
        self._hand_back(message, task)

    def _count_redelivery(self, message: Message, task: TaskMessage) -> bool:
        """A redelivered task (its worker died, or lost its connection, before the ack): count it in
        a header carried by a copy of the message, so that a task that kills every worker that runs
        it (a poison task) stops after ``FLOW_MAX_DELIVERIES`` deliveries instead of crashing
        workers forever. Classic queues keep no delivery count; the copy carries it. True when the
        message was handled here (copied or given up), False to run it as usual."""
        headers = dict(message.headers or {})
        count = int(headers.get(REDELIVERIES_HEADER) or 0) + 1
        if count >= self.settings.max_deliveries:
            log.error("task %s (attempt %s) was delivered %d times and its worker died each time: "
                      "reporting it as poison", task.task_id, task.attempt, count + 1)
            failure = Failure(
                "poison",
                f"delivered {count + 1} times; each time the worker died or lost its broker connection "
                "before reporting a result, the last times while it ran alone (FLOW_MAX_DELIVERIES)",
                retryable=False,
            )
            self._publish(self._result(task, time.time(), error=failure))
            message.ack()
            return True
        headers[REDELIVERIES_HEADER] = count
        self._producer.publish(
            message.body,
            exchange=topology.task_exchange(),
            routing_key=message.delivery_info.get("routing_key") or task.task_type,
            headers=headers,
            content_type=message.content_type or "application/json",
            content_encoding=message.content_encoding or "utf-8",
            delivery_mode=2,
            retry=False,
        )
        self._confirmed()
        message.ack()  # only once the copy is confirmed: at worst a duplicate
        return True

    def _publish_finished(self) -> None:
        """Publish the results of every finished task, and the progress reports that are due
        (``received``, ``started``, ``heartbeat``: see the module docstring), in one pipelined
        batch; wait once for the broker's confirms, then ack the finished tasks."""
        finished: dict[int, _InFlight] = {}
        while True:
            try:
                future = self._done.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.get(id(future))
            if entry is None or future.cancelled() or id(future) in finished:
                continue  # abandoned (timed out), or already taken
            result = future.result()
            if result is None:  # held past its delivery lease: dispatched again by now
                log.warning("task %s waited %.0fs for a free handler, past its delivery lease: not "
                            "run here (the coordinator dispatched it again)", entry.task.task_id,
                            time.time() - entry.started_at)
            else:
                self._batch.add(result.encode())
                if entry.start.at is not None:
                    self._window.observe(time.time() - entry.start.at)
            finished[id(future)] = entry
        now, wall = time.monotonic(), time.time()
        for key, entry in self._inflight.items():
            report = None if key in finished else self._report_due(entry, now, wall)
            if report is not None:
                task = entry.task
                self._batch.add(ResultMessage(task.task_id, task.attempt, task.fencing_token, report,
                                              worker=self.name, started_at=entry.start.at).encode())
        if self._suspect is not None and self._suspect_received is None \
                and wall - self._suspect_since >= self._received_after:
            # A suspect waiting for the handlers in flight: held, not started (a delivery lease).
            self._suspect_received = now
            task = self._suspect[1]
            self._batch.add(ResultMessage(task.task_id, task.attempt, task.fencing_token, "received",
                                          worker=self.name).encode())
        self._batch.flush()
        # Only now out of the in-flight table: had the flush failed, the connection loss keeps
        # them (see _orphan_inflight) and their results are published on the next connection.
        for key, entry in finished.items():
            self._inflight.pop(key, None)
            # Remembered before the ack: if the ack is lost with the connection, the broker
            # redelivers the task, and the copy that reaches this worker is acked, not run.
            self._remember_published(entry.key)
            if entry.message is not None:
                entry.message.ack()  # only now: the result is safely with the broker

    def _report_due(self, entry: _InFlight, now: float, wall: float) -> str | None:
        """The progress report ``entry`` is due for at this turn, if any (and mark it sent)."""
        started = entry.start.at
        if started is None:
            if entry.received_at is None and wall - entry.started_at >= self._received_after:
                # Not renewed until it starts: a delivery that cannot start is given up in time.
                entry.received_at = now
                return "received"
            return None
        if not entry.reported:
            if started <= wall - STARTED_AFTER:
                entry.reported, entry.beat_at = True, now
                return "started"
            return None
        if now - entry.beat_at >= self._heartbeat_every:
            entry.beat_at = now
            return "heartbeat"
        return None

    def _remember_published(self, key: tuple[str, int]) -> None:
        self._published[key] = None
        while len(self._published) > REMEMBERED_RESULTS:
            self._published.popitem(last=False)

    def _expire_overdue(self) -> None:
        now = self._clock()
        for key, entry in list(self._inflight.items()):
            if entry.deadline is None or now < entry.deadline + DEADLINE_GRACE:
                continue
            # The handler may have just finished: after a pause of the whole process (SIGSTOP, a
            # VM freeze) the monotonic clock jumped, and this thread may run before the handler's.
            # Declaring a timeout then would make the retry repeat an effect that happened under a
            # new idempotency key: give a finished (or finishing) handler its result instead.
            if entry.future.done() or wait([entry.future], timeout=0.5).done:
                continue
            # Not started yet (queued behind busy handlers): it must never start, or its effect
            # would happen under this attempt's key while the retry does it under the next one.
            entry.future.cancel()
            # Python cannot kill the thread; it keeps its pool slot until the handler returns, and
            # its late result is ignored.
            del self._inflight[key]
            failure = Failure("timeout", f"the handler did not finish within {entry.task.timeout}s", True)
            self._publish(self._result(entry.task, entry.started_at, error=failure))
            if entry.message is not None:
                entry.message.ack()

    def _publish(self, result: ResultMessage) -> None:
        self._producer.publish(
            result.encode(),
            routing_key=contracts.RESULT_QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            retry=False,  # a failure surfaces to run(), which reconnects; the task is redelivered
        )
        self._confirmed()

    def _confirmed(self) -> None:
        """Wait until the broker confirmed the publish just made on the consuming channel."""
        if self._confirms is not None and self._connection_now is not None:
            self._confirms.sent()
            self._confirms.wait(self._connection_now)

    # -- per task (on a pool thread) ----------------------------------------------------------

    def _execute_observed(self, task: TaskMessage, started_at: float, deadline: float | None,
                          headers: dict[str, Any], entry: _InFlight) -> ResultMessage | None:
        """``_execute`` with the task's ids on every log line, an attempt span, and its duration;
        None, without running it, when it waited past its delivery lease (see ``_report_due``)."""
        if entry.received_at is not None and time.monotonic() - entry.received_at > self._lease:
            return None
        entry.start.at = time.time()
        with log_context(run_id=task.run_id, task_id=task.task_id, step=task.step, attempt=task.attempt), \
                tracing.span(f"attempt {task.step or task.task_type}", traceparent=headers.get(tracing.HEADER),
                             attributes={"flow.task_id": task.task_id, "flow.attempt": task.attempt,
                                         "flow.task_type": task.task_type, "flow.run_id": task.run_id}):
            result = self._execute(task, entry.start.at, deadline, received_at=started_at)
        metrics.WORKER_TASK_DURATION.labels(task.task_type, result.status).observe(time.time() - entry.start.at)
        return result

    def _execute(self, task: TaskMessage, started_at: float, deadline: float | None, *,
                 received_at: float | None = None) -> ResultMessage:
        context = TaskContext(
            message=task,
            settings=self.settings,
            payload={},
            secrets=self.settings.secrets,
            deadline=deadline,
            clock=self._clock,
            registry=self.registry,
            raw_payload=task.payload,
        )
        try:
            context.payload = resolve_payload(task.payload, self.settings)
            handler = self.registry.get(task.task_type)
            output = handler(context)
            check_json(output)
            return self._result(task, started_at, output=output, logs=context.logs, received_at=received_at)
        except HandlerError as exc:
            failure = exc.failure
        except UnknownTaskType as exc:
            failure = Failure("invalid_input", str(exc), retryable=False)
        except Exception as exc:  # a bug in a handler must not kill the worker
            failure = Failure("handler", f"{type(exc).__name__}: {exc}", True, traceback=traceback.format_exc())
        failure = Failure(failure.type, context.mask(failure.message), failure.retryable,
                          context.mask(failure.details), context.mask(failure.traceback))
        return self._result(task, started_at, error=failure, logs=context.logs, received_at=received_at)

    def _result(self, task: TaskMessage, started_at: float, *, output: Any = None,
                error: Failure | None = None, logs: list[dict[str, Any]] | None = None,
                received_at: float | None = None) -> ResultMessage:
        return ResultMessage(
            task_id=task.task_id,
            attempt=task.attempt,
            fencing_token=task.fencing_token,
            status="failed" if error else "completed",
            output=None if error else output,
            error=error,
            worker=self.name,
            started_at=started_at,
            finished_at=time.time(),
            logs=tuple(logs or ()),
            received_at=received_at,
        )


def run_worker(
    settings: Settings,
    task_types: Sequence[str],
    concurrency: int = 8,
    stop_event: threading.Event | None = None,
    *,
    grace_period: float = 30.0,
    registry: Registry | None = None,
) -> Worker:
    """Run a worker until stopped; in the main thread SIGTERM/SIGINT stop it gracefully.

    ``registry``: the handlers (default: the built-ins and plugins). Returns the worker after it
    stopped (its in-flight work finished or handed back).
    """
    worker = Worker(settings, task_types, concurrency=concurrency, grace_period=grace_period, registry=registry)
    if stop_event is not None:
        worker.stop_event = stop_event
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _sig, _frame: worker.stop())
    worker.run()
    return worker
