"""The clock handler deadlines run on: the process's own time, which leaves out pauses of the whole
process (SIGSTOP, a VM freeze), so that a resumed worker does not declare a timeout."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("flow.worker")

# The worker's pump waits at most IDLE_POLL seconds for deliveries when idle (drain_events timeout).
IDLE_POLL = 0.5
PAUSE_GAP = 2.0
# The ticker thread turns the clock this often. It does nothing else, so a gap between its turns
# is a pause of the whole process, not a call of the pump that blocked (a reconnect, a confirm
# wait while the broker is away): those must not count as pauses.
TICK = 0.1


class TaskClock:
    """Monotonic seconds that do not count the time the whole process was paused.

    Handler deadlines are instants of this clock. After a SIGSTOP or a VM freeze the monotonic
    clock has jumped; had the pause counted, a handler whose response was waiting in its socket
    would be declared timed out, and the retry would repeat, under a new idempotency key, an
    effect that already happened. A ticker thread (``start_ticker``) turns it every ``TICK`` seconds; a gap of more than
    ``PAUSE_GAP`` between two turns is a pause, and it is taken out.
    """

    def __init__(self) -> None:
        self._paused = 0.0
        self._last_turn = time.monotonic()

    def __call__(self) -> float:
        now = time.monotonic()
        # A handler thread may read the clock after a pause before the loop has turned: count the
        # pause already. (The clock then steps back by up to PAUSE_GAP: deadlines only get later.)
        return now - self._paused - self._pause_in(now - self._last_turn)

    def turn(self) -> float:
        """Called on each loop turn: takes a pause out of the clock; returns its length (or 0)."""
        now = time.monotonic()
        paused = self._pause_in(now - self._last_turn)
        self._paused += paused
        self._last_turn = now
        return paused

    def start_ticker(self, stop_event: threading.Event,
                     on_tick: Callable[[], None] | None = None) -> threading.Thread:
        """Turn the clock every ``TICK`` seconds until ``stop_event`` is set, logging pauses;
        then call ``on_tick`` (a watchdog), whose errors are logged, not raised."""

        def tick() -> None:
            while not stop_event.wait(TICK):
                paused = self.turn()
                if paused:
                    log.warning("this process was paused for %.1fs; that time does not count "
                                "against deadlines", paused)
                if on_tick is not None:
                    try:
                        on_tick()
                    except Exception:  # the ticker must keep the clock turning
                        log.exception("worker watchdog failed")

        self._last_turn = time.monotonic()
        thread = threading.Thread(target=tick, name="flow-task-clock", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _pause_in(gap: float) -> float:
        # Of a gap between two turns, all but one normal turn's worth was a pause.
        return gap - TICK if gap > PAUSE_GAP else 0.0
