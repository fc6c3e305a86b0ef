"""Database notifications for a server process: one thread that ``LISTEN``s (PostgreSQL), and an
in-process stand-in on the embedded default.

The store announces what a server may be waiting for, delivered when the transaction commits:

- ``flow_run_done`` (payload: the run id) when a run reaches a terminal status
  (``engine.store.writes``), for ``GET /api/runs/ID?wait=``;
- ``flow_tokens`` when a token is revoked (``engine.store.auth``), so that a cached token check
  is dropped at once.

``Listener`` keeps one autocommit psycopg2 connection in a daemon thread and calls the callbacks
subscribed to a channel with each payload. While it is not connected (not yet, or the database went
away), ``healthy`` is False and each reconnection calls every ``on_reset`` callback: callers that rely
on notifications (the token cache) stop relying on them, and waiters re-read what they wait for.
On SQLite (one process: ``flow up``), ``LocalBus`` delivers what this process's own transactions
announce, at once (before their commit: a waiter that finds nothing new re-reads shortly after).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("flow.listen")

RUN_DONE_CHANNEL = "flow_run_done"
TOKENS_CHANNEL = "flow_tokens"
CHANNELS = (RUN_DONE_CHANNEL, TOKENS_CHANNEL)
OUTAGE_LOG_INTERVAL = 60.0  # seconds between two log lines about the same outage

Callback = Callable[[str], None]


class _Subscribers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_channel: dict[str, list[Callback]] = {}
        self._resets: list[Callable[[], None]] = []

    def subscribe(self, channel: str, callback: Callback) -> None:
        with self._lock:
            self._by_channel.setdefault(channel, []).append(callback)

    def on_reset(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._resets.append(callback)

    def deliver(self, channel: str, payload: str) -> None:
        with self._lock:
            callbacks = list(self._by_channel.get(channel, ()))
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:  # a subscriber's bug must not stop the others
                log.exception("notification callback for %s failed", channel)

    def reset(self) -> None:
        with self._lock:
            callbacks = list(self._resets)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("notification reset callback failed")


class Listener(_Subscribers):
    """``LISTEN`` on ``CHANNELS`` in a daemon thread (started by ``start``), reconnecting forever."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._started = False
        self._start_lock = threading.Lock()
        self.healthy = False
        self._stop = threading.Event()

    def start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="flow-listener", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import select

        import psycopg2

        conn: Any = None
        last_said: tuple[str, float] = ("", 0.0)  # an outage is logged once a minute, not every second
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self._dsn)
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        for channel in CHANNELS:
                            cur.execute(f"LISTEN {channel}")
                    self.healthy = True
                    if last_said[0]:
                        log.info("notification listener: connected again")
                        last_said = ("", 0.0)
                    self.reset()  # whatever happened while not listening: look again
                if select.select([conn], [], [], 1.0)[0]:
                    conn.poll()
                    while conn.notifies:
                        note = conn.notifies.pop(0)
                        self.deliver(note.channel, note.payload)
            except Exception as exc:
                self.healthy = False
                said = f"{type(exc).__name__}: {str(exc).strip()}"
                if said != last_said[0] or time.monotonic() - last_said[1] >= OUTAGE_LOG_INTERVAL:
                    log.warning("notification listener: %s; reconnecting every second (said again once a "
                                "minute while it lasts)", said)
                    last_said = (said, time.monotonic())
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                self.reset()
                self._stop.wait(1.0)
        self.healthy = False
        if conn is not None:
            conn.close()


class LocalBus(_Subscribers):
    """The embedded default's stand-in: this process's transactions announce directly."""

    healthy = False  # announcements come before the commit: never a reason to skip a read

    def start(self) -> None:
        pass


# The embedded default's bus is per process (the store's modules announce to it).
LOCAL = LocalBus()


def listener_for(engine: Any) -> Listener | LocalBus:
    """A new ``Listener`` on ``engine``'s PostgreSQL database, or the process's ``LocalBus``."""
    if engine.dialect.name != "postgresql":
        return LOCAL
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return Listener(dsn)
