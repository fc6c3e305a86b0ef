"""``GET /api/runs/ID?wait=30s``: hold the request until the run is terminal or the time is up.

A waiter registers for its run, reads the run document, and sleeps on an event that the store's
notifications set when the run ends (PostgreSQL ``LISTEN flow_run_done``, delivered at commit; the
embedded default's in-process bus); it reads again when woken, and at least every few seconds in
case a notification was lost (a listener reconnecting wakes every waiter). A waiting request holds
one of the server's threads, so waiters are bounded per process (``FLOW_MAX_WAITERS``, default half
the request threads); past the bound the answer is 503 ``too_many_waiters`` with ``Retry-After``,
and the client polls or retries.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import current_app

from engine.store.listen import RUN_DONE_CHANNEL
from web.api.errors import ApiError

MAX_WAIT = 60.0  # seconds; a longer ?wait= is cut to this (the client asks again)
TERMINAL = frozenset({"completed", "failed", "cancelled", "compensated", "compensation_failed"})
# Re-read at least this often although no notification came (one was lost, or the listener is down).
SAFETY_POLL = 5.0
SAFETY_POLL_UNHEALTHY = 0.25
# The embedded default announces a run's end just before its commit: after such a wake-up the run
# may look unfinished for a moment, so read again soon.
SOON = 0.02

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_wait(raw: str) -> float:
    """Seconds of ``?wait=`` (``30s``, ``500ms``, ``1m``, or a number of seconds), at most 60."""
    match = _DURATION.match(raw)
    if match is None:
        raise ApiError(400, "invalid_query", f"wait={raw!r} is not a duration (e.g. 30s, 500ms, 1m).")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return min(value, MAX_WAIT)


class Waiters:
    """The waiting requests of one server process, by run id."""

    def __init__(self, store: Any, limit: int) -> None:
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = {}
        self._count = 0
        self._notifications = store.notifications()
        self._notifications.subscribe(RUN_DONE_CHANNEL, self._done)
        self._notifications.on_reset(self._wake_all)

    def _done(self, run_id: str) -> None:
        with self._lock:
            events = list(self._events.get(run_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [e for group in self._events.values() for e in group]
        for event in events:
            event.set()

    def wait(self, run_id: str, seconds: float, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The run document once terminal, or as it is after ``seconds``."""
        event = threading.Event()
        with self._lock:
            if self._count >= self.limit:
                raise ApiError(503, "too_many_waiters",
                               f"This server already holds {self.limit} waiting requests; poll without "
                               "?wait= or retry shortly.", {"retry_after": 1})
            self._count += 1
            self._events.setdefault(run_id, set()).add(event)
        try:
            deadline = time.monotonic() + seconds
            document = read()
            while document.get("status") not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                poll = SAFETY_POLL if self._notifications.healthy else SAFETY_POLL_UNHEALTHY
                woken = event.wait(min(remaining, poll))
                event.clear()
                document = read()
                if woken and document.get("status") not in TERMINAL:
                    time.sleep(min(SOON, max(0.0, deadline - time.monotonic())))
                    document = read()
            return document
        finally:
            with self._lock:
                self._count -= 1
                group = self._events.get(run_id)
                if group is not None:
                    group.discard(event)
                    if not group:
                        del self._events[run_id]


_SETUP = threading.Lock()


def waiters() -> Waiters:
    """The app's waiters (made on first use, so after a server forks its workers)."""
    found = current_app.extensions.get("flow_waiters")
    if found is None:
        with _SETUP:
            found = current_app.extensions.get("flow_waiters")
            if found is None:
                from web.api.context import services

                limit = int(os.environ.get("FLOW_MAX_WAITERS", "0") or 0) or int(
                    current_app.config.get("FLOW_MAX_WAITERS", 8))
                found = Waiters(services().store, limit)
                current_app.extensions["flow_waiters"] = found
    return found
