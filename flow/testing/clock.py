"""The virtual clock of a workflow test: time moves only when the simulation moves it."""

from __future__ import annotations

from datetime import datetime, timezone

# Where a test's time starts unless it says otherwise (`at "..."`): a fixed instant, so that a
# test gives the same `workflow.scheduled_at`, timestamps and jitter on every machine.
DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()


class VirtualClock:
    """Seconds since the epoch, as ``time.time`` gives them, that never move on their own.

    The store reads it for every timestamp it writes and every timer it compares; the simulation
    jumps it to the next due timer when nothing else can happen, so `sleep 2d`, retry delays and
    approval timeouts cost no wall time.
    """

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._now = float(start)
        self.start = float(start)

    def __call__(self) -> float:
        return self._now

    def advance_to(self, instant: float) -> None:
        """Move to ``instant``; never backwards (timers already fired stay fired)."""
        self._now = max(self._now, float(instant))

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the start."""
        return self._now - self.start
