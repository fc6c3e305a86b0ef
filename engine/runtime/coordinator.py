"""The coordinator loop: results in -> one store transaction -> ack -> outbox out; timers.

Several coordinators may run at once: the store serialises them with row locks and compare-and-set
transitions, and the broker spreads results between them (bounded prefetch). A coordinator keeps no
state of its own that matters: killed at any point, another (or its restart) picks up from the
database (outbox rows, due timers) and the broker (unacked results are redelivered).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy import Engine

from engine.core.contracts import ResultMessage
from engine.observability import metrics
from engine.runtime.messaging import Broker, Publisher
from engine.settings import Settings, redact_url
from engine.store.context import BatchOutcome, OutboxMessage

log = logging.getLogger("flow.coordinator")

# Seconds between timer passes (retries due, leases expired, run deadlines). It bounds how late a
# retry fires after its backoff delay; a pass that finds nothing due is three indexed SELECTs.
TIMER_INTERVAL = 0.1
RELAY_LIMIT = 500
# Backoff after a failed pass (an outage): capped low, so that the coordinator is back within a
# couple of seconds of the broker or the database; a pass that fails costs little.
MAX_BACKOFF = 2.0


Publish = Callable[[list[OutboxMessage]], None]
# Called after a batch of results committed, before the messages it created are published: the
# seam where the fault suite makes a coordinator die at the worst moment (tests/faults).
AfterCommit = Callable[[BatchOutcome, Sequence[ResultMessage]], None]


class StoreLike(Protocol):
    """The part of ``engine.store.Store`` the coordinator drives."""

    engine: Engine

    def apply_results(self, messages: Sequence[ResultMessage]) -> BatchOutcome: ...

    def run_timers(self, limit: int = 500) -> BatchOutcome: ...

    def relay_outbox(self, publish: Publish, limit: int = 500) -> int: ...

    def publish_outbox(self, ids: Sequence[int], publish: Publish) -> int: ...


class Coordinator:
    """Drives runs: applies worker results, fires timers and relays the outbox to the broker.

    Parameters:
        store: the ``engine.store.Store`` (all SQL).
        broker: the ``engine.runtime.messaging.Broker`` (all kombu).
        settings: the process settings.
        batch_size: most results applied in one transaction.
        batch_wait: seconds a batch waits for more results after the first one arrived.
        task_types: the task queues declared at start (others are declared on first publish).
        timer_interval: seconds between timer passes.
        after_commit: called after each result batch committed, before its messages go out.
    """

    def __init__(
        self,
        store: StoreLike,
        broker: Broker,
        settings: Settings,
        *,
        batch_size: int = 500,
        batch_wait: float = 0.005,
        task_types: Sequence[str] = (),
        timer_interval: float = TIMER_INTERVAL,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.store = store
        self.timer_interval = timer_interval
        self.broker = broker
        self.settings = settings
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.task_types = tuple(task_types)
        self.applied = 0  # results applied since start (for tests and logs)
        self._fresh: list[int] = []  # outbox rows committed by the last batch, not yet published
        self._after_commit = after_commit

    def run(self, stop_event: threading.Event) -> None:
        """Loop until ``stop_event`` is set, then finish the batch in hand, relay, and return.

        Broker and database outages are logged and retried with backoff; a result is acked only
        after the transaction that applied it committed.
        """
        consumer = self.broker.result_consumer(batch_size=self.batch_size, batch_wait=self.batch_wait)
        publisher = self.broker.publisher()
        backoff = 0.0
        topology_ready = False
        next_timers = 0.0
        log.info("coordinator started (broker %s)", redact_url(self.broker.url))
        waker = self._start_waker(stop_event) is not None
        try:
            while not stop_event.is_set():
                try:
                    if not topology_ready:
                        self.broker.declare_topology(self.task_types)
                        topology_ready = True
                    now = time.monotonic()
                    timers_ran = now >= next_timers
                    if timers_ran:
                        # A full pass means more is due: go again at once (after relaying).
                        outcome = self.store.run_timers(limit=RELAY_LIMIT)
                        busy = outcome.applied >= RELAY_LIMIT
                        next_timers = now if busy else now + self.timer_interval
                    # The relay publishes what no batch of this loop published itself: the
                    # timers' messages, commands' (the API, the CLI: new runs also NOTIFY the
                    # waker thread), and those of a coordinator that died before publishing.
                    # Where there is no waker (SQLite), on every pass; else with the timers.
                    if timers_ran or not waker:
                        self._relay(publisher)
                    wait = max(0.0, min(0.1, next_timers - time.monotonic()))
                    consumer.drain(self._apply, timeout=wait)
                    # The batch's results are acked: publish the next steps it committed now,
                    # instead of at the next relay pass (one more statement, no WAL flush).
                    self._publish_fresh(publisher)
                    backoff = 0.0
                except Exception as exc:  # any outage: log, back off, retry; never crash the loop
                    backoff = min(max(backoff * 2, 0.2), MAX_BACKOFF)
                    log.warning("coordinator pass failed (%s: %s); retrying in %.1fs",
                                type(exc).__name__, exc, backoff)
                    consumer.reset()
                    stop_event.wait(backoff)
            # Graceful stop: the batch in hand was applied and acked by drain; publish what it made.
            try:
                self._relay(publisher)
            except Exception as exc:  # the rows stay in the outbox; the next coordinator sends them
                log.warning("final relay failed (%s); the outbox keeps the messages", exc)
        finally:
            consumer.close()
            publisher.close()
            log.info("coordinator stopped after applying %d results", self.applied)

    def _start_waker(self, stop_event: threading.Event) -> threading.Thread | None:
        """On PostgreSQL, a thread that relays at once when a command (a new run) NOTIFYs
        ``flow_outbox``, so that a run's first step does not wait for this loop's next pass."""
        if self.store.engine.dialect.name != "postgresql":
            return None
        thread = threading.Thread(target=self._wake_relay, args=(self.store.engine, stop_event),
                                  name="flow-outbox-waker", daemon=True)
        thread.start()
        return thread

    def _wake_relay(self, engine: Engine, stop_event: threading.Event) -> None:
        import select

        import psycopg2

        from engine.store.outbox import OUTBOX_CHANNEL

        # Its own publisher connection (channels are not thread-safe); two relays never publish
        # the same rows (SKIP LOCKED), exactly as with two coordinators.
        publisher = Publisher(self.broker)
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = None
        try:
            while not stop_event.is_set():
                try:
                    if conn is None:
                        conn = psycopg2.connect(dsn)
                        conn.autocommit = True
                        conn.cursor().execute(f"LISTEN {OUTBOX_CHANNEL}")
                    if select.select([conn], [], [], 0.5)[0]:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self._relay(publisher)
                except Exception as exc:  # the main loop's relay still polls: only latency is lost
                    log.warning("outbox waker: %s: %s; retrying", type(exc).__name__, exc)
                    if conn is not None:
                        conn.close()
                        conn = None
                    stop_event.wait(1.0)
        finally:
            if conn is not None:
                conn.close()
            publisher.close()

    def _apply(self, results: list[ResultMessage]) -> None:
        outcome = self.store.apply_results(results)
        metrics.observe_batch(results, outcome.applied, outcome.dropped)
        self.applied += len(results)
        self._fresh.extend(outcome.outbox_ids)
        if self._after_commit is not None:
            self._after_commit(outcome, results)

    def _publish_fresh(self, publisher: Publisher) -> None:
        """Publish the outbox rows the last batch committed (and delete them). If this fails, the
        rows stay in the outbox and the relay publishes them."""
        if not self._fresh:
            return
        ids, self._fresh = self._fresh, []
        self.store.publish_outbox(ids, publisher.publish_batch)

    def _relay(self, publisher: Publisher) -> None:
        # A full batch means there may be more; a short one means the outbox is drained (other
        # coordinators may be adding rows meanwhile, which their own relay handles).
        while self.store.relay_outbox(publisher.publish_batch, limit=RELAY_LIMIT) >= RELAY_LIMIT:
            pass



def run_coordinator(settings: Settings, stop_event: threading.Event, *, task_types: Sequence[str] = ()) -> None:
    """Build the store and broker from ``settings`` and run a coordinator until ``stop_event``."""
    from engine.store import Store
    from engine.store.db import make_engine

    # No ``pool_pre_ping`` (a round trip per transaction): a connection that a database restart
    # broke fails its pass, the pool is invalidated, and the loop retries with a new one.
    store = Store(make_engine(settings.database_url, pool_pre_ping=False), lease_seconds=settings.lease_seconds,
                  max_deliveries=settings.max_deliveries)
    broker = Broker(settings)
    try:
        Coordinator(store, broker, settings, task_types=task_types).run(stop_event)
    finally:
        broker.close()
