"""The clock handler deadlines run on: the process's own time, which leaves out pauses of the whole
process (SIGSTOP, a VM freeze), so that a resumed worker does not declare a timeout."""

from __future__ import annotations

import time

# The pump turns at least every IDLE_POLL seconds (drain_events timeout when idle); a longer gap
# means the whole process was paused.
IDLE_POLL = 0.5
PAUSE_GAP = 2.0


class TaskClock:
    """Monotonic seconds that do not count the time the whole process was paused.

    Handler deadlines are instants of this clock. After a SIGSTOP or a VM freeze the monotonic
    clock has jumped; had the pause counted, a handler whose response was waiting in its socket
    would be declared timed out, and the retry would repeat, under a new idempotency key, an
    effect that already happened. The worker's loop turns at least every ``IDLE_POLL`` seconds, so
    a gap of more than ``PAUSE_GAP`` between two turns is a pause, and it is taken out.
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

    @staticmethod
    def _pause_in(gap: float) -> float:
        # Of a gap between two turns, all but one normal turn's worth was a pause.
        return gap - IDLE_POLL if gap > PAUSE_GAP else 0.0
